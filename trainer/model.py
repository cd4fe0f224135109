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

Fused head (``distill.fused_head``, on by default): `forward` returns the student's last hidden
state [B, T, H] (its base model, `base_model` or `get_decoder()`, without the output projection) and the loss, the
held-out cross-entropy and the perplexity are computed from it and the projection
(`get_output_embeddings()`, an nn.Linear, tied to the input embedding or not) by
`trainer.losses.distill_loss_from_hidden`, chunk_size positions at a time: the student's [B, T, V]
logits never exist. A student whose logits are anything else (soft-capped, scaled, a head that is
not a plain linear layer) is refused when the model is built (`check_plain_head`), naming what
differs; distill.fused_head: false falls back to the student's own logits.

A student with its own tokenizer (`distill.cross_tokenizer`): its batches are the re-tokenised text
(`trainer.student_text.collate_cross`). Method first_token brings the teacher already moved onto the
student's positions and vocabulary, so the loss above applies unchanged; the other methods add their
term from the hidden state (`trainer.cross_term.CrossTokenizerTerm`: (1 - alpha) LM + alpha x its sum
over the global batch / the global count of aligned pairs, counted off the batch like the KD positions).

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

import json
import os
from typing import Any

import torch
from composer.core import Callback, Event, State, Time
from composer.loggers import Logger
from composer.models import ComposerModel
from composer.utils import dist

from schemas.codecs import lossless_decoded
from schemas.kept import KeptEntries
from schemas.truncation import truncate_tensor
from trainer.bits_per_byte import BitsPerByte
from trainer.config import DistillConfig
from trainer.data import as_uint64
from trainer.errors import SettingError
from trainer.losses import LossSpec, count_positions, distill_loss, distill_loss_from_hidden
from trainer.schedules import training_progress
from trainer.student_head import (
    HeldOutCrossEntropy,
    HeldOutPerplexity,
    check_plain_head,
    is_sharded,
    last_hidden,
    student_decoder,
)
from trainer.teacher_batch import TeacherBatch


def _unwrap(model):
    return getattr(model, "module", model)


class DistillationModel(ComposerModel):
    def __init__(
        self,
        student: torch.nn.Module,
        distill: DistillConfig,
        teacher: torch.nn.Module | None = None,
        alpha: float = 0.0,
        cross=None,
    ):
        """``distill``: the config's distill section (mode, loss, live truncation); ``teacher``: the
        loaded live teacher (mode live only); ``cross``: the `trainer.cross_term.CrossTokenizerTerm`
        of a student with its own tokenizer (its batches are `trainer.student_text.collate_cross`'s)."""
        super().__init__()
        if distill.mode == "live" and teacher is None:
            raise ValueError("distill.mode is live but no teacher model was given")
        self.student = student
        self.cross = cross
        self.mode = distill.mode
        self.fused_head = bool(distill.fused_head)
        if self.fused_head:
            check_plain_head(student)
        self.spec = LossSpec(
            kind=distill.kind,
            support=distill.support,
            tau=distill.tau,
            tail=distill.tail,
            tau_squared=distill.tau_squared,
            chunk_size=distill.chunk_size,
            beta=distill.beta,
        )
        self.top_p, self.top_k = float(distill.top_p), int(distill.top_k)
        self.alpha = float(alpha)
        # The teacher is kept OUT of the module tree: not trained, not in the optimizer, not in
        # checkpoints, not wrapped by DDP. It is moved to the batch's device on first use.
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self._stats = torch.zeros(3, dtype=torch.float64)  # agreement sum (weighted), positions, batches
        self._batch_counts: torch.Tensor | None = None  # global (LM tokens, KD positions, samples), `BatchCounts`
        self.eval_metrics = {
            "LanguageCrossEntropy": HeldOutCrossEntropy(),
            "LanguagePerplexity": HeldOutPerplexity(),
            "BitsPerByte": BitsPerByte(),
        }

    # -- Composer API ------------------------------------------------------------------------
    def forward(self, batch: dict) -> torch.Tensor:
        """The student's last hidden state [B, T, H] (fused head) or its logits [B, T, V]."""
        if self.fused_head:
            out = student_decoder(self.student)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return last_hidden(out)
        return self.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def _head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output projection's weight [V, H] and bias (or None), as the loss sees them."""
        head = self.student.get_output_embeddings()
        weight = head.weight
        if is_sharded(weight):
            raise SettingError(
                "distill.fused_head: the output projection's weight is sharded outside the student's "
                "forward (FSDP); set distill.fused_head: false"
            )
        return weight, head.bias

    def _distill_loss(self, outputs: torch.Tensor, labels, teacher, spec: LossSpec, **kw):
        if self.fused_head:
            weight, bias = self._head()
            return distill_loss_from_hidden(outputs, weight, bias, labels, teacher, spec, **kw)
        return distill_loss(outputs, labels, teacher, spec, **kw)

    @property
    def tau(self) -> float:
        return self.cross.tau if self.cross is not None else self.spec.tau

    def loss(self, outputs: torch.Tensor, batch: dict, *args, **kwargs) -> dict[str, torch.Tensor]:
        alpha = 0.0 if self.mode == "none" else self.alpha
        if self.cross is not None:
            return self._cross_loss(outputs, batch, alpha)
        teacher = self.teacher_batch(batch) if alpha > 0 else None
        d_lm, d_kd = self._global_denominators(batch, teacher)
        res = self._distill_loss(
            outputs, batch["labels"], teacher, self.spec, alpha=alpha, lm_denominator=d_lm, kd_denominator=d_kd
        )
        if teacher is not None:
            n = float(res.num_positions)
            self._stats += torch.tensor([float(res.agreement) * n, n, 0.0], dtype=torch.float64)
        return {"total": res.loss, "lm": res.lm.detach(), "kd": res.kd.detach()}

    def _cross_loss(self, hidden: torch.Tensor, batch: dict, alpha: float) -> dict[str, torch.Tensor]:
        """(1 - alpha) LM on the student's own tokens + alpha x the cross-tokenizer term (its sum over
        the global batch / the global count of aligned pairs, `trainer.cross_term`)."""
        d_lm, d_ct = self._global_denominators(batch, None)
        weight, bias = self._head()
        lm = distill_loss_from_hidden(
            hidden, weight, bias, batch["labels"], None, self.spec, alpha=0.0, lm_denominator=d_lm
        )
        total = lm.loss
        ct = torch.zeros((), dtype=lm.lm.dtype, device=hidden.device)
        if alpha > 0:
            res = self.cross.loss_sum(hidden, weight, bias, batch)
            count = self.cross.count(batch).to(res.sum.dtype)
            ct = res.sum / (d_ct if d_ct is not None else count.clamp_min(1))
            total = (1.0 - alpha) * lm.loss + alpha * ct
        return {"total": total, "lm": lm.lm.detach(), "kd": ct.detach()}

    def _global_denominators(self, batch: dict, teacher: TeacherBatch | None):
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
        if self.cross is not None:
            n_kd = self.cross.count(batch)
        counts = torch.stack([n_lm.to(batch["labels"].device), n_kd.to(batch["labels"].device)]).to(torch.float64)
        dist.all_reduce(counts)
        counts = counts / world
        return counts[0], counts[1]

    def record_batch_counts(self, batch: dict | None) -> None:
        """Count the device batch's LM tokens, KD positions and samples, summed over all ranks (None:
        forget them). KD positions as the loss will see them: the stored teacher's valid positions, or
        (live) every attended position, where the live teacher always keeps at least one id."""
        if batch is None:
            self._batch_counts = None
            return
        labels = batch["labels"]
        n_lm, n_kd = count_positions(labels, None)
        if self.cross is not None:
            n_kd = self.cross.count(batch)
        elif self.mode == "offline" and "teacher_ids" in batch:
            # `TeacherBatch.valid_positions` read off the columns: the batch's TeacherBatch is built once, in `loss`
            n_kd = (batch["position_mask"].to(torch.bool) & batch["teacher_mask"].to(torch.bool).any(-1)).sum()
        elif self.mode == "live":
            n_kd = batch["attention_mask"].to(torch.bool).sum()
        # the batch is still on the host here (Composer moves each microbatch); the all-reduce runs
        # where the model is (NCCL takes device tensors only)
        dev = next(self.parameters()).device
        counts = torch.stack([n_lm.cpu(), n_kd.cpu(), torch.tensor(labels.shape[0])]).to(dev, torch.float64)
        if dist.get_world_size() > 1:
            dist.all_reduce(counts)
        self._batch_counts = counts

    def eval_forward(self, batch: dict, outputs: Any | None = None):
        """The logits (unfused), or (fused head) {"lm_sum", "tokens"}: the batch's summed next-token
        cross-entropy and its token count, computed chunk by chunk from the hidden state."""
        outputs = outputs if outputs is not None else self.forward(batch)
        if not self.fused_head:
            return outputs
        with torch.no_grad():
            res = self._distill_loss(outputs, batch["labels"], None, self.spec, alpha=0.0, lm_denominator=1.0)
        return {"lm_sum": res.lm, "tokens": res.num_tokens}

    def get_metrics(self, is_train: bool = False):
        return {} if is_train else self.eval_metrics

    def update_metric(self, batch: Any, outputs: Any, metric) -> None:
        if isinstance(metric, BitsPerByte):
            metric.update(outputs, batch["labels"], batch["label_bytes"])
        else:
            metric.update(outputs, batch["labels"])

    # -- teacher signal ----------------------------------------------------------------------
    def teacher_batch(self, batch: dict) -> TeacherBatch | None:
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
            entries.append(
                lossless_decoded(truncate_tensor(logits[i, :n], self.top_p, self.top_k)) if n else KeptEntries.empty(0)
            )
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
    numbers per step. At FIT_START it refuses the fused head under FSDP (before step 1)."""

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.FIT_START and getattr(_unwrap(state.model), "fused_head", False) and state.fsdp_enabled:
            # FSDP shards the output projection outside the student's forward, where the fused loss runs
            raise SettingError(
                "distill.fused_head: not supported with FSDP (the output projection's weight is "
                "sharded outside the student's forward); set distill.fused_head: false"
            )
        if event == Event.AFTER_DATALOADER:
            _unwrap(state.model).record_batch_counts(state.batch)
        elif event == Event.BATCH_END:
            _unwrap(state.model).record_batch_counts(None)


class StopAfter(Callback):
    """Stop training (Composer writes its end-of-training checkpoint) once `time` is reached.

    Schedules keep following max_duration: this simulates a preemption at a chosen step.
    """

    def __init__(self, time: str):
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
        self._ids = as_uint64(state.batch["sample_id"])
        self._step = int(state.timestamp.batch)

    def batch_end(self, state: State, logger: Logger) -> None:
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
