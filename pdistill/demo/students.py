"""The demo's student stages (`pdistill train`), read back from the trainer's JSON-lines metrics.

  baseline   `lm_only.yaml`  (LM only)
  distilled  `pd_best.yaml`  AS SHIPPED, stopped at half the steps, then resumed (autoresume)
  vanilla    `pd_vanilla.yaml`  (the paper's vanilla PD: NLL, tau 1, alpha 1), one seed
  seed<s>    LM-only and pd_best again with run.seed=<s>, for the spread

Each run segment logs to `<lake>/runs/<name>/logs/<segment>/<name>/metrics.jsonl`
(`trainer.metrics_log`: one object per finished step and per evaluation, Composer's metric
names); the progress bar and the curves come from there.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from pdistill.demo.scale import Scale
from pdistill.demo.stages import Stages, child_env, pdistill_cmd, run_logged, say
from trainer.metrics_log import FILENAME, last_step, read_metrics, series

EVAL_LOSS = "metrics/eval/LanguageCrossEntropy"
EVAL_BPB = "metrics/eval/BitsPerByte"  # the held-out loss in bits per byte of text (any tokenizer)


def _student_overrides(lake: Path, scale: Scale, name: str, segment: str) -> list[str]:
    run_dir = lake / "runs" / name
    ov = [
        f"data.streams.0.uri={lake / 'logits'}",
        f"data.eval_uri={lake / 'heldout'}",
        f"data.local_cache={run_dir / 'cache'}",
        f"data.batch_size={scale.batch_size}",
        f"model.tokenizer={lake / 'teacher'}",
        f"optim.lr={scale.lr}",
        f"run.max_duration={scale.steps}ba",
        f"run.eval_interval={scale.eval_interval}ba",
        f"run.save_interval={scale.eval_interval}ba",
        f"run.save_folder={run_dir / 'ckpt'}",
        "run.save_num_checkpoints_to_keep=2",
        f"run.run_name={name}",
        "run.autoresume=true",
        "run.loggers=[file]",  # the text log and metrics.jsonl beside it
        "run.log_interval=1ba",
        f"run.log_dir={run_dir / 'logs' / segment}",
    ]
    ov += [f"model.hf_config.{k}={v}" for k, v in scale.student.items()]
    return ov


def _train_progress(metrics_file: Path, total: int, desc: str, start: int = 0):
    def follow(proc, stop):
        bar = tqdm(total=total, initial=start, desc=desc, unit="step")
        while not stop.wait(1.0):
            step = last_step(read_metrics(str(metrics_file)))
            if step is not None and step > bar.n:
                bar.update(step - bar.n)
        bar.close()

    return follow


def run_student(
    lake: Path, scale: Scale, name: str, config: str, segment: str, extra: list[str], total: int, start: int
) -> dict:
    """One `pdistill train` segment; returns where it started and stopped and its metrics file."""
    run_dir = lake / "runs" / name
    cmd = pdistill_cmd() + ["train", config] + _student_overrides(lake, scale, name, segment) + extra
    metrics_file = run_dir / "logs" / segment / name / FILENAME
    for old in (metrics_file, metrics_file.with_name("log-rank0.txt")):
        old.unlink(missing_ok=True)  # a re-run of an unfinished segment logs afresh (the checkpoint resumes it)
    t0 = time.perf_counter()
    run_logged(
        cmd,
        run_dir / f"{segment}.out",
        child_env(),
        follow=_train_progress(metrics_file, total, f"{name} ({segment})", start),
    )
    steps = [s for s, _ in series(read_metrics(str(metrics_file)), "loss/train/total")]
    return {
        "segment": segment,
        "seconds": time.perf_counter() - t0,
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "log": str(metrics_file),
        "cmd": cmd,
    }


def curves(*metrics_files: str) -> dict:
    """The series the report plots, over one run's segments (a later segment's step wins)."""
    records = [r for path in metrics_files for r in read_metrics(path)]
    ev, bpb = series(records, EVAL_LOSS), series(records, EVAL_BPB)
    return {
        "eval_loss": ev,
        "eval_bpb": bpb,
        "train_total": series(records, "loss/train/total"),
        "train_lm": series(records, "loss/train/lm"),
        "train_kd": series(records, "loss/train/kd"),
        "alpha": series(records, "distill/alpha"),
        "final_eval_loss": ev[-1][1] if ev else float("nan"),
        "final_eval_step": ev[-1][0] if ev else None,
        "final_eval_bpb": bpb[-1][1] if bpb else float("nan"),
    }


def stage_baseline(lake: Path, scale: Scale) -> dict:
    seg = run_student(lake, scale, "baseline", "lm_only", "all", [], scale.steps, 0)
    return {"segments": [seg], **curves(seg["log"])}


def stage_vanilla(lake: Path, scale: Scale) -> dict:
    seg = run_student(lake, scale, "vanilla", "pd_vanilla", "all", [], scale.steps, 0)
    return {"segments": [seg], **curves(seg["log"])}


def stage_seed(lake: Path, scale: Scale, seed: int) -> dict:
    """LM-only and pd_best (as shipped, uninterrupted) with another initialisation."""
    out = {"seed": seed}
    for name, config in (("baseline", "lm_only"), ("distilled", "pd_best")):
        seg = run_student(lake, scale, f"{name}-seed{seed}", config, "all", [f"run.seed={seed}"], scale.steps, 0)
        out[name] = {"segments": [seg], **curves(seg["log"])}
    return out


def stage_distilled(lake: Path, scale: Scale, stages: Stages) -> dict:
    first = stages.get("distilled_part1")
    if first is None:
        # Interrupted on purpose: stop (with a checkpoint) half-way; the schedules still follow
        # the full max_duration, so the resumed run equals an uninterrupted one.
        seg1 = run_student(
            lake, scale, "distilled", "pd_best", "part1", [f"run.stop_after={scale.stop_after}ba"], scale.steps, 0
        )
        first = stages.put("distilled_part1", {"segment": seg1, "seconds": seg1["seconds"]})
        say(f"distilled: stopped at step {seg1['last_step']} (run.stop_after={scale.stop_after}ba); resuming")
    else:
        say("distilled: first half finished earlier; resuming")
    seg1 = first["segment"]
    ckpts = sorted(p.name for p in (lake / "runs" / "distilled" / "ckpt").glob("*.pt"))
    seg2 = run_student(lake, scale, "distilled", "pd_best", "part2", [], scale.steps, seg1["last_step"] or 0)
    # resumed = the second segment continued from a checkpoint instead of starting at step 1
    # (right after the stop when uninterrupted; later if a re-run of the demo resumed it again)
    resumed = seg2["first_step"] is not None and seg1["last_step"] is not None and seg2["first_step"] > 1
    return {
        "segments": [seg1, seg2],
        "resume": {
            "stopped_at_step": seg1["last_step"],
            "resumed_at_step": seg2["first_step"],
            "checkpoints_before_resume": ckpts,
            "resumed": bool(resumed),
        },
        **curves(seg1["log"], seg2["log"]),
    }
