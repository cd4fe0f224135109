"""`make test` fails on a lint or format error: the Makefile runs `ruff check` and
`ruff format --check` (config: ruff.toml) before the suite, and that config refuses what it
should (an unused import, an unformatted line)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ruff() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "ruff")
    found = here if os.path.exists(here) else shutil.which("ruff")
    if not found:
        pytest.skip("ruff is not installed (make test installs it)")
    return found


def test_make_test_runs_the_linter_and_the_format_check_before_the_suite():
    dry = subprocess.run(
        ["make", "-n", "test", "PYTEST_ARGS="], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    where = {
        key: next((i for i, line in enumerate(dry) if key in line), None)
        for key in ("ruff check .", "ruff format --check .", "-m pytest")
    }
    assert None not in where.values(), dry
    assert where["ruff check ."] < where["-m pytest"] and where["ruff format --check ."] < where["-m pytest"]


@pytest.mark.parametrize(
    "source, command",
    [
        ("import os\n\n\nprint(1)\n", "check"),  # F401: an unused import
        ("x = {  'a':1 }\n", "format"),  # not in the formatter's style
    ],
)
def test_the_repo_config_refuses_bad_code(tmp_path, source, command):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    args = ["check"] if command == "check" else ["format", "--check"]
    run = subprocess.run(
        [ruff(), *args, "--config", os.path.join(ROOT, "ruff.toml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0, run.stdout + run.stderr
    good = tmp_path / "good.py"
    good.write_text("import os\n\nprint(os.sep)\n")
    ok = subprocess.run(
        [ruff(), *args, "--config", os.path.join(ROOT, "ruff.toml"), str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
