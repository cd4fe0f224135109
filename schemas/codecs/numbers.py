"""Non-negative integers of any size as entropy-coded streams: Elias-gamma classes + raw pieces.

Gaps between ids, dictionary gaps and packed histograms span from 0 to 2^32 with most values
small. Each number is split into its class (its bit length, coded under the stream's own
histogram: a handful of symbols, so the histogram is cheap) and the bits below its leading one,
coded uniformly in pieces of at most `PIECE_BITS` bits (those bits are close to uniform, so a
model would buy nothing). A small number costs its class's entropy, a large one its length.

Also `count_classes`: how often something occurs, to within a factor of two, the cheap summary
the dictionary stores instead of exact counts.
"""

from __future__ import annotations

import functools

import numpy as np

from schemas.codecs import entropy
from schemas.errors import CodecError

PIECE_BITS = 12  # extra bits of a number are coded in uniform pieces of at most this many bits


def classes(values: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Elias-gamma split of non-negative integers: class = bit length (entropy-coded), and the
    bits below the leading one as uniform pieces [(symbols, alphabet-sized ones)]."""
    v = np.asarray(values, dtype=np.uint64)
    cls = np.zeros(v.shape[0], dtype=np.int64)
    nz = v > 0
    cls[nz] = np.floor(np.log2(v[nz].astype(np.float64))).astype(np.int64) + 1
    # float log2 can be off by one near powers of two for large values: fix exactly
    over = nz & (np.left_shift(np.uint64(1), (cls - 1).clip(0).astype(np.uint64)) > v)
    cls[over] -= 1
    under = nz & (cls < 64) & (np.left_shift(np.uint64(1), cls.clip(0, 63).astype(np.uint64)) <= v)
    cls[under] += 1
    return cls, extra_pieces(v, cls)


@functools.cache
def piece_layout(max_class: int) -> dict:
    """For each class c >= 2: the (shift, width) pieces of its c - 1 extra bits (built once per
    size: every number stream of every sample asks for one). Read-only."""
    out = {}
    for c in range(2, max_class + 1):
        bits, pieces, shift = c - 1, [], 0
        while shift < bits:
            w = min(PIECE_BITS, bits - shift)
            pieces.append((shift, w))
            shift += w
        out[c] = tuple(pieces)
    return out


def extra_pieces(v: np.ndarray, cls: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bits below each number's leading one, class by class, as uniform streams."""
    streams = []
    order = np.argsort(cls.astype(np.uint8), kind="stable")  # classes <= 64: radix sort
    ends = np.searchsorted(cls[order], np.arange(int(cls.max()) + 2 if cls.size else 1), side="left")
    for c, pieces in piece_layout(int(cls.max()) if cls.size else 0).items():
        sel = v[order[ends[c] : ends[c + 1]]]
        for shift, w in pieces:
            sym = ((sel >> np.uint64(shift)) & np.uint64((1 << w) - 1)).astype(np.int64)
            streams.append((sym, entropy.uniform(1 << w)))
    return streams


def encode_numbers(values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Streams for a list of non-negative integers: classes (own histogram), then extra pieces."""
    cls, extras = classes(values)
    return [(cls, None)] + extras


def decode_numbers(dec: entropy.Decoder, n: int | None = None) -> np.ndarray:
    """The numbers `encode_numbers` wrote (n: how many, if the caller knows)."""
    cls = dec.next(None)
    n = cls.shape[0] if n is None else n
    if cls.shape[0] != n:
        raise CodecError(f"compact2 codec: {cls.shape[0]} numbers stored, expected {n}: corrupt sample")
    if not n:
        return np.zeros(0, dtype=np.uint64)
    top = int(cls.max())
    if top > 33:  # nothing coded here exceeds 2^32
        raise CodecError("compact2 codec: a number of more than 33 bits: corrupt sample")
    order = np.argsort(cls.astype(np.uint8), kind="stable")  # the extras come class by class, in entry order
    ends = np.searchsorted(cls[order], np.arange(top + 2), side="left").tolist()
    # in class order: the leading one, then each piece's bits in place (slices, not scatters)
    sv = np.zeros(n, dtype=np.uint64)
    for c, pieces in piece_layout(top).items():
        a, b = ends[c], ends[c + 1]
        sv[a:b] = np.uint64(1 << (c - 1))
        for shift, w in pieces:
            sym = dec.next(entropy.uniform(1 << w), b - a)
            sv[a:b] |= sym.astype(np.uint64) << np.uint64(shift)
    if top >= 1:
        sv[ends[1] : ends[2]] = 1
    v = np.empty(n, dtype=np.uint64)
    v[order] = sv
    return v


def count_classes(dcnt: np.ndarray) -> np.ndarray:
    """How often a dictionary id is kept, to within a factor of two: floor(log2(count)), exact
    in integers. Stored instead of the count (cheaper; the id model barely notices)."""
    c = np.asarray(dcnt, dtype=np.int64)
    out = np.zeros(c.shape[0], dtype=np.int64)
    for b in range(1, 63):
        hit = c >= (1 << b)
        if not hit.any():
            break
        out[hit] = b
    return out
