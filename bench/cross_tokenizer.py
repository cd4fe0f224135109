"""`python -m bench.cross_tokenizer [--quick]`: students with their OWN tokenizer, from one stored teacher pass.

On the demo's data (`pdistill.demo`'s corpus, the real SmolLM2-135M teacher pass, top-0.95-50, with
the teacher_next_logp column and the teacher's tokenizer files), a byte-level BPE student tokenizer is
trained on the lake's training split (`pdistill tokenizer train`, 8,192 ids). The demo's student
architecture with that vocabulary is then trained for the same steps on the same text (each teacher
sequence re-tokenised and aligned, `distill.cross_tokenizer`) under each method:
  LM-only      distill.mode none (no teacher), the baseline
  PD*          pd_cross as shipped: first-token with the full-vocabulary support at tau 1
  first-token  the teacher's kept ids moved onto the student's vocabulary, with pd_best's KD term (split, tau 2)
  ALM          approximate likelihood matching of aligned chunks (Minixhofer et al. 2025)
  GOLD         exact-match KL + ULD sorted-probability term (TRL's GOLD hybrid)
  next-byte    KL of the distribution of the next byte at aligned boundaries
each with ``--seeds`` seeds (the student's initialisation; data order fixed), all with pd_best's
alpha schedule (WSD, peak 0.9) and learning rate. The same-tokenizer LM-only and PD* students (SmolLM2's own 49,152
ids) run once for reference. Compared in held-out bits per byte (`metrics/eval/BitsPerByte`), the one
metric that does not depend on the tokenizer, beside the teacher's own held-out bits per byte
computed from its stored pass (`pdistill.demo.measure.teacher_heldout_bpb`).

Finished runs are recorded in `<lake>/cross/runs.jsonl` and reused (an interrupted bench continues);
results in `<lake>/cross/results.json`. `--quick` is the CI smoke: tiny scale, one seed, LM-only and PD* (pd_cross).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

from bench.lake import prepared_lake
from bench.runs_log import run_all
from pdistill import corpus as corpus_mod
from pdistill.demo.measure import teacher_heldout_bpb
from pdistill.demo.scale import Scale
from pdistill.demo.stages import child_env, pdistill_cmd, run_logged, run_stage, say
from pdistill.demo.students import run_student
from trainer.metrics_log import read_metrics, series

BPB = "metrics/eval/BitsPerByte"
CE = "metrics/eval/LanguageCrossEntropy"
STUDENT_VOCAB = 8192

FOREIGN = [
    dict(name="foreign LM-only", config="lm_only", extra=["distill.cross_tokenizer={}"]),
    dict(name="foreign PD* (pd_cross)", config="pd_cross", extra=[]),
    dict(name="foreign first-token", config="pd_best", extra=["distill.cross_tokenizer.method=first_token"]),
    dict(name="foreign ALM", config="pd_best", extra=["distill.cross_tokenizer.method=alm"]),
    dict(name="foreign GOLD", config="pd_best", extra=["distill.cross_tokenizer.method=gold"]),
    dict(name="foreign next-byte", config="pd_best", extra=["distill.cross_tokenizer.method=next_byte"]),
    dict(
        name="foreign ALM tau 1",
        config="pd_best",
        extra=["distill.cross_tokenizer.method=alm", "distill.cross_tokenizer.tau=1.0"],
    ),
]
SAME = [
    dict(name="same-tokenizer LM-only", config="lm_only", extra=[]),
    dict(name="same-tokenizer PD* (pd_best)", config="pd_best", extra=[]),
]


def stage_student_tokenizer(lake: Path, vocab: int) -> dict:
    out = lake / "student-tokenizer"
    cmd = pdistill_cmd() + ["tokenizer", "train", "--input", corpus_mod.split_glob(lake, "train")]
    cmd += ["--output", str(out), "--vocab-size", str(vocab)]
    run_logged(cmd, lake / "logs" / "student-tokenizer.log", child_env())
    return {"output": str(out), "vocab": vocab}


def runs(seeds: int, quick: bool) -> list[dict]:
    """Seed 1 of every foreign method first, then the same-tokenizer references, then the other seeds."""
    foreign = FOREIGN[:2] if quick else FOREIGN
    out = [dict(r, seed=1) for r in foreign] + [dict(r, seed=1) for r in (SAME[:0] if quick else SAME)]
    return out + [dict(r, seed=s) for s in range(2, seeds + 1) for r in foreign]


def _run_id(r: dict) -> str:
    return "".join(c if c.isalnum() else "-" for c in r["name"].lower()).strip("-") + f"--seed{r['seed']}"


def run_one(lake: Path, scale: Scale, r: dict) -> dict:
    extra = list(r["extra"]) + [f"run.seed={r['seed']}"]
    if r["name"].startswith("foreign"):
        extra += [f"model.tokenizer={lake / 'student-tokenizer'}", f"model.hf_config.vocab_size={STUDENT_VOCAB}"]
    seg = run_student(lake, scale, "cross-" + _run_id(r), r["config"], "all", extra, scale.steps, 0)
    records = read_metrics(seg["log"])
    bpb, ce = series(records, BPB), series(records, CE)
    return {
        "id": _run_id(r),
        "name": r["name"],
        "seed": r["seed"],
        "extra": r["extra"],
        "bpb": bpb[-1][1] if bpb else float("nan"),
        "ce": ce[-1][1] if ce else float("nan"),
        "step": bpb[-1][0] if bpb else None,
        "seconds": seg["seconds"],
        "bpb_curve": bpb,
    }


def summarise(results: list[dict]) -> list[dict]:
    by: dict[str, list[dict]] = {}
    for res in results:
        by.setdefault(res["name"], []).append(res)
    base = [x["bpb"] for x in by.get("foreign LM-only", [])]
    base_mean = statistics.fmean(base) if base else float("nan")
    base_std = statistics.stdev(base) if len(base) > 1 else float("nan")
    rows = []
    for name, rs in by.items():
        v = [x["bpb"] for x in rs]
        mean = statistics.fmean(v)
        std = statistics.stdev(v) if len(v) > 1 else float("nan")
        delta = 100.0 * (mean - base_mean) / base_mean if base else float("nan")
        beyond = (base_mean - mean) > (std + base_std) if len(v) > 1 and len(base) > 1 else None
        rows.append(dict(name=name, n=len(v), mean=mean, std=std, values=v, delta_pct=delta, beyond_spread=beyond))
    return rows


def table(rows: list[dict], teacher_bpb: float) -> str:
    lines = [
        "| student | seeds | held-out bits per byte (mean ± std) | Δ % vs foreign LM-only | beyond the spread |",
        "|---|---|---|---|---|",
        f"| teacher (SmolLM2-135M, its stored pass) | — | {teacher_bpb:.3f} | — | — |",
    ]
    for r in rows:
        std = "" if math.isnan(r["std"]) else f" ± {r['std']:.3f}"
        delta = "—" if r["name"] == "foreign LM-only" else f"{r['delta_pct']:+.2f} %"
        beyond = {True: "yes", False: "no", None: "—"}[r["beyond_spread"]] if r["name"] != "foreign LM-only" else "—"
        lines.append(f"| {r['name']} | {r['n']} | {r['mean']:.4f}{std} | {delta} | {beyond} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cross_tokenizer", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="CI smoke test: tiny scale, 1 seed, LM-only and PD* (pd_cross)"
    )
    ap.add_argument("--lake", default=None, help="demo lake to (re)use (default ./recipes-lake or -quick)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per foreign method (default 3; quick 1)")
    ap.add_argument("--report-only", action="store_true", help="summarise the runs finished so far; train nothing")
    args = ap.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    lake, scale, stages = prepared_lake(args.lake, args.quick)
    vocab = 512 if args.quick else STUDENT_VOCAB
    run_stage(stages, "student-tokenizer", lambda: stage_student_tokenizer(lake, vocab))
    teacher_bpb = teacher_heldout_bpb(lake / "heldout")
    say(f"teacher: held-out {teacher_bpb:.4f} bits per byte (its stored pass)")
    out = lake / "cross"
    out.mkdir(exist_ok=True)
    todo = runs(seeds, args.quick)
    results = run_all(
        todo,
        out / "runs.jsonl",
        _run_id,
        lambda r: run_one(lake, scale, r),
        lambda rec: (
            f"held-out {rec['bpb']:.4f} bits/byte (CE {rec['ce']:.4f} nats/token) at step {rec['step']} "
            f"({rec['seconds']:.0f} s)"
        ),
        tag="cross",
        report_only=args.report_only,
    )
    rows = summarise(results)
    head = (
        f"bench.cross_tokenizer ({scale.name}): {scale.steps} steps x {scale.batch_size} sequences of "
        f"{scale.seq_len} teacher tokens per run, student {scale.student}, foreign vocab {vocab} (byte-level BPE "
        f"trained on the train split), lr {scale.lr}; held-out bits per byte at step {scale.steps}; "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.machine()}, "
        f"{sum(x['seconds'] for x in results):.0f} s of training ({len(results)}/{len(todo)} runs)"
    )
    text = table(rows, teacher_bpb)
    print(head)
    print(text)
    (out / "results.json").write_text(
        json.dumps({"header": head, "teacher_bpb": teacher_bpb, "rows": rows, "runs": results}, indent=1)
    )
    print(f"[cross] wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
