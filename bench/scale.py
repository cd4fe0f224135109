"""A scale model of everything that is not the teacher, at 10^3 - 10^5 files, parts and shards.

Steps, each timed in a fresh subprocess (so memory is that step's own: the peak resident set
above what the process held just before the step, read from /proc/self/status):
  * plan:    `expand_inputs` + `plan_units` over N small JSONL files (listing, content
             fingerprints, units), the launcher's work before any worker starts;
  * publish: `pipelines.sink.finalize` over N published parts (finds them, reads each part's
             index and stats, writes the root index.json and manifest.json);
  * open:    the trainer's `DistillDataset` (preflight, hash check of local shards, streaming's
             index) over the N-shard dataset, then its first batch; resident memory of the rank;
  * resume:  a fresh `DistillDataset` loaded with the state of a rank 90 % through the epoch,
             then its first batch.
The growth exponent is the least-squares slope of log(time) against log(N) (1 = linear), for wall
time, CPU time and memory.

Synthetic inputs, no teacher: every part holds one real MDS shard of two samples whose teacher
signal is a stub (well-formed top-k lists from a fixed generator, encoded with the real codec),
written once with the pipeline's own `write_mds` and hard-linked into the N parts (the index
records the same xxh3_64 hash, so the trainer's hash check reads every shard). FOR THIS
BENCHMARK ONLY: the stub says nothing about a teacher's bytes or speed (see `pdistill plan`).

Timings on a shared machine drift with its load: the wall time is printed with the process's CPU
time (less sensitive to other load), and `--repeat R` keeps the fastest of R runs.

Usage: python -m bench.scale [--sizes 1000,10000,100000] [--quick] [--repeat R] [--keep DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

SEQ_LEN, TOP_K, VOCAB, SAMPLES_PER_SHARD, BATCH = 64, 8, 4096, 2, 4
STEPS = ("plan", "publish", "open", "resume")
LINKS_PER_FILE = 50_000
STUB_SETTINGS = "sha256:stub-settings"  # the parts' stats and the manifest must agree (pipelines.sink)


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak is the step's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# -- synthetic inputs ---------------------------------------------------------------------------


def make_lake(root: str, n: int) -> None:
    os.makedirs(root, exist_ok=True)
    line = json.dumps({"text": "A small synthetic document for the scale benchmark. " * 3}) + "\n"
    width = len(str(n))
    for i in range(n):
        sub = os.path.join(root, f"d{i // 1000:04d}")
        if i % 1000 == 0:
            os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:0{width}d}.jsonl"), "w") as f:
            f.write(line)


def stub_samples(unit: str) -> list[dict]:
    """Two samples with a well-formed truncated signal (stub: no teacher)."""
    import numpy as np

    from schemas import build_sample, make_codec
    from schemas.kept import KeptEntries

    rng = np.random.default_rng(0)
    codec = make_codec("compact", {})
    out = []
    for s in range(SAMPLES_PER_SHARD):
        counts = rng.integers(1, TOP_K + 1, SEQ_LEN)
        ids = np.concatenate([np.sort(rng.choice(VOCAB, c, replace=False)) for c in counts]).astype(np.int64)
        logp, tail = [], []
        for c in counts:
            p = rng.dirichlet(np.ones(c + 1))
            logp.append(np.log(p[:c]))
            tail.append(np.log(p[c]))
        tr = KeptEntries(
            counts.astype(np.int64), ids, np.concatenate(logp).astype(np.float32), np.asarray(tail, np.float32)
        )
        out.append(
            build_sample(
                sample_id=s,
                tokens=rng.integers(0, VOCAB, SEQ_LEN),
                n_tokens=SEQ_LEN,
                doc_starts=np.asarray([0], np.uint32),
                truncated=tr,
                codec=codec,
                vocab_size=VOCAB,
                top_k=TOP_K,
                unit=unit,
                next_logp=np.concatenate([-rng.exponential(2.0, SEQ_LEN - 1), [np.nan]]).astype(np.float32),
            )
        )  # the pipeline's sink writes every sample with the teacher_next_logp column
    return out


def make_parts(out: str, n: int) -> list[str]:
    """N published parts under <out>/parts/, one hard-linked shard each; returns the unit names."""
    from pipelines.sink import write_mds
    from schemas import INDEX_NAME, PARTS_DIR
    from schemas.dataset_dir import STATS_NAME

    proto = os.path.join(out, "_proto")
    write_mds(proto, stub_samples("proto"), VOCAB, TOP_K)
    index = json.load(open(os.path.join(proto, INDEX_NAME)))
    shard = index["shards"][0]
    files = [d["basename"] for d in (shard["raw_data"], shard.get("zip_data")) if d]
    units = [f"u{i:06d}-00000" for i in range(n)]
    stats = {
        "documents": SAMPLES_PER_SHARD,
        "packed_documents": SAMPLES_PER_SHARD,
        "dead_letters": 0,
        "sequences": SAMPLES_PER_SHARD,
        "tokens": SAMPLES_PER_SHARD * SEQ_LEN,
        "source": 0,
        "incomplete": [],
        "settings_fingerprint": STUB_SETTINGS,
    }
    idx_text = json.dumps(index)
    for i, u in enumerate(units):
        src = f"{proto}-{i // LINKS_PER_FILE}"
        if i % LINKS_PER_FILE == 0:  # a file takes at most 65,000 hard links on ext4
            shutil.copytree(proto, src)
        d = os.path.join(out, PARTS_DIR, u)
        os.makedirs(d)
        for name in files:
            if os.path.exists(os.path.join(src, name)):
                os.link(os.path.join(src, name), os.path.join(d, name))
        with open(os.path.join(d, STATS_NAME), "w") as f:
            json.dump({"unit": u, **stats}, f)
        with open(os.path.join(d, INDEX_NAME), "w") as f:
            f.write(idx_text)
    return units


def stub_manifest(n: int):
    """The manifest the pipeline's plan would hand to `finalize` (counts are filled in there)."""
    from schemas import Manifest, make_codec
    from schemas.manifest import Codec, Counts, Source, Teacher, Tokenizer, Truncation

    return Manifest(
        teacher=Teacher("stub://no-teacher", "stub"),
        tokenizer=Tokenizer("stub", 0, False),
        vocab_size=VOCAB,
        seq_len=SEQ_LEN,
        truncation=Truncation("top_p_k", 1.0, TOP_K, 1.0),
        codec=Codec("compact", make_codec("compact", {}).params()),
        sources=[Source("stub://lake", "stub")],
        source_fingerprint="stub",
        settings_fingerprint=STUB_SETTINGS,
        counts=Counts(documents=0, packed_documents=0, dead_letters=0, sequences=0, tokens=0, units=n),
    )


# -- one step in its own process ----------------------------------------------------------------


def _dataset(path: str, cache: str):
    from trainer.config import DataConfig
    from trainer.data import DistillDataset

    return DistillDataset(DataConfig.of(path, shuffle=True, num_canonical_nodes=1), batch_size=BATCH, cache_dir=cache)


def _first_batch(ds) -> int:
    it = iter(ds)
    got = [next(it) for _ in range(BATCH)]
    return len(got)


def run_step(step: str, n: int, work: str) -> dict:
    """Set up (untimed), then time the step; returns seconds and the step's peak memory."""
    import gc

    lake, out = os.path.join(work, "lake"), os.path.join(work, "dataset")
    extra: dict = {}
    if step == "plan":
        from pipelines.sources import expand_inputs, plan_units

        gc.collect()
        reset_peak()
        before = rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        units = plan_units(expand_inputs([lake]), 50_000, 64 << 20)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        extra["units"] = len(units)
    elif step == "publish":
        from pipelines.sink import finalize

        units = [u for u in sorted(os.listdir(os.path.join(out, "parts")))]
        gc.collect()
        reset_peak()
        before = rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        finalize([], out, units, stub_manifest(n))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        extra["index_bytes"] = os.path.getsize(os.path.join(out, "index.json"))
    else:
        import numpy as np  # noqa: F401  (imports outside the timed region)
        import streaming  # noqa: F401

        import trainer.data  # noqa: F401

        cache = tempfile.mkdtemp(prefix="scale-cache-", dir=work)
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        gc.collect()
        reset_peak()
        before = rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        ds = _dataset(out, cache)
        if step == "resume":
            at = int(0.9 * ds.num_samples)
            ds.load_state_dict(
                {
                    "epoch": 0,
                    "sample_in_epoch": at,
                    "num_canonical_nodes": 1,
                    "shuffle_seed": ds.shuffle_seed,
                    "initial_physical_nodes": None,
                }
            )
            extra["resume_at_sample"] = at
        t_open = time.perf_counter() - t0
        _first_batch(ds)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        extra.update(open_seconds=t_open, samples=ds.num_samples, shards=len(ds.shards) if hasattr(ds, "shards") else n)
        del ds
    return {
        "step": step,
        "n": n,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "mem_mb": rss_mb("VmHWM") - before,
        "rss_mb": rss_mb("VmHWM"),
        **extra,
    }


def measure(step: str, n: int, work: str, repeat: int = 1) -> dict:
    """The step `repeat` times, each in a fresh process; the fastest run (the least disturbed by
    other load on a shared machine), with the largest memory seen."""
    runs = [measure_once(step, n, work) for _ in range(max(1, repeat))]
    best = min(runs, key=lambda r: r["seconds"])
    return {
        **best,
        "mem_mb": max(r["mem_mb"] for r in runs),
        "rss_mb": max(r["rss_mb"] for r in runs),
        "runs": len(runs),
    }


def measure_once(step: str, n: int, work: str) -> dict:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=path)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--one", step, str(n), work],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench.scale: step {step} at N={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def run(sizes: list[int], keep: str | None = None, log=print, repeat: int = 1) -> dict:
    results: dict = {s: [] for s in STEPS}
    root = keep or tempfile.mkdtemp(prefix="pdistill-scale-")
    try:
        for n in sizes:
            work = os.path.join(root, f"n{n}")
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            t0 = time.perf_counter()
            make_lake(os.path.join(work, "lake"), n)
            make_parts(os.path.join(work, "dataset"), n)
            log(f"N={n}: synthetic lake and {n} parts made in {time.perf_counter() - t0:.1f} s")
            for step in STEPS:
                r = measure(step, n, work, repeat)
                results[step].append(r)
                log(
                    f"  {step:<8} {r['seconds']:8.3f} s wall {r['cpu_seconds']:8.3f} s cpu  +{r['mem_mb']:7.1f} MB "
                    f"(rss {r['rss_mb']:.0f} MB)"
                )
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    def exps(key):
        return {s: slope(sizes, [r[key] for r in results[s]]) for s in STEPS} if len(sizes) > 1 else {}

    return {
        "sizes": sizes,
        "results": results,
        "exponents": exps("seconds"),
        "cpu_exponents": exps("cpu_seconds"),
        "memory_exponents": exps("mem_mb"),
    }


def table(report: dict) -> str:
    sizes, res = report["sizes"], report["results"]
    head = (
        "| step | "
        + " | ".join(f"N = {n:,}: wall / cpu, memory" for n in sizes)
        + " | growth exponent: wall / cpu / memory |"
    )
    lines = [head, "|" + "---|" * (len(sizes) + 2)]
    for s in STEPS:
        cells = [f"{r['seconds']:.3g} s / {r['cpu_seconds']:.3g} s, +{r['mem_mb']:.0f} MB" for r in res[s]]
        if s in report["exponents"]:
            exp = (
                f"{report['exponents'][s]:.2f} / {report['cpu_exponents'][s]:.2f} / {report['memory_exponents'][s]:.2f}"
            )
        else:
            exp = "-"
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {exp} |")
    last = {s: res[s][-1] for s in STEPS}
    lines.append("")
    lines.append(
        f"at N = {sizes[-1]:,}: root index.json {last['publish']['index_bytes'] / 2**20:.1f} MiB; "
        f"trainer rank resident memory {last['open']['rss_mb']:.0f} MB "
        f"(+{last['open']['mem_mb']:.0f} MB for the dataset), time to first batch "
        f"{last['open']['seconds']:.2f} s (open {last['open']['open_seconds']:.2f} s); resume at 90 % "
        f"{last['resume']['seconds']:.2f} s, {last['resume']['rss_mb']:.0f} MB"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N (files, parts, shards)")
    ap.add_argument("--quick", action="store_true", help="small sizes (100,300,1000), for CI")
    ap.add_argument("--keep", help="keep the synthetic inputs under this folder")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--repeat", type=int, default=1, help="runs per step and size; the fastest is kept")
    ap.add_argument("--one", nargs=3, metavar=("STEP", "N", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        step, n, work = args.one
        print(json.dumps(run_step(step, int(n), work)))
        return 0
    sizes = [100, 300, 1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    report = run(sizes, args.keep, repeat=args.repeat)
    print()
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
