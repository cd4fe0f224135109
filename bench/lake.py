"""The demo lake the seeded benchmarks (`bench.recipes`, `bench.cross_tokenizer`) train on.

Corpus, embedded teacher, the training split's stored teacher pass and the held-out dataset, each
a resumable stage: a re-run reuses what a stopped one finished.
"""

from __future__ import annotations

from pathlib import Path

from pdistill.demo.pipeline import stage_corpus, stage_pipeline, stage_teacher
from pdistill.demo.scale import FULL, TINY, Scale
from pdistill.demo.stages import Stages, run_stage


def prepared_lake(lake_arg: str | None, quick: bool) -> tuple[Path, Scale, Stages]:
    """The lake folder (default ./recipes-lake, or ./recipes-lake-quick), its scale and stages, ready."""
    scale = TINY if quick else FULL
    lake = Path(lake_arg or ("recipes-lake-quick" if quick else "recipes-lake")).resolve()
    lake.mkdir(parents=True, exist_ok=True)
    stages = Stages(lake, scale)
    run_stage(stages, "corpus", lambda: stage_corpus(lake, scale))
    run_stage(stages, "teacher", lambda: stage_teacher(lake))
    run_stage(stages, "logits", lambda: stage_pipeline(lake, scale, "train", "logits"))
    run_stage(stages, "heldout", lambda: stage_pipeline(lake, scale, "heldout", "heldout"))
    return lake, scale, stages
