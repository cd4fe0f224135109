"""`TeacherBatch`: the truncated teacher for one batch, dense and aligned with the student's logits.

The teacher signal takes three shapes between the codec and the loss kernel, each built once per
batch: `schemas.KeptEntries` per sequence (what a codec decodes, in the loader's workers, and what
the live teacher's truncation gives), this `TeacherBatch` (`from_kept`: both sources, the collator
`trainer.data.DistillCollator` and `trainer.model.DistillationModel.live_teacher_signal`, so
offline and live tensors cannot drift apart), and the loss's `trainer.kd_rows.PreparedTeacher` (the
teacher-side values, tempered and renormalised, computed once per loss call from this record).

Composer moves a batch to the device and splits it into microbatches only when it is a dict of
tensors, so in the batch the teacher travels as its columns (`columns()`: teacher_ids,
teacher_logp, teacher_mask, teacher_log_tail, position_mask) and `from_batch` reads them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from schemas.errors import SchemaError
from schemas.kept import PAD_LOG_TAIL, KeptEntries


@dataclass(frozen=True, eq=False)
class TeacherBatch:
    """Shapes: B sequences, T positions, K kept-entry slots per position.

    ids [B, T, K] int64 (kept token ids; 0 where masked), logp [B, T, K] float (log-probabilities,
    -inf where masked; the losses renormalise them over the kept set), mask [B, T, K] bool (slot
    holds a kept entry), log_tail [B, T] float (log of the mass truncation dropped, -inf when none),
    position_mask [B, T] bool or None (position takes part in KD: a real token with at least one
    kept entry). Position t is the teacher's distribution of token t + 1.
    """

    ids: torch.Tensor
    logp: torch.Tensor
    mask: torch.Tensor
    log_tail: torch.Tensor
    position_mask: torch.Tensor | None = None

    COLUMNS = ("teacher_ids", "teacher_logp", "teacher_mask", "teacher_log_tail", "position_mask")

    # -- the one producer: kept entries, from the codec (collator) or from the live teacher ----
    @classmethod
    def from_kept(cls, entries: Sequence[KeptEntries], seq_len: int, k: int, attention: np.ndarray) -> TeacherBatch:
        """The batch's teacher from each sequence's kept entries (``seq_len`` positions, or fewer: the
        rest is padding), written straight into [B, T, K] arrays (`KeptEntries.slots`); attention
        [B, T] bool marks real tokens."""
        b = len(entries)
        ids = np.zeros((b, seq_len, k), dtype=np.int64)
        logp = np.full((b, seq_len, k), -np.inf, dtype=np.float32)
        mask = np.zeros((b, seq_len, k), dtype=bool)
        log_tail = np.full((b, seq_len), PAD_LOG_TAIL, dtype=np.float32)
        for i, e in enumerate(entries):
            n = e.num_positions
            if n > seq_len:
                raise SchemaError(f"teacher signal for {n} positions does not fit a sequence of {seq_len}")
            row, col = e.slots(k)
            ids[i, row, col] = e.ids
            logp[i, row, col] = e.logp
            mask[i, row, col] = True
            log_tail[i, :n] = e.log_tail
        return cls(
            ids=torch.from_numpy(ids),
            logp=torch.from_numpy(logp),
            mask=torch.from_numpy(mask),
            log_tail=torch.from_numpy(log_tail),
            position_mask=torch.from_numpy(np.asarray(attention, dtype=bool) & mask.any(-1)),
        )

    # -- through Composer's batch dict ---------------------------------------------------------
    def columns(self) -> dict[str, torch.Tensor]:
        """The batch-dict columns that carry this teacher (see the module docstring)."""
        cols = dict(zip(self.COLUMNS[:4], (self.ids, self.logp, self.mask, self.log_tail)))
        if self.position_mask is not None:
            cols["position_mask"] = self.position_mask
        return cols

    @classmethod
    def from_batch(cls, batch: dict) -> TeacherBatch:
        missing = [c for c in cls.COLUMNS[:4] if c not in batch]
        if missing:
            raise ValueError(f"the batch has no teacher signal (missing columns {', '.join(missing)})")
        return cls(*(batch[c] for c in cls.COLUMNS[:4]), position_mask=batch.get("position_mask"))

    def to(self, device) -> TeacherBatch:
        return TeacherBatch(
            *(
                None if x is None else x.to(device)
                for x in (self.ids, self.logp, self.mask, self.log_tail, self.position_mask)
            )
        )

    # -- what the losses read -------------------------------------------------------------------
    def check_against(self, logits: torch.Tensor) -> None:
        """Raise ValueError naming the column whose shape does not fit logits [B, T, V]."""
        b, t, _ = logits.shape
        k = self.ids.shape[-1]
        for name, tens, shape in zip(
            self.COLUMNS,
            (self.ids, self.logp, self.mask, self.log_tail, self.position_mask),
            ((b, t, k), (b, t, k), (b, t, k), (b, t), (b, t)),
        ):
            if tens is not None and tuple(tens.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(tens.shape)}")

    def valid_positions(self) -> torch.Tensor:
        """[B, T] bool: positions that take part in KD (position_mask and at least one kept entry)."""
        valid = self.mask.to(torch.bool).any(-1)
        if self.position_mask is not None:
            valid = valid & self.position_mask.to(torch.bool)
        return valid
