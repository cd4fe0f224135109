"""Held-out bits per byte: the one metric that compares students with different tokenizers.

Cross-entropy per token depends on what a token is; per byte of text it does not. Every batch
carries `label_bytes` [B, T] (the UTF-8 byte length of each label token, 0 where the label is
ignored; `trainer.student_text`), and the metric divides the summed next-token cross-entropy, in
nats, by ln 2 times the summed bytes. Special tokens (a document separator) have no bytes: their
loss still counts, as it does in per-token CE, so a model is not rewarded for skipping them.

`teacher_bits_per_byte` is the reference printed beside the students': the stored teacher pass's own
log-probability of each actual next token (the dataset's `teacher_next_logp` column) over the same
held-out positions, per byte of those tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics import Metric

IGNORE_INDEX = -100


class BitsPerByte(Metric):
    """Summed next-token cross-entropy (nats) / (ln 2 x summed label bytes), over every rank.

    ``update(output, labels, label_bytes)``: output is the fused head's {"lm_sum", "tokens"} or the
    student's logits [B, T, V] (unfused path)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("sum_nats", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_bytes", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, output, labels: torch.Tensor, label_bytes: torch.Tensor) -> None:
        if isinstance(output, dict):
            nats = output["lm_sum"]
        else:
            nats = torch.nn.functional.cross_entropy(
                output.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
        self.sum_nats += nats.detach().to(self.sum_nats)
        self.total_bytes += label_bytes.masked_fill(labels == IGNORE_INDEX, 0).sum().to(self.total_bytes)

    def compute(self) -> torch.Tensor:
        if float(self.total_bytes) <= 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.sum_nats / (math.log(2.0) * self.total_bytes)


def teacher_bits_per_byte(samples, byte_lengths: np.ndarray) -> float:
    """The teacher's own held-out bits per byte from its stored pass: ``samples`` yields (tokens [T],
    n_tokens, next_logp [T] with NaN where there is no next token); ``byte_lengths`` [V] the byte
    length of each teacher id. Positions t < n_tokens - 1 with a finite next_logp count."""
    nats = 0.0
    total = 0
    for tokens, n, next_logp in samples:
        if n < 2:
            continue
        lp = np.asarray(next_logp[: n - 1], dtype=np.float64)
        ok = np.isfinite(lp)
        nats -= float(lp[ok].sum())
        total += int(byte_lengths[np.asarray(tokens[1:n], dtype=np.int64)][ok].sum())
    return nats / (math.log(2.0) * total) if total else float("nan")
