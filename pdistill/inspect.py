"""`pdistill inspect DATASET_URI`: is this dataset whole, what does it hold, how faithful is it?

First a verdict: every shard the root index lists is checked against storage (exists, has the
recorded size and hash; `--skip-hash` checks sizes only, for huge datasets), part folders against
the manifest's unit count, and the manifest's counts against the index (`schemas.integrity.verify`)
and against the records stored: each part's stats.json and dead-letter file, and all dead letters
against the manifest (`schemas/dead_letters.py`; `--skip-hash`: only what the listing shows).
Any problem is printed with the file it concerns, and the exit status is 1.
Then statistics from the first samples: kept entries/token, stored teacher bytes/token (shard
bytes on storage), the next-token column's bytes/token (`teacher_next_logp`, uncompressed column
bytes; "none" for a dataset written before it), mean dropped tail mass, the codec KL the codec guarantees (`codec_kl_bound`)
and, where it differs, the one it is designed for (`codec_kl_design`). With `--teacher URI`: re-runs
the teacher on those samples and measures the codec KL (fresh truncation vs what decodes from
storage) and the total KL (full teacher vs stored + tail).

Read-only: samples are read through the trainer's dataset (`trainer.data.DistillDataset`, the one
StreamingDataset) with a temporary cache folder, so the dataset folder is never written to
(streaming would otherwise decompress shards beside it).

Structure for extension: `build_report(args)` returns a dict (insertion-ordered), `print_report`
prints it as text or JSON, and the exit status comes from `report["verdict"]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np

from pdistill.plan import inspect_hook
from schemas import CodecError, DatasetDir, Manifest, fidelity, storage, strict_json, truncate_tensor
from schemas.errors import SchemaError, zstd_errors
from schemas.integrity import Problem, Verification
from schemas.redact import redact_process_output, redact_text, redact_uri
from schemas.sample import NEXT_LOGP_COLUMN, decode_next_logp, decode_sample

WHOLE, NOT_WHOLE = "whole", "NOT WHOLE"


def read_samples(uri: str, cache: str, n: int) -> tuple[list[dict], int]:
    """The first `n` stored samples (undecoded) and the number of samples the index holds, read
    through the trainer's dataset (`trainer.data.DistillDataset`) with `cache` as its cache folder."""
    from trainer.config import DataConfig  # noqa: PLC0415 (late: inspect runs without torch)
    from trainer.data import DistillDataset  # noqa: PLC0415 (late: inspect runs without torch)

    ds = DistillDataset(DataConfig.of(uri, shuffle=False, validate_hash=None), batch_size=1, cache_dir=cache)
    return [ds.raw(i) for i in range(min(n, len(ds)))], len(ds)


def teacher_fidelity(teacher_uri: str, samples: list[dict], manifest: Manifest, codec) -> tuple[float, float]:
    """Mean (codec KL, total KL) over the samples' real positions, from a fresh teacher pass."""
    import torch  # noqa: PLC0415 (late: inspect runs without torch)
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 (late: inspect runs without torch)

    try:
        model = AutoModelForCausalLM.from_pretrained(storage.fetch_dir(teacher_uri), torch_dtype=torch.float32).eval()
    except (OSError, ValueError) as e:  # FileNotFoundError included: a wrong URI is the user's, not a bug
        raise SystemExit(f"pdistill inspect: --teacher {teacher_uri}: cannot load a causal LM ({e})") from None
    codec_kls, total_kls = [], []
    for s in samples:
        n = int(s["n_tokens"])
        ids = torch.as_tensor(np.asarray(s["tokens"][:n], dtype=np.int64))[None]
        with torch.no_grad():
            logits = model(ids).logits[0, :, : manifest.vocab_size]
        fresh = truncate_tensor(logits, manifest.truncation.top_p, manifest.truncation.top_k)
        stored = decode_sample(s, codec).head(n)  # drop padding
        codec_kls.append(fidelity.codec_kl(fresh, stored))
        total_kls.append(fidelity.total_kl(logits.numpy(), stored))
    return float(np.mean(codec_kls)), float(np.mean(total_kls))


def verdict_fields(v: Verification) -> dict:
    return {
        "verdict": WHOLE if v.whole else NOT_WHOLE,
        "problems": [str(p) for p in v.problems],
        "shards_checked": v.shards_checked,
        "shard_check": "size and hash" if v.hashed else "size only (--skip-hash)",
    }


def manifest_fields(m: Manifest) -> dict:
    return {
        "schema_version": m.schema_version,
        "teacher": m.teacher.id,
        "vocab_size": m.vocab_size,
        "seq_len": m.seq_len,
        "truncation": f"{m.truncation.method} p={m.truncation.top_p} k={m.truncation.top_k}",
        "codec": f"{m.codec.name} {m.codec.params}",
        "counts": m.counts.__dict__,
        "counts_reconcile": m.counts.reconciles(),
    }


def sample_fields(uri: str, samples: list[dict], m: Manifest, codec, index: dict) -> dict:
    kept = np.concatenate([np.asarray(s["teacher_counts"]) for s in samples]) if samples else np.zeros(0)
    tails = []
    for s in samples:
        d = decode_sample(s, codec)
        tails.append(np.exp(d.log_tail[d.counts > 0]))
    out = {
        "kept_per_token": fidelity.kept_per_token(kept),
        "stored_bytes_per_token": fidelity.bytes_per_token(DatasetDir(uri).stored_bytes(index), m.counts.tokens),
        "next_logp_bytes_per_token": next_logp_bytes_per_token(samples, m),
        "mean_tail_mass": float(np.concatenate(tails).mean()) if tails else float("nan"),
    }
    out.update(fidelity.storage_report(codec, out["stored_bytes_per_token"], out["kept_per_token"], m.truncation.top_k))
    return out


def next_logp_bytes_per_token(samples: list[dict], m: Manifest) -> float | str:
    """Bytes of the `teacher_next_logp` column per real token over the samples (each decoded, so a
    damaged one is a problem of the verdict); "none" when the dataset has no such column."""
    if m.next_logp is None or not samples:
        return "none" if m.next_logp is None else float("nan")
    for s in samples:
        decode_next_logp(s)
    return sum(len(s[NEXT_LOGP_COLUMN]) for s in samples) / max(1, sum(int(s["n_tokens"]) for s in samples))


# what reading a shard can raise when --skip-hash let a damaged file through
READ_ERRORS = (SchemaError, ValueError, OSError, EOFError)


def build_report(args: argparse.Namespace) -> dict:
    try:
        with storage.access(f"dataset {redact_uri(args.dataset)}"):
            v = DatasetDir(args.dataset).verify(hashes=not args.skip_hash)
    except storage.StoreRefused as e:  # no credentials: a message, not a verdict on the data
        raise SystemExit(f"pdistill inspect: {e}") from None
    report = {"uri": args.dataset, **verdict_fields(v)}
    m = v.manifest
    if m is not None:
        report.update(manifest_fields(m))
    if not v.whole or m is None:
        return report  # statistics of a damaged dataset would describe the damage, not the data
    try:
        codec = DatasetDir(args.dataset).stored_codec(m)
    except CodecError as e:  # e.g. a codec this pdistill does not know: a message, not a verdict on the data
        raise SystemExit(f"pdistill inspect: {args.dataset}: {e}") from None
    with tempfile.TemporaryDirectory(prefix="pdistill-inspect-") as cache:
        try:
            samples, in_index = read_samples(args.dataset, cache, args.samples)
            report["sequences_in_index"] = in_index
            report.update(sample_fields(args.dataset, samples, m, codec, v.index))
        except READ_ERRORS + zstd_errors() as e:
            report["problems"].append(str(Problem(".", f"reading samples failed: {type(e).__name__}: {e}")))
            report["verdict"] = NOT_WHOLE
            return report
        if args.teacher:
            report["codec_kl"], report["total_kl"] = teacher_fidelity(args.teacher, samples, m, codec)
    return report


def print_report(report: dict, as_json: bool, out=None) -> None:
    out = out or sys.stdout
    report = strict_json.finite_or_none(report)
    if as_json:
        print(redact_text(strict_json.dumps(report, indent=2)), file=out)
        return
    for k, v in report.items():  # every line redacted: a URI's query string or userinfo is never printed
        if k == "problems":
            for p in v:
                print(redact_text(f"{'problem':>24}: {p}"), file=out)
        elif k == "codec_kl_bound" and v is None:
            print(f"{k:>24}: none (written by an encoder without the KL guarantee)", file=out)
        else:
            print(redact_text(f"{k:>24}: {v}"), file=out)


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pdistill inspect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dataset", help="dataset URI (local path, file://, gs://, s3://)")
    ap.add_argument("--samples", type=int, default=16, help="samples read for the statistics")
    ap.add_argument("--teacher", help="teacher checkpoint URI: also measure codec and total KL")
    ap.add_argument(
        "--skip-hash",
        action="store_true",
        help="check shard existence and sizes only, not their hashes (for huge datasets)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument("--plan", help="plan.json from `pdistill plan`: also print planned vs actual")
    return ap


def main(argv: list[str] | None = None) -> int:
    redact_process_output(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except SystemExit as e:  # our refusals exit with their message: it may hold a library's text
        if isinstance(e.code, str):
            raise SystemExit(redact_text(e.code)) from None
        raise


def _main(argv: list[str] | None) -> int:
    ap = make_parser()
    args = ap.parse_args(argv)
    if args.samples < 0:
        ap.error(f"--samples must be >= 0, got {args.samples}")
    report = build_report(args)
    if args.plan and report["verdict"] == WHOLE:  # planned vs actual (pdistill.plan)
        report["planned_vs_actual"] = inspect_hook(args.plan, args.dataset, args.json)
    print_report(report, args.json)
    if report["verdict"] != WHOLE:
        print(
            redact_text(
                f"pdistill inspect: {args.dataset} is not whole: {len(report['problems'])} problem(s), "
                f"first: {report['problems'][0]}"
            ),
            file=sys.stderr,
        )
        return 1
    return 0
