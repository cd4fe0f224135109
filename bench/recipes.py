"""`python -m bench.recipes [--quick]`: the paper's design space from ONE stored teacher pass, with seeds.

On the demo's data (`pdistill.demo`'s corpus, the real SmolLM2-135M teacher, top-0.95-50, its
held-out split) the demo's student is trained for the same tokens and steps under each recipe:
LM-only, vanilla PD (pd_vanilla: NLL, tau 1, alpha 1), PD* as shipped (pd_best), and PD* with each
KD support (full / kept / split) at tau in {0.5, 1, 2}. LM-only, vanilla and pd_best run with
``--seeds`` seeds (the student's initialisation; data order fixed), the variants with one. It
prints held-out cross-entropy mean +- std (sample std over seeds) and delta % vs LM-only (negative
= lower loss = better), and writes `<lake>/recipes/recipes.png` and `results.json`.

The teacher pass is the demo's own stages (reused when a lake already holds them). Each finished
run is recorded in `<lake>/recipes/runs.jsonl`; a re-run reuses them, so an interrupted bench
continues. `--quick` is the CI smoke test: the demo's tiny scale, one seed, three recipes.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import textwrap
import time
from pathlib import Path

from bench.lake import prepared_lake
from bench.runs_log import run_all
from pdistill.demo.scale import Scale
from pdistill.demo.students import curves, run_student

TAUS = (0.5, 1.0, 2.0)
SUPPORTS = ("full", "kept", "split")


def recipes(seeds: int, quick: bool) -> list[dict]:
    """Headline recipes first (LM-only and pd_best with 2 seeds, vanilla, the other seeds), then the
    variants: an interrupted bench still answers the main question with a spread."""
    lm = dict(name="LM-only", config="lm_only", extra=[])
    van = dict(name="vanilla PD (NLL, tau 1, alpha 1)", config="pd_vanilla", extra=[])
    best = dict(name="PD* as shipped (pd_best)", config="pd_best", extra=[])
    pair = [dict(r, seed=s) for s in range(1, seeds + 1) for r in (lm, best)]
    out = pair[:4] + [dict(van, seed=1)] + pair[4:] + [dict(van, seed=s) for s in range(2, seeds + 1)]
    if quick:
        return out
    for support in SUPPORTS:
        for tau in TAUS:
            if support == "split" and tau == 2.0:
                continue  # = pd_best as shipped
            out.append(
                dict(
                    name=f"PD* support={support}, tau={tau:g}",
                    config="pd_best",
                    extra=[f"distill.support={support}", f"distill.tau={tau}"],
                    seed=1,
                )
            )
    return out


def _run_id(r: dict) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in r["name"].lower()).strip("-")
    return f"{slug}--seed{r['seed']}"


def run_one(lake: Path, scale: Scale, r: dict) -> dict:
    name = "recipes-" + _run_id(r)
    extra = r["extra"] + [f"run.seed={r['seed']}"]
    seg = run_student(lake, scale, name, r["config"], "all", extra, scale.steps, 0)
    curve = curves(seg["log"])
    return {
        "id": _run_id(r),
        "name": r["name"],
        "seed": r["seed"],
        "config": r["config"],
        "extra": r["extra"],
        "heldout": curve["final_eval_loss"],
        "step": curve["final_eval_step"],
        "seconds": seg["seconds"],
        "eval_curve": curve["eval_loss"],
    }


def summarise(results: list[dict]) -> list[dict]:
    by: dict[str, list[dict]] = {}
    for res in results:
        by.setdefault(res["name"], []).append(res)
    base = [x["heldout"] for x in by.get("LM-only", [])]
    base_mean = statistics.fmean(base) if base else float("nan")
    rows = []
    for name, rs in by.items():
        v = [x["heldout"] for x in rs]
        mean = statistics.fmean(v)
        std = statistics.stdev(v) if len(v) > 1 else float("nan")
        rows.append(
            {
                "name": name,
                "n": len(v),
                "mean": mean,
                "std": std,
                "values": v,
                "delta_pct": 100.0 * (mean - base_mean) / base_mean if base else float("nan"),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| recipe | seeds | held-out CE (mean ± std) | Δ % vs LM-only |", "|---|---|---|---|"]
    for r in rows:
        std = "" if math.isnan(r["std"]) else f" ± {r['std']:.3f}"
        delta = "—" if r["name"] == "LM-only" else f"{r['delta_pct']:+.2f} %"
        lines.append(f"| {r['name']} | {r['n']} | {r['mean']:.3f}{std} | {delta} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    names = [r["name"] for r in rows][::-1]
    means = [r["mean"] for r in rows][::-1]
    errs = [0.0 if math.isnan(r["std"]) else r["std"] for r in rows][::-1]
    ax.barh(names, means, xerr=errs, color=["tab:gray" if n == "LM-only" else "tab:blue" for n in names])
    base = next((r["mean"] for r in rows if r["name"] == "LM-only"), None)
    if base is not None:
        ax.axvline(base, color="k", ls="--", lw=1, label="LM-only mean")
        ax.legend(loc="lower right")
    lo = min(m - e for m, e in zip(means, errs))
    hi = max(m + e for m, e in zip(means, errs))
    ax.set_xlim(lo - 0.1 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    ax.set_xlabel("held-out cross-entropy (nats/token), lower is better")
    ax.set_title(textwrap.fill(title, 120), fontsize=8)  # the whole header: scale, date, machine
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.recipes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke test: tiny scale, 1 seed, 3 recipes")
    ap.add_argument(
        "--lake", default=None, help="demo lake to (re)use (default ./recipes-lake or ./recipes-lake-quick)"
    )
    ap.add_argument("--seeds", type=int, default=None, help="seeds for LM-only, vanilla, pd_best (default 3; quick 1)")
    ap.add_argument("--report-only", action="store_true", help="summarise the runs finished so far; train nothing")
    args = ap.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    lake, scale, stages = prepared_lake(args.lake, args.quick)
    out = lake / "recipes"
    out.mkdir(exist_ok=True)
    todo = recipes(seeds, args.quick)
    results = run_all(
        todo,
        out / "runs.jsonl",
        _run_id,
        lambda r: run_one(lake, scale, r),
        lambda rec: f"held-out {rec['heldout']:.4f} at step {rec['step']} ({rec['seconds']:.0f} s)",
        tag="recipes",
        report_only=args.report_only,
    )
    rows = summarise(results)
    tokens = scale.steps * scale.batch_size * scale.seq_len
    head = (
        f"bench.recipes ({scale.name}): {scale.steps} steps x {scale.batch_size} x {scale.seq_len} tokens "
        f"(~{tokens:,} tokens) per run, student {scale.student}, lr {scale.lr}; held-out CE at step {scale.steps}; "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{sum(x['seconds'] for x in results):.0f} s of training ({len(results)}/{len(todo)} runs)"
    )
    text = table(rows)
    print(head)
    print(text)
    (out / "results.json").write_text(json.dumps({"header": head, "rows": rows, "runs": results}, indent=1))
    plot(rows, out / "recipes.png", head)
    print(f"[recipes] wrote {out / 'results.json'} and {out / 'recipes.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
