"""Training metrics as JSON lines: a Composer `LoggerDestination` that programs can read.

Composer's `FileLogger` writes text for people (`[metric][batch=7]: loss/train/total: 6.91`),
and the step in it is Composer's batch counter at the moment of logging: a step's losses are
logged before the counter moves, the callbacks' metrics (alpha, throughput, learning rate) after
it. This destination collects everything logged between two events and writes one object per
finished step and one per evaluation, keyed by the step the numbers describe:

    {"kind": "train", "step": 8, "metrics": {"loss/train/total": 6.91, "distill/alpha": 0.9, ...}}
    {"kind": "eval", "step": 8, "label": "eval", "metrics": {"metrics/eval/LanguageCrossEntropy": 6.95, ...}}

`step` is the number of optimizer steps done (Composer's `timestamp.batch` at BATCH_END and
EVAL_END); metric names are Composer's own. The trainer writes it with the "file" logger, as
`<log_dir>/<run_name>/metrics.jsonl` beside the text log, on global rank 0 (the values are
already reduced over ranks). A resumed run appends; readers keep the last value per step.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

FILENAME = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """A JSON-safe number: tensors and numpy scalars as floats, NaN/inf as null."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return value if math.isfinite(value) else None


class MetricsLog(LoggerDestination):
    """Appends one JSON object per finished step / evaluation to `path` (rank 0 only); `{run_name}`
    in the path is filled in at INIT with Composer's run name (as `FileLogger` does)."""

    def __init__(self, path: str):
        self.path = path
        self._pending: dict[str, Any] = {}
        self._file = None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        del step  # the step is taken at the flushing event (see the module docstring)
        self._pending.update({k: _plain(v) for k, v in metrics.items()})

    def init(self, state: State, logger: Logger) -> None:
        del logger
        self.path = self.path.format(run_name=state.run_name)
        if dist.get_global_rank() == 0:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def _write(self, state: State, kind: str, **extra) -> None:
        if not self._pending:
            return
        rec = {"kind": kind, "step": int(state.timestamp.batch), **extra, "metrics": self._pending}
        self._pending = {}
        if self._file is not None:
            self._file.write(json.dumps(rec, sort_keys=True) + "\n")
            self._file.flush()  # readers follow the run live (the demo's progress bar)

    def batch_end(self, state: State, logger: Logger) -> None:
        self._write(state, "train")

    def eval_end(self, state: State, logger: Logger) -> None:
        self._write(state, "eval", label=state.dataloader_label)

    def fit_end(self, state: State, logger: Logger) -> None:
        self._write(state, "fit")

    def close(self, state: State, logger: Logger) -> None:
        self._write(state, "fit")
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics log, in file order; a torn last line (a killed run) is skipped."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        return []
    return out


def series(records: list[dict], name: str) -> list[tuple[int, float]]:
    """[(step, value)] of one metric, sorted by step; a step logged twice (a resumed run) keeps its last value."""
    by_step: dict[int, float] = {}
    for rec in records:
        value = rec.get("metrics", {}).get(name)
        if value is not None:
            by_step[int(rec["step"])] = float(value)
    return sorted(by_step.items())


def last_step(records: list[dict]) -> int | None:
    """The last finished training step in the log (None before the first)."""
    steps = [int(r["step"]) for r in records if r.get("kind") == "train"]
    return max(steps) if steps else None
