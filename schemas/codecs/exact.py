"""`exact`: ids as little-endian uint32, log-probs as float32 (or float16): the reference format.

Nothing is modelled: 8 (or 6) bytes per kept entry plus a float32 tail per position. Every other
format is measured against what this one decodes (`segments.lossless_decoded`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from schemas.codecs.columns import check_lengths, frombuffer
from schemas.codecs.segments import lossless_decoded, renormalise
from schemas.errors import CodecError
from schemas.kept import KeptEntries


@dataclass(frozen=True)
class ExactCodec:
    value_dtype: str = "float32"
    name: str = field(default="exact", init=False)
    needs_tokens: ClassVar[bool] = False
    needs_prime: ClassVar[bool] = False
    stored_defaults: ClassVar[dict] = {}

    def __post_init__(self):
        if self.value_dtype not in ("float32", "float16"):
            raise CodecError(f"exact codec value_dtype must be float32 or float16, got {self.value_dtype!r}")

    def params(self) -> dict:
        return {"value_dtype": self.value_dtype}

    def kl_design(self) -> float:
        """Design codec KL, nats/token: none for float32; float16 rounds log-probs in [-16, 0] to
        at most 2^-7, about ulp^2 / 24."""
        return 0.0 if self.value_dtype == "float32" else 2.0**-14 / 24

    def kl_bound(self, max_kept: int | None = None) -> float:
        """Guaranteed codec KL, nats/token, averaged over a sample's positions with signal, for
        samples keeping at most `max_kept` entries per position (default: any, 2^32). float32: none
        (beyond float32 rounding). float16 stores l = ln r with relative error e <= 2^-11, so by
        KL(r || q) <= sum r (e^d - 1 - d), d = e l: each entry costs at most
        2^-23 max_r r^(1 - 2^-11) ln^2 r = 2^-23 * 0.542 (at ln r ~ -2)."""
        if self.value_dtype == "float32":
            return 0.0
        return 2.0**-23 * 0.542 * float(max_kept or 2**32)

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        ref = lossless_decoded(tr)
        return {
            "teacher_ids": ref.ids.astype("<u4").tobytes(),
            "teacher_values": ref.logp.astype("<" + np.dtype(self.value_dtype).str[1:]).tobytes(),
            "teacher_tail": tr.log_tail.astype("<f4").tobytes(),
        }

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        n = int(counts.sum())
        ids = frombuffer(self.name, cols["teacher_ids"], "<u4").astype(np.int64)
        vals = frombuffer(self.name, cols["teacher_values"], np.dtype(self.value_dtype).newbyteorder("<"))
        tail = frombuffer(self.name, cols["teacher_tail"], "<f4")
        check_lengths(self.name, n, counts.shape[0], ids.shape[0], vals.shape[0], tail.shape[0])
        return KeptEntries(counts, ids, renormalise(vals.astype(np.float32), counts), tail.astype(np.float32))
