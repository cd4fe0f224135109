"""`pdistill plan`: the teacher pass's tokens, bytes, accelerator-hours and cost, before the run.

It lists the lake, reads a deterministic stratified sample (`pdistill.plan.sample`), runs the
real `pdistill logits` job on the sampled documents into a temporary output, and extrapolates
with a bootstrap interval (`pdistill.plan.estimate`). It prints a table and writes plan.json;
`pdistill inspect DATASET --plan plan.json` later prints planned against actual.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time

from pdistill.plan import estimate as est
from pdistill.plan.sample import draw
from pipelines.sources import InputError
from schemas import INDEX_NAME, MANIFEST_NAME, Manifest, storage, strict_json
from schemas.errors import ConfigError, SchemaError
from schemas.redact import redact_process_output, redact_text, redact_uri, remember_secrets

PLAN_VERSION = 1
ROWS = [  # (key, label, unit)
    ("documents", "documents", ""),
    ("dead_letters", "dead letters", ""),
    ("incomplete_files", "incomplete files", ""),
    ("tokens", "tokens", ""),
    ("sequences", "sequences", ""),
    ("dataset_bytes", "dataset bytes", "B"),
    ("parts", "parts", ""),
    ("shards", "shards", ""),
    ("kept_per_token", "kept entries/token", ""),
    ("bytes_per_token", "bytes/token", "B"),
    ("accelerator_hours", "accelerator-hours", "h"),
    ("wall_hours", "wall time", "h"),
    ("cost", "cost", ""),
]


def parser() -> argparse.ArgumentParser:
    from pipelines.cli import add_setting_flags  # noqa: PLC0415 (late: inspect --plan: no pipeline deps)

    ap = argparse.ArgumentParser(
        prog="pdistill plan",
        description="Predict a teacher pass (tokens, sequences, dataset bytes, parts, shards, accelerator-hours, "
        "wall time, cost) from the real pipeline run on a sample of the lake. Takes the same settings as "
        "`pdistill logits`; unknown --flags go to Beam for the sample's run.",
    )
    ap.add_argument("--config", help="YAML file of pipeline settings (as for `pdistill logits`)")
    add_setting_flags(ap, skip=("output", "progress"))
    g = ap.add_argument_group("plan")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--sample-docs", type=int, help="documents drawn (instead of --sample-fraction)")
    size.add_argument(
        "--sample-fraction",
        type=float,
        default=0.05,
        help="fraction of the read units' documents drawn, with probability proportional to their bytes (default 0.05)",
    )
    g.add_argument("--max-units", type=int, default=64, help="work units read for the sample, spread over files")
    g.add_argument("--sample-seed", type=int, default=0, help="seed of the sample (same seed, same sample)")
    rate = g.add_mutually_exclusive_group()
    rate.add_argument("--gpu", help="target accelerator for the FLOPs model: h100 | a100 | l4 | t4")
    rate.add_argument("--tokens-per-second", type=float, help="teacher tokens/s per accelerator, if you know it")
    g.add_argument("--mfu", type=float, help="model FLOPs utilisation for --gpu (default 0.4)")
    g.add_argument("--price-per-hour", type=float, help="price of one accelerator-hour (any currency)")
    g.add_argument("--workers", type=int, default=1, help="accelerators working in parallel (default 1)")
    g.add_argument("--plan", default="plan.json", help="where to write the plan (default plan.json)")
    g.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    return ap


def check_args(args) -> None:
    if args.sample_docs is not None and args.sample_docs < 1:
        raise ConfigError(f"--sample-docs must be >= 1, got {args.sample_docs}")
    if not 0 < args.sample_fraction <= 1:
        raise ConfigError(f"--sample-fraction must be in (0, 1], got {args.sample_fraction}")
    if args.max_units < 1:
        raise ConfigError(f"--max-units must be >= 1, got {args.max_units}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.mfu is not None and args.gpu is None:
        raise ConfigError("--mfu applies to the FLOPs model: give --gpu too")
    # a price, a rate or a utilisation out of range would print a cost or a time that cannot be
    # (negative, infinite, nan): refused like the other flags, before any work
    for flag, value, inside, bounds in (
        ("--price-per-hour", args.price_per_hour, lambda v: v >= 0, ">= 0"),
        ("--tokens-per-second", args.tokens_per_second, lambda v: v > 0, "> 0"),
        ("--mfu", args.mfu, lambda v: 0 < v <= 1, "in (0, 1]"),
    ):
        if value is not None and not (math.isfinite(value) and inside(value)):
            raise ConfigError(f"{flag} must be a finite number {bounds}, got {value!r}")


def make_plan(config, args, extra_args: list[str] | None = None) -> dict:
    """List, sample, run the sample, extrapolate: the plan as a JSON-able dict."""
    from pipelines.job import prepare  # noqa: PLC0415 (late: inspect --plan: no pipeline deps)

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="pdistill-plan-") as tmp:
        # the pipeline's own checks and unit planning (inputs, tokenizer, separator, teacher)
        prep = prepare(config.replace(output=f"{tmp}/checks"))
        sample = draw(
            prep.files,
            prep.units,
            config.text_column,
            seed=args.sample_seed,
            max_units=args.max_units,
            sample_docs=args.sample_docs,
            sample_fraction=args.sample_fraction,
        )
        if not sample.docs:
            read = sum(r.documents for r in sample.read)
            dead = sum(r.dead_letters for r in sample.read)
            raise InputError(
                f"the sample holds no usable document ({dead} dead letters among {read} documents "
                f"read from {len(sample.read)} units): nothing to measure"
            )
        run = est.run_sample(config, sample, f"{tmp}/sample", extra_args)
        shape = est.teacher_shape(prep.teacher.local_dir)
    pred = est.extrapolate(sample, run, config.seq_len, config.add_bos, rng_seed=args.sample_seed)
    tp = est.throughput(
        measured_tps=run.tokens_per_s,
        seq_len=config.seq_len,
        shape=shape,
        tokens_per_second=args.tokens_per_second,
        gpu=args.gpu,
        mfu=args.mfu,
    )
    pred.update(est.time_and_cost(pred, tp["tokens_per_s"], args.workers, args.price_per_hour))
    dead_kinds: dict = {}
    for r in sample.read:
        for k, v in r.dead_kinds.items():
            dead_kinds[k] = dead_kinds.get(k, 0) + v
    return {
        "plan_version": PLAN_VERSION,
        "created_by": "pdistill plan",
        "inputs": config.inputs,
        "teacher": {"uri": config.teacher, "revision": prep.teacher.revision},
        "settings": config.shaping_settings(),
        "settings_fingerprint": prep.settings_fp,
        "lake": {**sample.listing(), "hidden_files_skipped": len(prep.hidden)},
        "sample": {
            "seed": args.sample_seed,
            "documents": len(sample.docs),
            "text_bytes": int(run.doc_bytes.sum()),
            "tokens": int(run.seq_tokens.sum()),
            "sequences": int(len(run.seq_tokens)),
            "stored_bytes": run.stored_bytes,
            "dead_letters_read": sum(r.dead_letters for r in sample.read),
            "dead_letter_kinds": dead_kinds,
            "documents_read": sum(r.documents for r in sample.read),
            "teacher_tokens_per_s": run.tokens_per_s,
            "teacher_pass_seconds": run.seconds,
            "draws": sum(sample.draws),
            "requested_draws": sample.requested,
            "keys": [f"{u}#{i}" for u, i, _ in sample.docs],
        },
        "document_tokens": est.document_lengths(sample.doc_bytes, pred["tokens_per_byte"]["estimate"], config.seq_len),
        "throughput": tp,
        "workers": args.workers,
        "price_per_hour": args.price_per_hour,
        "interval": "5th-95th percentile of a bootstrap over the size-proportional draws, the sample's sequences "
        "and (when not all units were read) the read units",
        "predicted": pred,
        "seconds": time.time() - t0,
    }


# -- printing -----------------------------------------------------------------------------------


def fmt(value: float, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "h":
        return f"{value:.3g} h" if value >= 0.01 else f"{value * 3600:.3g} s"
    if unit == "B":
        for p, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= p:
                return f"{value / p:.3g} {name}"
        return f"{value:.3g} B"
    if abs(value) >= 1e6:
        return f"{value:.4g}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def doc_length_line(dl: dict) -> list[str]:
    if not dl:
        return []
    return [
        f"documents ({dl['documents']:,} read): {dl['mean']:,.0f} tokens on average, median {dl['p50']:,.0f} (10-90 %: {dl['p10']:,.0f}"
        f"-{dl['p90']:,.0f}, 99 %: {dl['p99']:,.0f}); {100 * dl['share_longer_than_seq_len']:.1f} % are longer "
        f"than seq-len {dl['seq_len']} and hold {100 * dl['token_share_in_longer_than_seq_len']:.0f} % of the "
        f"tokens (split over sequences)"
    ]


def table(plan: dict) -> str:
    lk, sm, tp, pr = plan["lake"], plan["sample"], plan["throughput"], plan["predicted"]
    formats = ", ".join(f"{k}: {v['files']} files {fmt(v['bytes'], 'B')}" for k, v in sorted(lk["formats"].items()))
    lines = [
        f"lake: {lk['files']} files, {fmt(lk['bytes'], 'B')} ({formats}); {lk['units']} work units, "
        f"{lk['units_read']} read ({fmt(lk['bytes_read'], 'B')})",
        f"sample: {sm['documents']} documents of {sm['documents_read']} read (seed {sm['seed']}), {sm['tokens']:,} "
        f"tokens, {sm['sequences']} sequences, teacher pass {sm['teacher_pass_seconds']:.0f} s at "
        f"{sm['teacher_tokens_per_s']:.0f} tokens/s here",
        *(
            [
                f"sample: --sample-docs {sm['requested_draws']} is more than the {sm['draws']} usable documents read: "
                f"{sm['draws']} drawn"
            ]
            if sm.get("requested_draws", 0) > sm["draws"]
            else []
        ),
        *(
            [
                f"lake: skipped {lk['hidden_files_skipped']} hidden files (a name, or a folder below the input, starting "
                "with '.' or '_'; name them in --input to read them)"
            ]
            if lk.get("hidden_files_skipped")
            else []
        ),
        *doc_length_line(plan.get("document_tokens") or {}),
        f"throughput: {tp['tokens_per_s']:.4g} tokens/s per accelerator ({tp['how']})",
        "",
        f"| {'quantity':<20} | {'estimate':>12} | {'90 % interval':>25} |",
        f"|{'-' * 22}|{'-' * 14}|{'-' * 27}|",
    ]
    for key, label, unit in ROWS:
        if key not in pr:
            continue
        v = pr[key]
        interval = f"{fmt(v['low'], unit)} - {fmt(v['high'], unit)}"
        lines.append(f"| {label:<20} | {fmt(v['estimate'], unit):>12} | {interval:>25} |")
    lines.append(
        f"\nwall time for {plan['workers']} accelerator(s): the work spread evenly, never less than the "
        f"largest unit; interval: {plan['interval']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli  # noqa: PLC0415 (late: inspect --plan: no pipeline deps)
    from pipelines.config import PipelineConfig  # noqa: PLC0415 (late: inspect --plan: no pipeline deps)
    from pipelines.errors import user_errors  # noqa: PLC0415 (late: inspect --plan: no pipeline deps)

    redact_process_output(sys.argv[1:] if argv is None else argv)
    args, extra = parser().parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        check_args(args)
        keep = set(PipelineConfig.model_fields) | {"config", "runner_config_file"}
        ns = argparse.Namespace(**{k: v for k, v in vars(args).items() if k in keep})
        ns.json, ns.output, ns.progress = False, None, None
        config = cli.config_from_args(ns)
        remember_secrets(config.model_dump())  # URIs of a --config file too
        for key in ("inputs", "teacher"):
            if not getattr(config, key):
                raise ConfigError(f"setting '{key}' is required (--{key.rstrip('s')} on the command line)")
        cli.check_writable_file("--plan", args.plan)  # before the sample's teacher pass, not after it
        plan = make_plan(config, args, extra)
        text = redact_text(strict_json.dumps(plan, indent=2, sort_keys=True))  # inputs and teacher URIs
        storage.write_text_atomic(args.plan, text)
    except (*user_errors(), OSError) as e:  # OSError: the plan cannot be written
        print(f"pdistill plan: error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    if args.json:
        print(text)
    else:
        print(redact_text(table(plan)))
        print(f"plan written to {redact_uri(args.plan)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- planned vs actual (`pdistill inspect DATASET --plan plan.json`) ----------------------------


def planned_vs_actual(plan_uri: str, dataset_uri: str) -> tuple[str, dict]:
    """A table of the plan's estimates against a finished dataset's manifest and index, and the
    same as a dict {quantity: {planned, low, high, actual, error}} (error = planned / actual - 1)."""
    try:
        plan = json.loads(storage.read_text(plan_uri))
        pred = plan["predicted"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"plan {plan_uri}: not a plan written by `pdistill plan` ({type(e).__name__}: {e})") from None
    m = Manifest.from_json(storage.read_text(storage.join(dataset_uri, MANIFEST_NAME)))
    index = json.loads(storage.read_text(storage.join(dataset_uri, INDEX_NAME)))
    stored = sum(int((s.get("zip_data") or s["raw_data"])["bytes"]) for s in index["shards"])
    actual = {
        "documents": m.counts.documents,
        "dead_letters": m.counts.dead_letters,
        "incomplete_files": getattr(m.counts, "incomplete_files", 0),
        "tokens": m.counts.tokens,
        "sequences": m.counts.sequences,
        "dataset_bytes": stored,
        "parts": m.counts.units,
        "shards": len(index["shards"]),
        "bytes_per_token": stored / max(1, m.counts.tokens),
    }
    rows, out = [], {}
    for key, label, unit in ROWS:
        if key not in actual or key not in pred:
            continue
        p, a = pred[key], actual[key]
        err = p["estimate"] / a - 1 if a else (0.0 if p["estimate"] == 0 else float("inf"))
        inside = p["low"] <= a <= p["high"]
        out[key] = {
            "planned": p["estimate"],
            "low": p["low"],
            "high": p["high"],
            "actual": a,
            "error": err,
            "inside_interval": inside,
        }
        rows.append(
            f"| {label:<16} | {fmt(p['estimate'], unit):>11} | {fmt(p['low'], unit) + ' - ' + fmt(p['high'], unit):>23} "
            f"| {fmt(a, unit):>11} | {err:>+7.1%} | {'yes' if inside else 'no':>6} |"
        )
    head = [f"planned ({plan_uri}) vs actual ({dataset_uri}):"]
    if plan.get("settings_fingerprint") not in (None, m.settings_fingerprint):
        head.append("warning: the dataset was written with other settings or inputs than the plan's")
    head += [
        f"| {'quantity':<16} | {'planned':>11} | {'90 % interval':>23} | {'actual':>11} | {'error':>7} | inside |",
        f"|{'-' * 18}|{'-' * 13}|{'-' * 25}|{'-' * 13}|{'-' * 9}|{'-' * 8}|",
    ]
    return "\n".join(head + rows), out


def inspect_hook(plan_uri: str, dataset_uri: str, as_json: bool):
    """`pdistill inspect --plan`: the comparison as a dict (JSON output) or as a table (text)."""
    try:
        text, rows = planned_vs_actual(plan_uri, dataset_uri)
    except (OSError, ConfigError, SchemaError) as e:
        raise SystemExit(f"pdistill inspect: --plan: {e}") from None
    return rows if as_json else "\n" + text
