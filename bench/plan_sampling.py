"""How far off is `pdistill plan`'s token estimate from a small sample? Measured over many seeds.

Tokeniser only (no teacher): on a lake (default: the demo corpus, built if missing), every usable
document of the read units is tokenised once; then, for each seed, `pdistill.plan.sample.draw`
draws the sample exactly as `pdistill plan` does, and the plan's estimator (mean tokens/byte over
the size-proportional draws x the read units' text bytes + one separator per document) is
compared with the true total. The same is done for an equal-probability systematic sample of as
many documents with the ratio estimator (sum of tokens / sum of bytes): the design the planner
started with. Prints the mean and 90th-percentile absolute error and the share of seeds off by
more than 15 %.

Usage: python -m bench.plan_sampling --lake DIR [--seeds 200] [--fraction 0.05]
       (DIR holds corpus/train/*.parquet and teacher/, as `pdistill demo` leaves them)
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.plan_sampling", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lake", default="demo-lake", help="folder with corpus/train/*.parquet and teacher/")
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--rows-per-unit", type=int, default=16)
    args = ap.parse_args(argv)

    from pdistill import corpus
    from pdistill.plan.sample import draw, seeded_rank
    from pipelines.packing import load_tokenizer
    from pipelines.readers import Doc, read_unit
    from pipelines.sources import expand_inputs, plan_units

    if not os.path.exists(os.path.join(args.lake, "corpus", "corpus.json")):
        corpus.build(args.lake, train_chars=210_000, heldout_chars=34_000, num_files=4)
    tok = load_tokenizer(os.path.join(args.lake, "teacher"))
    files = expand_inputs([os.path.join(args.lake, "corpus", "train", "*.parquet")])
    units = plan_units(files, args.rows_per_unit, 64 << 20)
    texts = {
        (u.name, i): d.text for u in units for i, d in enumerate(x for x in read_unit(u, "text") if isinstance(x, Doc))
    }
    keys = list(texts)
    ids = tok([texts[k] for k in keys], add_special_tokens=False)["input_ids"]
    t = {k: len(i) for k, i in zip(keys, ids)}
    b = {k: len(texts[k].encode("utf-8")) for k in keys}
    true_tokens = sum(t.values()) + len(keys)
    total_bytes = sum(b.values())
    pps, equal = [], []
    for seed in range(args.seeds):
        s = draw(files, units, "text", seed=seed, max_units=len(units), sample_fraction=args.fraction)
        ratio = np.repeat([t[(u, i)] / b[(u, i)] for u, i, _ in s.docs], s.draws)
        pps.append(abs((ratio.mean() * total_bytes + len(keys)) / true_tokens - 1))
        n = sum(s.draws)
        step = len(keys) / n
        pick = [keys[min(len(keys) - 1, int(seeded_rank(seed, "start") * step + j * step))] for j in range(n)]
        est = sum(t[k] for k in pick) / sum(b[k] for k in pick) * total_bytes + len(keys)
        equal.append(abs(est / true_tokens - 1))
    print(
        f"{len(keys)} documents, {true_tokens:,} tokens, {total_bytes:,} text bytes; sample fraction "
        f"{args.fraction:g}, {args.seeds} seeds"
    )
    print("| design | mean abs error | 90th pct | seeds off by > 15 % |")
    print("|---|---|---|---|")
    for name, e in (("size-proportional draws (pdistill plan)", pps), ("equal-probability documents", equal)):
        e = np.asarray(e)
        print(f"| {name} | {e.mean():.1%} | {np.percentile(e, 90):.1%} | {(e > 0.15).mean():.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
