"""The kept entries of a truncated teacher distribution: one record from truncation to the loss.

`KeptEntries` is what truncation produces, what a codec encodes and decodes, and what the trainer
densifies: per position the number of kept ids, the kept ids and their log-probabilities, stored
flat (CSR by position), plus the log of the mass truncation dropped. Whether the log-probabilities
are under the full teacher softmax (fresh from truncation) or renormalised over the kept set (as
every codec decodes them, `schemas.codecs.lossless_decoded`) is a property of where the record comes
from, not of its layout; the losses renormalise over the kept set either way.

Padding has one definition, here: a padding position keeps no entry and has no tail
(count 0, log_tail -inf). `padded` extends a record of the n real positions to seq_len,
`head` cuts it back to its first n positions, and `slots` places each entry in a [T, K] layout
(the one the trainer's batch uses, `trainer.teacher_batch.TeacherBatch.from_kept`; `to_dense` is the
same for one sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.errors import SchemaError

PAD_LOG_TAIL = -np.inf  # a padding position: no kept entries and no dropped mass


@dataclass(frozen=True)
class DenseTeacher:
    """Dense per-position teacher signal for one sequence.

    ids [T, K] int64 (0 where masked), logp [T, K] float32 (-inf where masked), mask [T, K] bool,
    log_tail [T] float32.
    """

    ids: np.ndarray
    logp: np.ndarray
    mask: np.ndarray
    log_tail: np.ndarray


@dataclass(frozen=True)
class KeptEntries:
    """A truncated teacher distribution for one sequence, stored flat (CSR by position).

    counts:   [T] number of kept entries per position (0 = no teacher signal, e.g. padding)
    ids:      [N] kept token ids, N = counts.sum(), grouped by position
    logp:     [N] log-probabilities of the kept ids (full softmax from truncation; renormalised
              over the kept set once decoded)
    log_tail: [T] log of the probability mass that truncation dropped (-inf when none)
    """

    counts: np.ndarray
    ids: np.ndarray
    logp: np.ndarray
    log_tail: np.ndarray

    @property
    def num_positions(self) -> int:
        return int(self.counts.shape[0])

    def offsets(self) -> np.ndarray:
        """[T + 1] start offsets of each position's entries in the flat arrays."""
        return np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])

    @classmethod
    def empty(cls, num_positions: int) -> KeptEntries:
        """num_positions padding positions (no teacher signal)."""
        return cls(
            np.zeros(num_positions, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.float32),
            np.full(num_positions, PAD_LOG_TAIL, np.float32),
        )

    def padded(self, seq_len: int) -> KeptEntries:
        """These positions followed by padding positions up to seq_len (the same record if already there)."""
        n = self.num_positions
        if n == seq_len:
            return self
        if n > seq_len:
            raise SchemaError(f"teacher signal for {n} positions does not fit a sequence of {seq_len}")
        return KeptEntries(
            counts=np.concatenate([self.counts, np.zeros(seq_len - n, dtype=self.counts.dtype)]),
            ids=self.ids,
            logp=self.logp,
            log_tail=np.concatenate([self.log_tail, np.full(seq_len - n, PAD_LOG_TAIL, dtype=np.float32)]),
        )

    def head(self, n: int) -> KeptEntries:
        """The first n positions (drops padding: `head(n_tokens)` undoes `padded`)."""
        end = int(self.offsets()[n])
        return KeptEntries(self.counts[:n], self.ids[:end], self.logp[:end], self.log_tail[:n])

    def slots(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(position, slot) of each flat entry in a [T, K] layout: entries in stored order, slots past
        a position's count unused. Raises SchemaError when a position keeps more than K entries."""
        counts = self.counts
        if counts.size and counts.max() > k:
            raise SchemaError(f"a position keeps {int(counts.max())} entries, more than K={k}")
        col = np.arange(self.ids.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(np.arange(counts.shape[0]), counts), col

    def to_dense(self, k: int) -> DenseTeacher:
        """[T, K] ids / logp / mask (the `slots` layout) for one sequence (inspection and tests; the
        trainer writes a whole batch at once, `trainer.teacher_batch.TeacherBatch.from_kept`)."""
        t = self.counts.shape[0]
        row, col = self.slots(k)
        ids = np.zeros((t, k), dtype=np.int64)
        logp = np.full((t, k), -np.inf, dtype=np.float32)
        mask = np.zeros((t, k), dtype=bool)
        ids[row, col] = self.ids
        logp[row, col] = self.logp
        mask[row, col] = True
        return DenseTeacher(ids, logp, mask, self.log_tail.astype(np.float32))
