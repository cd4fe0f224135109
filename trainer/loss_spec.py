"""`LossSpec`: the KD recipe a loss computes (kind, support, tau, tail, tau^2, chunk size, beta),
checked once on construction so the loss code can trust it. Alpha changes every step and is
passed beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.kd_rows import SUPPORTS

KD_KINDS = ("forward_kl", "reverse_kl", "soft_ce", "mse", "jsd")


@dataclass(frozen=True)
class LossSpec:
    """The KD recipe: what the loss computes (alpha, which changes every step, is passed beside it).

    kind: forward_kl | reverse_kl | soft_ce | mse | jsd; support: full | kept | split (the student side,
    see `kd_loss`); tau: temperature (> 0, finite); tail: a tail bucket (support full only);
    tau_squared: scale the KD term by tau^2; chunk_size: rows per block (None: as large as the 32 MB
    block cap allows; results do not depend on it); beta: kind jsd only, in [0, 1] (None: 0.5; set
    for another kind: refused). Checked on construction (ValueError naming the setting).
    """

    kind: str = "forward_kl"
    support: str = "full"
    tau: float = 1.0
    tail: bool = False
    tau_squared: bool = False
    chunk_size: int | None = None
    beta: float | None = None

    def __post_init__(self):
        if self.kind not in KD_KINDS:
            raise ValueError(f"kind must be one of {KD_KINDS}, got {self.kind!r}")
        b = self.beta
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not (0.0 <= b <= 1.0)):
            raise ValueError(f"beta must be a number in [0, 1], got {b!r}")
        if b is not None and self.kind != "jsd":
            raise ValueError(f"beta only applies to kind 'jsd', got kind {self.kind!r} with beta {b!r}")
        if self.kind == "jsd":
            object.__setattr__(self, "beta", 0.5 if b is None else float(b))
        if self.support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {self.support!r}")
        if self.tail and self.support != "full":
            raise ValueError(f"tail=True (a tail bucket) only applies to support 'full', got support {self.support!r}")
        tau = self.tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (tau > 0) or math.isinf(tau):
            raise ValueError(f"tau must be a positive finite number, got {tau!r}")
        c = self.chunk_size
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {c!r}")
        object.__setattr__(self, "tau", float(tau))
        object.__setattr__(self, "tail", bool(self.tail))
        object.__setattr__(self, "tau_squared", bool(self.tau_squared))

    @property
    def row_kind(self) -> str:
        """The formulas `trainer.kd_rows` evaluates: jsd at beta 0 / 1 IS forward_kl / reverse_kl (the
        mixture form tends to 0 there), so those endpoints run exactly the forward_kl / reverse_kl code."""
        if self.kind == "jsd" and self.beta in (0.0, 1.0):
            return "forward_kl" if self.beta == 0.0 else "reverse_kl"
        return self.kind
