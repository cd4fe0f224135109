"""The demo's bookkeeping: finished stages recorded as JSON, and the commands it runs as subprocesses.

`<lake>/stages/<name>.json` holds a stage's results once it finishes; a re-run of the demo reuses
it. A command's output goes to a log file under the lake (the console shows the demo's own lines);
`follow(proc, stop)` runs beside it to show progress read from the files the command writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from pdistill.demo.scale import Scale


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class Stages:
    """`<lake>/stages/<name>.json`: a stage's results, written (atomically) when it finishes."""

    def __init__(self, lake: Path, scale: Scale):
        self.dir = lake / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scale = scale

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str) -> dict | None:
        p = self.path(name)
        if not p.exists():
            return None
        rec = json.loads(p.read_text())
        if rec.get("scale") != asdict(self.scale):
            raise SystemExit(
                f"pdistill demo: {p} was written by a demo of another size ({rec.get('scale', {}).get('name')}); "
                f"use another --lake or remove {p.parent.parent}"
            )
        return rec

    def put(self, name: str, rec: dict) -> dict:
        rec = {**rec, "stage": name, "scale": asdict(self.scale)}
        tmp = self.path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.path(name))
        return rec


def run_stage(stages: Stages, name: str, fn) -> dict:
    """A finished stage's record, or `fn()`'s (timed, then recorded)."""
    rec = stages.get(name)
    if rec is not None:
        say(f"{name}: finished earlier ({rec['seconds']:.1f} s), reused")
        rec["reused"] = True
        return rec
    say(f"{name}: running")
    t0 = time.perf_counter()
    out = fn()
    out["seconds"] = time.perf_counter() - t0
    rec = stages.put(name, out)
    say(f"{name}: done in {rec['seconds']:.1f} s")
    rec["reused"] = False
    return rec


def child_env(threads: int | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    return env


def pdistill_cmd() -> list[str]:
    return [sys.executable, "-m", "pdistill.cli"]


def run_logged(cmd: list[str], log_path: Path, env: dict, follow=None) -> None:
    """Run a command with stdout+stderr into `log_path`; `follow(proc, stop)` runs beside it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
        stop = threading.Event()
        th = None
        if follow is not None:
            th = threading.Thread(target=follow, args=(proc, stop), daemon=True)
            th.start()
        rc = proc.wait()
        stop.set()
        if th is not None:
            th.join(timeout=5)
    if rc != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        raise SystemExit(
            f"pdistill demo: command failed (exit {rc}): {' '.join(cmd)}\n  log: {log_path}\n  " + "\n  ".join(tail)
        )
