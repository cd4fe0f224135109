"""`compact` (v1): varint id gaps and one byte per value on the log scale, left to zstd.

Per position the ids are sorted ascending and delta-coded as LEB128 varints (the first id
absolute, then gap - 1: small gaps between the kept ids of one distribution take one byte);
values are quantised on the log scale relative to the position's top entry, one byte each
(q = round((max - logp) / step), clipped at 255); the tail log-mass as float16. Zstd over the MDS
shard then entropy-codes the small gaps and the skewed q values. Quantisation error in the log
domain with step s costs about s**2 / 24 nats of KL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from schemas.codecs import varint
from schemas.codecs.columns import check_lengths, frombuffer
from schemas.codecs.segments import renormalise, segment_max, sorted_by_id
from schemas.errors import CodecError
from schemas.kept import KeptEntries


@dataclass(frozen=True)
class CompactCodec:
    step: float = 1.0 / 16.0
    name: str = field(default="compact", init=False)
    needs_tokens: ClassVar[bool] = False
    needs_prime: ClassVar[bool] = False
    stored_defaults: ClassVar[dict] = {}

    def __post_init__(self):
        if not (0.0 < float(self.step) <= 1.0):
            raise CodecError(f"compact codec step must be in (0, 1] nats, got {self.step!r}")

    def params(self) -> dict:
        return {"step": float(self.step)}

    def kl_design(self) -> float:
        """Design codec KL, nats/token: log-domain rounding with step s costs about s^2 / 24."""
        return float(self.step) ** 2 / 24

    def kl_bound(self, max_kept: int | None = None) -> float:
        """Guaranteed codec KL, nats/token, averaged over a sample's positions with signal, for
        samples keeping at most `max_kept` entries per position (default: any, 2^32): s^2 / 8 +
        (max_kept - 1) e^(-255 s). An entry within 255 steps of the top moves by d in [-s/2, s/2]
        in the log domain (Hoeffding: ln E e^d <= E d + s^2 / 8); one clipped at 255 steps keeps at
        most e^(-255 s) of the top's mass, which renormalisation takes from the others."""
        s = float(self.step)
        return s * s / 8 + (float(max_kept or 2**32) - 1) * float(np.exp(-255 * s))

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        counts = np.asarray(tr.counts, dtype=np.int64)
        ids, logp = sorted_by_id(tr)
        starts = np.cumsum(counts) - counts
        gaps = np.empty_like(ids)
        if ids.shape[0]:
            gaps[0] = ids[0]
            gaps[1:] = ids[1:] - ids[:-1] - 1
            nz = counts > 0
            gaps[starts[nz]] = ids[starts[nz]]  # each position's first id is absolute
        top = np.repeat(segment_max(logp, counts), counts)
        q = np.clip(np.rint((top - logp.astype(np.float64)) / self.step), 0, 255).astype(np.uint8)
        return {
            "teacher_ids": varint.encode(gaps.astype(np.uint64)),
            "teacher_values": q.tobytes(),
            "teacher_tail": tr.log_tail.astype("<f2").tobytes(),
        }

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        n = int(counts.sum())
        gaps = varint.decode(cols["teacher_ids"], n).astype(np.int64)
        q = np.frombuffer(cols["teacher_values"], dtype=np.uint8)
        tail = frombuffer(self.name, cols["teacher_tail"], "<f2")
        check_lengths(self.name, n, counts.shape[0], gaps.shape[0], q.shape[0], tail.shape[0])
        # ids = running sum of (gap + 1) restarted at each position's first entry
        starts = np.cumsum(counts) - counts
        inc = gaps + 1
        nz = counts > 0
        inc[starts[nz]] = gaps[starts[nz]]
        csum = np.cumsum(inc)
        base = np.repeat(csum[starts[nz]] - inc[starts[nz]], counts[nz])
        ids = csum - base
        rel = -q.astype(np.float32) * np.float32(self.step)
        return KeptEntries(counts, ids, renormalise(rel, counts), tail.astype(np.float32))
