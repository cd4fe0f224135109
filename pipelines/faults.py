"""Test-only hooks: injected failures and a teacher-call log, driven by environment variables.

Environment variables reach every DirectRunner worker process (they inherit them), which is
why they, and not pipeline options, drive these hooks. Unset (production), both are no-ops.

PDISTILL_TEST_FAULTS = JSON {"stage": "read"|"teacher"|"sink"|"write"|"upload"|"publish", "units": [unit names] or "*",
                             "mode": "once"|"always"|"kill", "marker_dir": folder for "once" markers}
                       or a JSON list of such objects
    "once" fails the first attempt for each listed unit (a marker file remembers the attempt,
    across processes and retries); "always" fails every attempt (a unit that can never finish);
    "kill" sends SIGKILL to the calling process at the first matching point (a machine lost: no
    exception handler, no cleanup, no retry in that process).
    Stages: "read" / "teacher" / "sink" before a unit's work there; "upload" after each file of a
    part is copied to the output (its index last, so a kill there leaves a half-copied part);
    "write" inside each file copy, when its bytes are written but not yet renamed into place (a
    kill there leaves a local `<name>.tmp-<hex>` orphan);
    "publish" (unit "root") after the root index.json is written, before manifest.json.
PDISTILL_TEST_TEACHER_LOG = path: every teacher forward appends one JSON line
                            {"pid": caller, "units": [...], "model": {"pid": where the model lives, ...}}.
"""

from __future__ import annotations

import json
import os
import signal


class InjectedFault(RuntimeError):
    """Raised by maybe_fail; never seen outside tests."""


def maybe_fail(stage: str, unit: str) -> None:
    spec = os.environ.get("PDISTILL_TEST_FAULTS")
    if not spec:
        return
    specs = json.loads(spec)
    for spec in specs if isinstance(specs, list) else [specs]:
        _apply(spec, stage, unit)


def _apply(spec: dict, stage: str, unit: str) -> None:
    if spec.get("stage") != stage or (spec.get("units") != "*" and unit not in spec.get("units", [])):
        return
    if spec.get("mode") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if spec.get("mode", "once") == "always":
        raise InjectedFault(f"injected failure at {stage} of unit {unit} (always)")
    marker = os.path.join(spec["marker_dir"], f"{stage}-{unit}")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    raise InjectedFault(f"injected failure at {stage} of unit {unit} (first attempt)")


def log_teacher_call(units: list[str], describe_model=None) -> None:
    path = os.environ.get("PDISTILL_TEST_TEACHER_LOG")
    if not path:
        return
    record = {"pid": os.getpid(), "units": units, "model": describe_model() if describe_model else None}
    with open(path, "a") as f:  # one short O_APPEND write per call: safe across processes
        f.write(json.dumps(record) + "\n")
