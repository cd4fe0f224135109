"""What importing an entry point loads (issue 24): the late imports that say `late: ...` keep their promise.

Each module is imported in a fresh interpreter and its sys.modules inspected: `schemas` imports
neither torch nor Beam; the commands that must start without them (`pdistill inspect`, the CLIs'
argument parsing and config errors) do not load them at import; `pipelines` and `trainer` never
import each other. A positive control (trainer.train does load torch and Composer) shows the
check sees what it looks for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "apache_beam", "transformers", "composer", "streaming", "pyarrow", "matplotlib")


def loaded(module: str) -> set[str]:
    """Top-level package names in sys.modules after `import module` in a fresh interpreter."""
    code = f"import sys, json, {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    ["schemas", "schemas.codecs", "pdistill.cli", "pdistill.inspect", "pdistill.plan", "trainer.cli", "pipelines.cli"],
)
def test_light_entry_points_load_no_heavy_library(module):
    assert not loaded(module) & set(HEAVY)


def test_pipelines_and_trainer_never_import_each_other():
    assert "trainer" not in loaded("pipelines.job")
    assert "pipelines" not in loaded("trainer.train")


def test_the_check_sees_a_heavy_import():
    assert {"torch", "composer"} <= loaded("trainer.train")
