"""What a person sees while the teacher pass runs: tokens done, the rate, an ETA, parts published.

Beam's metrics cannot tell us while the job runs on the local engine: the DirectRunner hands
batch pipelines to the FnApiRunner, whose `run()` executes every stage and only then returns a
`RunnerResult` built from the finished bundles' monitoring infos (apache_beam 2.71,
`fn_api_runner/fn_runner.py`, `run_stages`). And the parts are published behind a GroupByKey,
so on that engine they all appear at the end ("0/8 parts" for minutes).

So on the DirectRunner (any running mode; its workers share this machine) two small branches
of the graph count as the work flows and each worker rewrites one small JSON file in a local
folder, at most every `WRITE_EVERY` seconds and at the end of each bundle:
  teacher  sequences and real tokens that came out of the teacher (after encoding);
  read     work units read whole (their names), and the real tokens they packed.
The launcher sums the files. The total is estimated from the units read so far: their tokens
per input byte times the input bytes to do (a unit's bytes: its byte range, or its rows' share
of a Parquet file; units of one file differ in size, and small ones finish first), exact once
every unit is read. The rate is measured over the last `RATE_WINDOW` seconds, and
ETA = (total - done) / rate. Counts are for display: a retried bundle may count twice. Other
runners (Dataflow shows the same counters live in its console) get the published parts only.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import apache_beam as beam

from pipelines.sources import SourceFile, Unit, parquet_row_groups
from schemas import DatasetDir

log = logging.getLogger("pdistill.pipeline")

WRITE_EVERY = 1.0  # seconds between a worker's progress-file rewrites
RATE_WINDOW = 30.0  # seconds of history behind the rate


class RecordProgress(beam.DoFn):
    """Counts what passes (kind "teacher": encoded samples; "read": units' read summaries) into
    `<folder>/<kind>-<pid>-<id>.json`, one file per DoFn instance, rewritten atomically."""

    def __init__(self, folder: str, kind: str):
        self.folder, self.kind = folder, kind

    def setup(self):
        self.path = os.path.join(self.folder, f"{self.kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json")
        self.counts = {"items": 0, "tokens": 0, "units": []}
        self.written = 0.0

    def process(self, element):
        _, item = element
        if self.kind == "teacher":  # (unit, ("s", index, sample))
            self.counts["tokens"] += int(item[2]["n_tokens"])
        else:  # (unit, ("m", summary))
            self.counts["tokens"] += int(item[1]["tokens"])
            self.counts["units"].append(element[0])
        self.counts["items"] += 1
        if time.monotonic() - self.written >= WRITE_EVERY:
            self._write()
        return []

    def finish_bundle(self):
        self._write()

    def _write(self):
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.counts, f)
        os.replace(tmp, self.path)
        self.written = time.monotonic()


@dataclass(frozen=True)
class Counts:
    sequences: int = 0  # out of the teacher
    tokens: int = 0  # real tokens out of the teacher
    units_read: int = 0
    read_tokens: int = 0  # real tokens packed by the units read whole
    read_weight: float = 0.0  # their input bytes (see `unit_weights`; 1 per unit without weights)


def unit_weights(files: list[SourceFile], units: list[Unit]) -> dict[str, float]:
    """Each unit's input bytes: its byte range, its rows' share of a Parquet file, else the file."""
    sizes = {f.uri: f.size for f in files}
    rows: dict[str, list[int] | None] = {}
    out = {}
    for u in units:
        size = sizes.get(u.uri, 0)
        if u.fmt == "parquet" and u.end >= 0:
            groups = rows.setdefault(u.uri, parquet_row_groups(u.uri))
            out[u.name] = size * sum(groups[u.start : u.end]) / max(sum(groups), 1) if groups else float(size)
        elif u.end >= 0:
            out[u.name] = float(u.end - u.start)
        else:
            out[u.name] = float(size)
    return out


def read_counts(folder: str, weights: dict[str, float] | None = None) -> Counts:
    """The sum of the workers' progress files (a file being replaced is skipped this time)."""
    total = {"teacher": [0, 0], "read": [0, 0]}
    weight = 0.0
    for path in glob.glob(os.path.join(folder, "*.json")):
        kind = os.path.basename(path).split("-", 1)[0]
        try:
            with open(path) as f:
                c = json.load(f)
        except (OSError, ValueError):
            continue
        if kind in total:
            total[kind][0] += int(c["items"])
            total[kind][1] += int(c["tokens"])
            weight += sum(weights.get(n, 0.0) if weights else 1.0 for n in c.get("units", []))
    return Counts(total["teacher"][0], total["teacher"][1], total["read"][0], total["read"][1], weight)


def estimate_total(c: Counts, units_todo: int, weight_todo: float | None = None) -> int | None:
    """Tokens the run will put through the teacher: exact once every unit is read, else the tokens
    per weight of the units read so far times the weight to do (`weight_todo`; the number of
    units when units weigh 1). None before the first unit is read."""
    if c.units_read >= units_todo:
        return max(c.read_tokens, c.tokens)
    if c.units_read == 0 or c.read_weight <= 0:
        return None
    todo = units_todo if weight_todo is None else weight_todo
    return max(round(c.read_tokens / c.read_weight * todo), c.tokens)


def eta_seconds(done: int, total: int | None, rate: float | None) -> float | None:
    """Seconds left at `rate` tokens/s (None when the total or a rate is unknown)."""
    if total is None or not rate or rate <= 0:
        return None
    return max(total - done, 0) / rate


class Rate:
    """Tokens/s over the last `window` seconds of (time, tokens) observations; the time before the
    first tokens (start-up, model load) does not count."""

    def __init__(self, window: float = RATE_WINDOW):
        self.window, self.points = window, deque()

    def add(self, t: float, tokens: int) -> float | None:
        self.points.append((t, tokens))
        while len(self.points) > 2 and (self.points[1][0] <= t - self.window or self.points[1][1] == self.points[0][1]):
            self.points.popleft()
        (t0, n0), (t1, n1) = self.points[0], self.points[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 and n1 > n0 else None


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_line(
    c: Counts | None,
    units_todo: int,
    parts: int,
    rate: float | None,
    elapsed: float,
    final: bool = False,
    weight_todo: float | None = None,
) -> str:
    """One human line, e.g. 'teacher pass: 12,288 / ~52,000 tokens (48 sequences), 310 tokens/s,
    ETA 2m03s; 0/8 parts published'."""
    tail = f"{parts}/{units_todo} parts published"
    if c is None:  # a runner whose workers cannot report here
        return f"teacher pass: {tail} ({_duration(elapsed)})"
    if final:
        avg = c.tokens / elapsed if elapsed > 0 else 0.0
        return (
            f"teacher pass: done, {c.tokens:,} tokens ({c.sequences:,} sequences) in {_duration(elapsed)}, "
            f"{avg:,.0f} tokens/s overall; {tail}"
        )
    total = estimate_total(c, units_todo, weight_todo)
    eta = eta_seconds(c.tokens, total, rate)
    of = "" if total is None else (f" / {total:,}" if c.units_read >= units_todo else f" / ~{total:,}")
    speed = f"{rate:,.0f} tokens/s" if rate else "starting"
    when = f"ETA {_duration(eta)}" if eta is not None else "ETA after the first unit"
    return f"teacher pass: {c.tokens:,}{of} tokens ({c.sequences:,} sequences), {speed}, {when}; {tail}"


class Progress:
    """The progress display for one run: a line rewritten in place on a terminal, a log line every
    `log_every` seconds otherwise, and a final line. `folder` is where workers write their counts
    (only for the DirectRunner, see the module docstring); None shows the published parts only."""

    def __init__(
        self,
        output: str,
        files: list[SourceFile],
        todo: list[Unit],
        local_workers: bool,
        enabled: bool = True,
        every: float = 2.0,
        log_every: float = 15.0,
        stream=None,
    ):
        self.output, self.todo, self.every, self.log_every = output, {u.name for u in todo}, every, log_every
        self.enabled = enabled and bool(todo)
        self.weights = unit_weights(files, todo) if self.enabled and local_workers else {}
        self.stream = stream or sys.stderr
        self.folder = tempfile.mkdtemp(prefix="pdistill-progress-") if self.enabled and local_workers else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pdistill-progress")
        self._t0 = time.monotonic()
        self._rate = Rate()
        self._parts = 0

    def line(self, final: bool = False) -> str:
        now = time.monotonic()
        try:
            self._parts = len(self.todo & DatasetDir(self.output).finished_units())
        except Exception:  # a listing hiccup must not stop the job
            pass
        c = read_counts(self.folder, self.weights) if self.folder else None
        rate = self._rate.add(now, c.tokens) if c is not None else None
        return format_line(
            c, len(self.todo), self._parts, rate, now - self._t0, final=final, weight_todo=sum(self.weights.values())
        )

    def _loop(self):
        tty = getattr(self.stream, "isatty", lambda: False)()
        last_log = time.monotonic()
        while not self._stop.wait(self.every):
            text = self.line()
            if tty:
                print("\r" + text[:160].ljust(160), end="", file=self.stream, flush=True)
            elif time.monotonic() - last_log >= self.log_every:
                log.info("%s", text)
                last_log = time.monotonic()
        if tty:
            print(file=self.stream, flush=True)

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        if not self.enabled:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        if exc_type is None:
            log.info("%s", self.line(final=True))
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
