"""`python -m pipelines ...`: the same entry point as `pdistill logits` (for runners that need a module)."""

import sys

from pipelines.cli import main

sys.exit(main())
