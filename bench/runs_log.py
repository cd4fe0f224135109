"""A bench's list of student runs, resumable: each finished run is one JSON line in `done_path`,
found again by its id, so an interrupted bench continues where it stopped (`bench.recipes`,
`bench.cross_tokenizer`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def run_all(
    todo: list[dict],
    done_path: Path,
    run_id: Callable[[dict], str],
    run_one: Callable[[dict], dict],
    describe: Callable[[dict], str],
    *,
    tag: str,
    report_only: bool = False,
) -> list[dict]:
    """Each run of ``todo`` in order: reused from ``done_path`` when recorded there, else trained with
    ``run_one`` and recorded (nothing is trained with ``report_only``, which refuses when no run is
    finished); one progress line per run."""
    done = {}
    if done_path.exists():
        for line in done_path.read_text().splitlines():
            rec = json.loads(line)
            done[rec["id"]] = rec
    results = []
    for i, r in enumerate(todo, 1):
        head = f"[{tag}] {i}/{len(todo)} {r['name']} seed {r['seed']}"
        rec = done.get(run_id(r))
        if rec is None and report_only:
            print(f"{head}: not run", flush=True)
            continue
        if rec is None:
            print(f"{head}: training", flush=True)
            rec = run_one(r)
            with open(done_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        print(f"{head}: {describe(rec)}", flush=True)
        results.append(rec)
    if report_only and not results:  # never overwrite an earlier report with an empty one
        raise SystemExit(f"[{tag}] no finished runs in {done_path}: nothing to report (run without --report-only)")
    return results
