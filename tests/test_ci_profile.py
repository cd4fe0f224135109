"""CI's property tests are reproducible: `.ci/run` selects the derandomised hypothesis profile
("ci", registered in conftest.py), which draws the same examples on every run, while a local run
(no HYPOTHESIS_PROFILE, no CI) keeps exploring new random ones (issue 11: a lucky draw once
blocked a merge)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """
import os

from hypothesis import given, strategies as st


@given(st.integers(), st.text())
def test_tiny(n, s):
    with open(os.environ["SEEN_FILE"], "a", encoding="utf-8") as f:
        f.write(repr((n, s)) + "\\n")
"""


def test_ci_run_selects_the_ci_profile(tmp_path):
    """Run `.ci/run` itself with a `make` that only records what it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text('#!/bin/sh\nprintf "%s|%s|%s" "$HYPOTHESIS_PROFILE" "$PWD" "$*" > "$RECORD"\n')
    make.chmod(make.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record"
    env = {k: v for k, v in os.environ.items() if k not in ("HYPOTHESIS_PROFILE", "CI")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", RECORD=str(record))
    subprocess.run(["bash", os.path.join(ROOT, ".ci", "run")], env=env, check=True, timeout=60)
    profile, cwd, args = record.read_text().split("|")
    assert profile == "ci" and os.path.realpath(cwd) == os.path.realpath(ROOT) and args.startswith("test")


def _examples(tmp_path, run: str, profile: str | None) -> list[str]:
    """The examples a tiny property test saw in a fresh pytest process with our conftest loaded."""
    test = tmp_path / "test_tiny.py"
    test.write_text(TINY)
    work = tmp_path / run  # own folder: no shared example database between runs
    work.mkdir()
    seen = work / "seen.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("HYPOTHESIS_PROFILE", "CI")}
    env.update(SEEN_FILE=str(seen), PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    if profile:
        env["HYPOTHESIS_PROFILE"] = profile
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "conftest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(work),
            str(test),
        ],
        cwd=work,
        env=env,
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    lines = seen.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 20  # the property really ran many examples
    return lines


def test_ci_profile_is_derandomised_and_local_default_is_random(tmp_path):
    import conftest  # noqa: F401  (registers the profiles)
    from hypothesis import settings

    ci = settings.get_profile("ci")
    assert ci.derandomize is True and ci.database is None
    assert _examples(tmp_path, "ci-1", "ci") == _examples(tmp_path, "ci-2", "ci")
    assert _examples(tmp_path, "dev-1", None) != _examples(tmp_path, "dev-2", None)
