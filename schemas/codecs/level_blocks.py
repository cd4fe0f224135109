"""The levels block (`teacher_values`): three layouts of each position's descending levels.

Within a position the levels, taken in descending order, are non-increasing: stored as the top
level and the (>= 0) drops, which are mostly 0 or 1 in the long tail. The layouts differ in how
those numbers are modelled:

* `bucketed` (compact2): the top levels under one histogram, the drops under one per rank bucket
  (`schemas.codecs.structure`): the top of a distribution drops by more than its tail.
* `split` (compact3): the same streams, each coded as its high part under its own histogram and
  0-4 uniform low bits, the split chosen per stream by the encoder: the top level spans ~100
  values, whose histogram costs more than its words on a 512-token sample. (The choice uses
  float cost estimates: another CPU's log could pick another split in a near-tie; the bytes
  then differ, the decoded signal does not.)
* `by_level_above` (compact4 on): the top levels split as compact3, then every drop under a model
  chosen by the level above it (a drop cannot exceed it; low levels drop by 0 or 1), coded rank
  by rank so that the decoder knows each context when it needs it (one call per rank, a row of
  counts per drop: `schemas.codecs.contexts`).
"""

from __future__ import annotations

import numpy as np

from schemas.codecs import entropy, varint
from schemas.codecs.contexts import rows_table
from schemas.codecs.numbers import decode_numbers, encode_numbers
from schemas.codecs.segments import segment_cumsum
from schemas.codecs.structure import N_RANK_BUCKETS, drops, structure
from schemas.errors import CodecError

MAX_SHIFT = 4
LEVEL_EDGES = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64])  # drop contexts: the level above it
N_LEVEL_CTX = len(LEVEL_EDGES) + 1


# -- bucketed (compact2) and split (compact3) ---------------------------------------------------
def bucketed_arrays(lv: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """The top levels, then the drops of each rank bucket 1.. (levels sorted descending per position)."""
    drop = drops(lv, counts)
    first, _, rb = structure(counts, drop)
    return [lv[first]] + [drop[~first & (rb == b)] for b in range(1, N_RANK_BUCKETS)]


def split_cost(a: np.ndarray, shift: int) -> float:
    """Estimated bits of a stream coded as (a >> shift) under its own histogram + shift raw bits."""
    hi = a >> shift
    c = np.bincount(hi)
    nz = c[c > 0]
    head = len(varint.encode(entropy.pack_histogram(c)))
    return float(-(nz * np.log2(nz / a.shape[0])).sum()) + shift * a.shape[0] + 8 * head


def split_streams(arrays: list[np.ndarray]) -> list:
    """Each array as its high part under its own histogram and `shift` low bits uniform, the
    shift (0-4) chosen per stream by the encoder and written first (one uniform symbol per stream)."""
    shifts = [min(range(MAX_SHIFT + 1), key=lambda s: (split_cost(a, s), s)) if a.size else 0 for a in arrays]
    out = [(np.asarray(shifts, dtype=np.int64), entropy.uniform(MAX_SHIFT + 1))]
    for a, sh in zip(arrays, shifts):
        out.append((a >> sh, None))
        if sh:
            out.append((a & ((1 << sh) - 1), entropy.uniform(1 << sh)))
    return out


def split_reader(dec: entropy.Decoder):
    """A `next stream` function reading the streams `split_streams` wrote."""
    shifts = iter(dec.next(entropy.uniform(MAX_SHIFT + 1), N_RANK_BUCKETS).tolist())

    def next_stream() -> np.ndarray:
        sh = next(shifts, 0)
        hi = dec.next()
        if not sh:
            return hi
        return (hi << sh) | dec.next(entropy.uniform(1 << sh), hi.shape[0])

    return next_stream


def decode_bucketed(name: str, buf: bytes, counts: np.ndarray, split: bool) -> np.ndarray:
    """Each position's levels, descending, from a bucketed block (split: compact3's streams)."""
    t, n = counts.shape[0], int(counts.sum())
    vals_in = entropy.Decoder(buf, max(n, t, N_RANK_BUCKETS) + 1)
    next_stream = split_reader(vals_in) if split else vals_in.next
    first, _, rb = structure(counts, np.ones(n, dtype=np.int64))
    top = next_stream()
    if top.shape[0] != int(first.sum()):
        raise CodecError(f"{name} codec: {top.shape[0]} top levels for {int(first.sum())} positions: corrupt sample")
    drop = np.zeros(n, dtype=np.int64)
    for b in range(1, N_RANK_BUCKETS):
        sel = ~first & (rb == b)
        got = next_stream()
        if got.shape[0] != int(sel.sum()):
            raise CodecError(f"{name} codec: level stream of the wrong length: corrupt sample")
        drop[sel] = got
    vals_in.finish()
    inc = -drop
    inc[first] = top
    lvl = segment_cumsum(inc, first)
    if n and lvl.min() < 0:
        raise CodecError(f"{name} codec: negative level: corrupt sample")
    return lvl


# -- by the level above (compact4, compact5) -----------------------------------------------------
def level_rounds(counts: np.ndarray) -> list[np.ndarray]:
    """Rank by rank (1, 2, ...): the entries of that rank, over all positions that have one (in
    position order). One sort for all ranks, not a pass over the positions per rank."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return []
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    small = rank.astype(np.uint16) if counts.max() <= 1 << 16 else rank  # uint16: numpy's radix sort
    order = np.argsort(small, kind="stable")  # by rank, then entry (= position) order
    edges = np.cumsum(np.bincount(rank)).tolist()
    return [order[a:b] for a, b in zip(edges[:-1], edges[1:])]  # ranks 1, 2, ... (np.split: 5x slower)


def level_widths(hists: list[np.ndarray]) -> np.ndarray:
    """[contexts] each model's row width: a rank's rows are cut to the widest model among them
    (late ranks sit at low levels, whose drops are small: fewer zeros to copy and quantise)."""
    return np.maximum([h.shape[0] for h in hists], 2)


def by_level_above_streams(lv: np.ndarray, counts: np.ndarray) -> list:
    """Levels, each position descending: the top levels (split), then each drop under the model of
    the level above it, rank by rank. The models' histograms are written once, as numbers,
    before the drops; a context that only ever drops by 0 costs (next to) nothing."""
    first = np.zeros(lv.shape[0], dtype=bool)
    first[(np.cumsum(counts) - counts)[counts > 0]] = True
    drop = drops(lv, counts)
    ctx = np.zeros(lv.shape[0], dtype=np.int64)
    ctx[1:] = np.searchsorted(LEVEL_EDGES, lv[:-1], side="right")
    hists = [np.bincount(drop[~first & (ctx == c)]) for c in range(N_LEVEL_CTX)]
    packed = np.concatenate([entropy.pack_histogram(h) for h in hists]).astype(np.int64)
    table, width = rows_table(hists), level_widths(hists)
    out = split_streams([lv[first]]) + encode_numbers(packed)
    for idx in level_rounds(counts):
        c = ctx[idx]
        out.append((drop[idx], table[c, : width[c].max()]))
    return out


def decode_by_level_above(buf: bytes, counts: np.ndarray, h: float) -> np.ndarray:
    """Each position's levels, descending, from a `by_level_above_streams` block (h: the step)."""
    t, n = counts.shape[0], int(counts.sum())
    # the longest stream: the packed drop histograms, at most 1 + 3 numbers per context and drop
    dec = entropy.Decoder(buf, 3 * n + t + 2 * N_LEVEL_CTX + (1 << MAX_SHIFT))
    shift = int(dec.next(entropy.uniform(MAX_SHIFT + 1), 1)[0])
    top = dec.next()
    if shift:
        top = (top << shift) | dec.next(entropy.uniform(1 << shift), top.shape[0])
    starts = np.cumsum(counts) - counts
    if top.shape[0] != int((counts > 0).sum()):
        raise CodecError(
            f"compact4 codec: {top.shape[0]} top levels for {int((counts > 0).sum())} positions: corrupt sample"
        )
    packed = decode_numbers(dec).astype(np.int64).tolist()  # Python ints for unpack_histogram
    hists, at = [], 0
    try:
        for _ in range(N_LEVEL_CTX):
            hist, at = entropy.unpack_histogram(packed, at, n)
            hists.append(hist)
    except IndexError:
        raise CodecError("compact4 codec: truncated level histograms: corrupt sample") from None
    if at != len(packed):
        raise CodecError("compact4 codec: level histograms do not match: corrupt sample")
    lvl = np.zeros(n, dtype=np.int64)
    lvl[starts[counts > 0]] = top
    if top.size and top.max() > 1.0 / h + 1:  # sqrt(p) <= 1
        raise CodecError("compact4 codec: a level above the scale: corrupt sample")
    # each level's model row and width, built once (levels above the top edge share the last context)
    ctx_of = np.searchsorted(LEVEL_EDGES, np.arange(int(top.max()) + 1 if top.size else 1), side="right")
    by_level, width = rows_table(hists).astype(np.float64)[ctx_of], level_widths(hists)[ctx_of]
    for idx in level_rounds(counts):
        above = lvl[idx - 1]
        lvl[idx] = above - dec.rows(by_level[above, : width[above].max()])
    dec.finish()
    if n and lvl.min() < 0:
        raise CodecError("compact4 codec: negative level: corrupt sample")
    return lvl
