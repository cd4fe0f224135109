"""The distillation ComposerModel: an HF causal-LM student, its loss, an optional live teacher.

Loss = (1 - alpha) * LM + alpha * KD (`trainer.losses.distill_loss(logits, labels, teacher, spec)`:
one chunked pass, each term its own per-token mean; ``spec`` is the model's `LossSpec`, the teacher
a `TeacherBatch`). Each term is the per-token mean over the GLOBAL batch (every rank, every
microbatch), whatever the padding: `BatchCounts` counts the LM tokens, KD positions and samples of
each device batch before Composer splits it into microbatches and all-reduces them
(`composer.utils.dist`); a microbatch then divides its sum by C * b / S (C the global count, b its
samples, S the global samples). Composer scales a microbatch's loss by b / (S / world size) and DDP
averages over ranks, so the gradient is that of (sum over every rank and microbatch) / C. Without
microbatches that denominator is C / world size (a rank's logged lm / kd are its share scaled by the
world size; their mean over ranks is the global mean). Called outside a Trainer (no counts
recorded) the loss all-reduces the counts of the batch it is given. alpha is a plain attribute set
every batch by the `AlphaCallback` from the schedule and Composer's training progress (timestamp /
max_duration), so a resumed run recomputes it from the restored timestamp.

Alignment: the collator (`trainer.data.DistillCollator`) already aligned labels and teacher
tensors with the logits (position t predicts token t + 1); the student gets no `labels` (HF would
shift them itself and materialise a full log-softmax), and logits are used unshifted.

Modes:
  offline  teacher signal read from the dataset (the collator's `TeacherBatch`, carried as batch
           columns);
  live     a frozen teacher in the same process: its logits under no_grad, truncated per sequence
           with `schemas.truncate_tensor`, put in the codec's layout (ids sorted, log-probs
           renormalised over the kept set), then `TeacherBatch.from_kept` (the collator's layout)
           and the identical loss code path;
  none     LM only (alpha must be 0), no teacher read.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.metrics import LanguageCrossEntropy, LanguagePerplexity
from composer.models import ComposerModel
from composer.utils import dist

from schemas.codec import lossless_decoded
from schemas.kept import KeptEntries
from schemas.truncation import truncate_tensor
from trainer.config import DistillConfig
from trainer.losses import LossSpec, count_positions, distill_loss
from trainer.schedules import training_progress
from trainer.teacher_batch import TeacherBatch


def _unwrap(model):
    return getattr(model, "module", model)


class DistillationModel(ComposerModel):
    def __init__(self, student: torch.nn.Module, distill: DistillConfig, teacher: Optional[torch.nn.Module] = None,
                 alpha: float = 0.0):
        """``distill``: the config's distill section (mode, loss, live truncation); ``teacher``: the
        loaded live teacher (mode live only)."""
        super().__init__()
        if distill.mode == "live" and teacher is None:
            raise ValueError("distill.mode is live but no teacher model was given")
        self.student = student
        self.mode = distill.mode
        self.spec = LossSpec(kind=distill.kind, support=distill.support, tau=distill.tau, tail=distill.tail,
                             tau_squared=distill.tau_squared, chunk_size=distill.chunk_size)
        self.top_p, self.top_k = float(distill.top_p), int(distill.top_k)
        self.alpha = float(alpha)
        # The teacher is kept OUT of the module tree: not trained, not in the optimizer, not in
        # checkpoints, not wrapped by DDP. It is moved to the batch's device on first use.
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self._stats = torch.zeros(3, dtype=torch.float64)  # agreement sum (weighted), positions, batches
        self._batch_counts: Optional[torch.Tensor] = None  # global (LM tokens, KD positions, samples), `BatchCounts`
        self.eval_metrics = {"LanguageCrossEntropy": LanguageCrossEntropy(), "LanguagePerplexity": LanguagePerplexity()}

    # -- Composer API ------------------------------------------------------------------------
    def forward(self, batch: dict) -> torch.Tensor:
        return self.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    @property
    def tau(self) -> float:
        return self.spec.tau

    def loss(self, outputs: torch.Tensor, batch: dict, *args, **kwargs) -> dict[str, torch.Tensor]:
        alpha = 0.0 if self.mode == "none" else self.alpha
        teacher = self.teacher_batch(batch) if alpha > 0 else None
        d_lm, d_kd = self._global_denominators(batch, teacher)
        res = distill_loss(outputs, batch["labels"], teacher, self.spec, alpha=alpha, lm_denominator=d_lm,
                           kd_denominator=d_kd)
        if teacher is not None:
            n = float(res.num_positions)
            self._stats += torch.tensor([float(res.agreement) * n, n, 0.0], dtype=torch.float64)
        return {"total": res.loss, "lm": res.lm.detach(), "kd": res.kd.detach()}

    def _global_denominators(self, batch: dict, teacher: Optional[TeacherBatch]):
        """(LM, KD) denominators: C * b / S from the device batch's global counts (`BatchCounts`); without
        them, this batch's counts on one process (None), else its counts summed over all ranks divided
        by the world size (one all-reduce of two numbers)."""
        if self._batch_counts is not None:
            c_lm, c_kd, samples = self._batch_counts
            share = batch["labels"].shape[0] / samples  # this microbatch's share of the global samples
            return c_lm * share, c_kd * share
        world = dist.get_world_size()
        if world == 1:
            return None, None
        n_lm, n_kd = count_positions(batch["labels"], teacher)
        counts = torch.stack([n_lm.to(batch["labels"].device), n_kd.to(batch["labels"].device)]).to(torch.float64)
        dist.all_reduce(counts)
        counts = counts / world
        return counts[0], counts[1]

    def record_batch_counts(self, batch: Optional[dict]) -> None:
        """Count the device batch's LM tokens, KD positions and samples, summed over all ranks (None:
        forget them). KD positions as the loss will see them: the stored teacher's valid positions, or
        (live) every attended position, where the live teacher always keeps at least one id."""
        if batch is None:
            self._batch_counts = None
            return
        labels = batch["labels"]
        stored = TeacherBatch.from_batch(batch) if self.mode == "offline" and "teacher_ids" in batch else None
        n_lm, n_kd = count_positions(labels, stored)
        if self.mode == "live":
            n_kd = batch["attention_mask"].to(torch.bool).sum()
        # the batch is still on the host here (Composer moves each microbatch); the all-reduce runs
        # where the model is (NCCL takes device tensors only)
        dev = next(self.parameters()).device
        counts = torch.stack([n_lm.cpu(), n_kd.cpu(), torch.tensor(labels.shape[0])]).to(dev, torch.float64)
        if dist.get_world_size() > 1:
            dist.all_reduce(counts)
        self._batch_counts = counts

    def eval_forward(self, batch: dict, outputs: Optional[Any] = None):
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False):
        return {} if is_train else self.eval_metrics

    def update_metric(self, batch: Any, outputs: Any, metric) -> None:
        metric.update(outputs, batch["labels"])

    # -- teacher signal ----------------------------------------------------------------------
    def teacher_batch(self, batch: dict) -> Optional[TeacherBatch]:
        """The teacher for this batch: the collator's columns (offline) or a fresh pass (live)."""
        if self.mode == "offline":
            if "teacher_ids" not in batch:
                raise ValueError("distill.mode is offline but the batch has no teacher columns")
            return TeacherBatch.from_batch(batch)
        if self.mode == "live":
            return self.live_teacher_signal(batch)
        return None

    @torch.no_grad()
    def live_teacher_signal(self, batch: dict) -> TeacherBatch:
        """Run the frozen teacher and build the same `TeacherBatch` the offline collator builds."""
        teacher = self._teacher[0]
        ids = batch["input_ids"]
        dev = ids.device
        p = next(teacher.parameters(), None)
        if p is not None and p.device != dev:
            teacher.to(dev)
        logits = teacher(input_ids=ids, attention_mask=batch["attention_mask"]).logits
        attention = batch["attention_mask"].bool()
        entries = []
        for i, n in enumerate(attention.sum(-1).tolist()):
            # the codec's layout: ids ascending per position, log-probs renormalised over the kept set
            entries.append(lossless_decoded(truncate_tensor(logits[i, :n], self.top_p, self.top_k)) if n
                           else KeptEntries.empty(0))
        return TeacherBatch.from_kept(entries, ids.shape[1], self.top_k, attention.cpu().numpy()).to(dev)

    def pop_stats(self) -> tuple[float, float]:
        """(agreement sum weighted by positions, positions) since the last call."""
        s = self._stats.clone()
        self._stats.zero_()
        return float(s[0]), float(s[1])


class AlphaCallback(Callback):
    """Sets model.alpha from the schedule at each batch start; logs alpha, tau and agreement.

    progress = Composer's elapsed fraction (timestamp / max_duration) at the start of the batch.
    Logged per step: distill/alpha, distill/tau, distill/agreement (teacher top-1 == student
    argmax, over valid KD positions of all ranks). loss/train/{total,lm,kd} come from Composer.
    """

    def __init__(self, schedule):
        self.schedule = schedule

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        model = _unwrap(state.model)
        if event == Event.BATCH_START:
            model.alpha = 0.0 if model.mode == "none" else float(self.schedule(training_progress(state)))
        elif event == Event.BATCH_END:
            agree, n = model.pop_stats()
            t = torch.tensor([agree, n], dtype=torch.float64)
            if dist.get_world_size() > 1:
                dev = next(model.parameters()).device
                t = t.to(dev)
                dist.all_reduce(t)
                t = t.cpu()
            metrics = {"distill/alpha": model.alpha, "distill/tau": model.tau}
            if t[1] > 0:
                metrics["distill/agreement"] = float(t[0] / t[1])
            logger.log_metrics(metrics)


class BatchCounts(Callback):
    """Records the global counts of each device batch before Composer splits it into microbatches
    (AFTER_DATALOADER), so that every microbatch's loss is its part of the global per-token mean
    (`DistillationModel._global_denominators`); forgets them at BATCH_END. One all-reduce of three
    numbers per step."""

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.AFTER_DATALOADER:
            _unwrap(state.model).record_batch_counts(state.batch)
        elif event == Event.BATCH_END:
            _unwrap(state.model).record_batch_counts(None)


class StopAfter(Callback):
    """Stop training (Composer writes its end-of-training checkpoint) once `time` is reached.

    Schedules keep following max_duration: this simulates a preemption at a chosen step.
    """

    def __init__(self, time: str):
        from composer.core import Time

        self.time = Time.from_timestring(time)

    def batch_end(self, state: State, logger: Logger) -> None:
        if state.timestamp.get(self.time.unit) >= self.time:
            state.stop_training()


class SampleLog(Callback):
    """Appends one JSON line per step to `<folder>/samples-rank{rank}.jsonl`:
    {"step", "rank", "world_size", "sample_ids", "loss", "lm", "kd", "alpha"} (step counted from 0).
    Cheap (ids of the device batch); off unless run.sample_log_dir is set."""

    def __init__(self, folder: str):
        self.folder = folder
        self._ids: list[int] = []
        self._step = 0

    def after_dataloader(self, state: State, logger: Logger) -> None:
        from trainer.data import as_uint64

        self._ids = as_uint64(state.batch["sample_id"])
        self._step = int(state.timestamp.batch)

    def batch_end(self, state: State, logger: Logger) -> None:
        import json
        import os

        os.makedirs(self.folder, exist_ok=True)
        losses = getattr(state, "total_loss_dict", {}) or {}
        rec = {
            "step": self._step,
            "rank": dist.get_global_rank(),
            "world_size": dist.get_world_size(),
            "sample_ids": self._ids,
            "loss": losses.get("loss/train/total"),
            "lm": losses.get("loss/train/lm"),
            "kd": losses.get("loss/train/kd"),
            "alpha": _unwrap(state.model).alpha,
        }
        with open(os.path.join(self.folder, f"samples-rank{rec['rank']}.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
