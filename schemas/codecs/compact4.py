"""`compact4` (the default): compact3 plus the kept set where the same text was seen before.

Composed of: compact2's sqrt(p) levels (`quantiser`), stored `by_level_above` (each drop under a
model chosen by the level above it: `level_blocks`); in the id block the dictionary against the
sample's tokens (`dictionary_basis.TokenBasis`), the next-token hint (`hint`), the *repeats*
from each position's predictor, the last earlier position with the same tokens (`repeats`: 29 %
of all kept entries on real text, ~6 bits each instead of ~8), and the other ids by dictionary
index; the tail against its prediction (`tail`). The coder is `repeat_coder`, shared with
compact5. It decodes to exactly compact2's signal (ids, log-probs, tail).

Its default `kl_target` is 8e-4 (compact2/3: 7.5e-4): measured codec KL 9.0e-4 / 8.9e-4 on real
text, 10 % under issue 13's 1e-3, guaranteed <= 4.1e-3 (`quantiser.kl_bound`). Measured
(bench/codec): 1.365 / 1.264 B per kept entry at top-0.95-50 / -100 on 512-token samples,
1.298 / 1.209 on one 2048-token sample (compact3 at 7.5e-4: 1.426 / 1.328, 1.390 / 1.303).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from schemas.codecs import quantiser, repeat_coder
from schemas.codecs.dictionary_basis import TokenBasis
from schemas.kept import KeptEntries

_BASIS = TokenBasis()


@dataclass(frozen=True)
class Compact4Codec(quantiser.SqrtQuantised):
    # measured codec KL ~1.12x of it on real text at top-0.95-50/-100: 9.0e-4, 10 % under the 1e-3
    kl_target: float = 8e-4
    tail_step: float = 1.0 / 16.0
    mass_floor: float = 0.75  # as compact2's
    name: str = field(default="compact4", init=False)
    needs_tokens: ClassVar[bool] = True
    needs_prime: ClassVar[bool] = False
    stored_defaults: ClassVar[dict] = {"mass_floor": 0.0}

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        return repeat_coder.encode(self, tr, tokens, None, _BASIS)

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        return repeat_coder.decode(self, counts, cols, tokens, None, _BASIS)
