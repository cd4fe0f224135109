"""`python -m trainer CONFIG.yaml [overrides]`; also what `composer -n N -m trainer ...` runs per process."""

import sys

from trainer.cli import main

sys.exit(main(sys.argv[1:]))
