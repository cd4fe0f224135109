"""`TeacherBatch`: the truncated teacher for one batch, dense and aligned with the student's logits.

Both sources of teacher signal build it, the same way: the collator from the dataset's decoded
samples (`trainer.data.DistillCollator`), the live teacher from fresh truncations
(`trainer.model.DistillationModel.live_teacher_signal`); the losses take it as one argument
(`trainer.losses.distill_loss(logits, labels, teacher, spec)`). Per sequence the dense layout is
`schemas.KeptEntries.to_dense`, so offline and live tensors cannot drift apart.

Composer moves a batch to the device and splits it into microbatches only when it is a dict of
tensors, so in the batch the teacher travels as its columns (`columns()`: teacher_ids,
teacher_logp, teacher_mask, teacher_log_tail, position_mask) and `from_batch` reads them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from schemas.kept import DenseTeacher, KeptEntries


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

    # -- the two producers ---------------------------------------------------------------------
    @classmethod
    def from_dense(cls, dense: Sequence[DenseTeacher], attention: np.ndarray) -> TeacherBatch:
        """Stack per-sequence dense signal; attention [B, T] bool marks real tokens."""
        mask = np.stack([d.mask for d in dense])
        return cls(
            ids=torch.from_numpy(np.stack([d.ids for d in dense])),
            logp=torch.from_numpy(np.stack([d.logp for d in dense])),
            mask=torch.from_numpy(mask),
            log_tail=torch.from_numpy(np.stack([d.log_tail for d in dense])),
            position_mask=torch.from_numpy(np.asarray(attention, dtype=bool) & mask.any(-1)),
        )

    @classmethod
    def from_kept(cls, entries: Sequence[KeptEntries], seq_len: int, k: int, attention: np.ndarray) -> TeacherBatch:
        """From each sequence's kept entries over its real positions (padded here to seq_len)."""
        return cls.from_dense([e.padded(seq_len).to_dense(k) for e in entries], attention)

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

    def flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat rows for the loss (N = B * T): ids [N, K] int64, logp [N, K], mask [N, K] bool,
        log_tail [N], valid [N] bool."""
        k = self.ids.shape[-1]
        return (
            self.ids.to(torch.int64).reshape(-1, k),
            self.logp.reshape(-1, k),
            self.mask.to(torch.bool).reshape(-1, k),
            self.log_tail.reshape(-1),
            self.valid_positions().reshape(-1),
        )
