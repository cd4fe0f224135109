"""`compact2`: the teacher signal at about 1.2 bytes per kept entry, codec KL <= 1e-3 nats/token.

Three ideas, each measured in bench/codec against the alternatives:

* Values are quantised for the KL they cost. KL(p || q) ~ 2 * sum (sqrt q - sqrt p)^2 for small
  errors, so a uniform step h on sqrt(p) (p under the full teacher softmax) costs about h^2 / 6
  nats per kept entry whatever the entry's size: low-probability entries get coarse steps in the
  log domain, the top ones fine steps. Level L = floor(sqrt(p) / h), decoded at (L + 1/2) * h,
  then renormalised over the kept set. Within a position the levels, taken in descending order,
  are non-increasing: stored as the top level and the (>= 0) drops, each rank bucket under its
  own model.
* Ids are coded against a per-sample dictionary (the distinct kept ids of the sequence, sorted
  by how many positions keep them): kept sets of one sequence share most of their ids. An entry
  whose level differs from its predecessor's is coded as its dictionary index under the
  dictionary's frequencies; entries tied at one level (most of the long low-probability tail) are
  a set, coded as gaps between ascending dictionary indices, so their order costs nothing.
* Every stream is entropy-coded by constriction's ANS coder under the stream's own histogram
  (schemas.entropy): samples stay self-contained and decode with a handful of vectorised calls.

Columns: teacher_values = levels block, teacher_ids = dictionary + id block, teacher_tail =
log tail mass quantised to `tail_step` nats (0 = no tail) in its own block. Decoded ids are
ascending within each position, like the other codecs. Any vocabulary up to 2^32.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas import entropy
from schemas.codec import Decoded, renormalise
from schemas.errors import CodecError
from schemas.truncation import Truncated

# Rank buckets: 0 (the top level itself), then the drops at rank 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+.
_RANK_EDGES = np.array([1, 2, 4, 8, 16, 32, 64])
_N_RANK_BUCKETS = len(_RANK_EDGES) + 1
_COUNT_EDGES = np.array([4, 8, 16, 24, 32, 48, 64, 96])  # level contexts of common ids: kept per position
_N_COMMON_CTX = len(_COUNT_EDGES) + 1
_PIECE_BITS = 12  # extra bits of a number are coded in uniform pieces of at most this many bits


def _rank_bucket(rank: np.ndarray) -> np.ndarray:
    return np.searchsorted(_RANK_EDGES, rank, side="right")


def _classes(values: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
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
    return cls, _extra_pieces(v, cls)


def _piece_layout(max_class: int):
    """For each class c >= 2: the (shift, width) pieces of its c - 1 extra bits."""
    out = {}
    for c in range(2, max_class + 1):
        bits, pieces, shift = c - 1, [], 0
        while shift < bits:
            w = min(_PIECE_BITS, bits - shift)
            pieces.append((shift, w))
            shift += w
        out[c] = pieces
    return out


def _extra_pieces(v: np.ndarray, cls: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    streams = []
    max_c = int(cls.max()) if cls.size else 0
    for c, pieces in _piece_layout(max_c).items():
        sel = v[cls == c]
        for shift, w in pieces:
            sym = ((sel >> np.uint64(shift)) & np.uint64((1 << w) - 1)).astype(np.int64)
            streams.append((sym, np.ones(1 << w, dtype=np.int64)))
    return streams


def _encode_numbers(values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Streams for a list of non-negative integers: classes (own histogram), then extra pieces."""
    cls, extras = _classes(values)
    return [(cls, None)] + extras


def _decode_numbers(dec: entropy.Decoder, n: int | None = None) -> np.ndarray:
    cls = dec.next(None)
    n = cls.shape[0] if n is None else n
    if cls.shape[0] != n:
        raise CodecError(f"compact2 codec: {cls.shape[0]} numbers stored, expected {n}: corrupt sample")
    v = np.zeros(n, dtype=np.uint64)
    nz = cls > 0
    v[nz] = np.left_shift(np.uint64(1), (cls[nz] - 1).astype(np.uint64))
    max_c = int(cls.max()) if cls.size else 0
    for c, pieces in _piece_layout(max_c).items():
        sel = cls == c
        for shift, w in pieces:
            sym = dec.next(np.ones(1 << w, dtype=np.int64), int(sel.sum()))
            v[sel] |= sym.astype(np.uint64) << np.uint64(shift)
    return v


@dataclass(frozen=True)
class _Layout:
    """What the decoder can rebuild before the entries: the sample's dictionary and its split."""

    uniq: np.ndarray  # [D] distinct kept ids, ascending
    dcnt: np.ndarray  # [D] positions keeping each
    by_freq: np.ndarray  # [D] dictionary order: most often kept first, ties by id
    n_common: int  # the first n_common of that order are coded by inclusion

    @classmethod
    def build(cls, uniq: np.ndarray, dcnt: np.ndarray, n_signal: int, common_share: float) -> "_Layout":
        by_freq = np.lexsort((uniq, -dcnt))
        threshold = max(2, int(np.ceil(common_share * n_signal)))
        return cls(uniq, dcnt, by_freq, int((dcnt >= threshold).sum()))

    def freq_counts(self) -> np.ndarray:
        return self.dcnt[self.by_freq]


def _common_groups(fc: np.ndarray, n_signal: int):
    """Common dictionary entries grouped by how many positions keep them: one Bernoulli model
    (n_signal - count, count) per group, which the decoder rebuilds from the dictionary."""
    values = np.unique(fc)
    return [(v, np.flatnonzero(fc == v)) for v in values]


def _common_level_ctx(count_of_entry: np.ndarray) -> np.ndarray:
    """Context of a common entry's level: how many entries its position keeps (a position that
    keeps many is uncertain, and all its levels are low)."""
    return np.searchsorted(_COUNT_EDGES, count_of_entry, side="right")


@dataclass(frozen=True)
class Compact2Codec:
    sqrt_step: float = 0.0085
    tail_step: float = 1.0 / 16.0
    common_share: float = 1.0 / 32.0
    name: str = field(default="compact2", init=False)

    def __post_init__(self):
        if not (0.0 < float(self.sqrt_step) <= 0.25):
            raise CodecError(f"compact2 codec sqrt_step must be in (0, 0.25], got {self.sqrt_step!r}")
        if not (0.0 < float(self.tail_step) <= 1.0):
            raise CodecError(f"compact2 codec tail_step must be in (0, 1] nats, got {self.tail_step!r}")
        if not (0.0 < float(self.common_share) <= 1.0):
            raise CodecError(f"compact2 codec common_share must be in (0, 1], got {self.common_share!r}")

    def params(self) -> dict:
        return {"sqrt_step": float(self.sqrt_step), "tail_step": float(self.tail_step),
                "common_share": float(self.common_share)}

    def kl_bound(self, kept_per_token: float) -> float:
        """Expected codec KL (nats/token) at this many kept entries per token: h^2 / 6 each."""
        return kept_per_token * float(self.sqrt_step) ** 2 / 6.0

    # -- encode --------------------------------------------------------------------------------
    def encode(self, tr: Truncated) -> dict[str, bytes]:
        counts = np.asarray(tr.counts, dtype=np.int64)
        ids = np.asarray(tr.ids, dtype=np.int64)
        t, n = counts.shape[0], ids.shape[0]
        if n and (ids.min() < 0 or ids.max() >= 1 << 32):
            raise CodecError("compact2 codec: ids must be in [0, 2^32)")
        pos = np.repeat(np.arange(t), counts)
        lvl = self._levels(tr.logp)
        uniq, inv, dcnt = np.unique(ids, return_inverse=True, return_counts=True)
        sig = np.flatnonzero(counts > 0)
        lay = _Layout.build(uniq, dcnt, sig.shape[0], self.common_share)
        rank_of = np.empty(uniq.shape[0], dtype=np.int64)
        rank_of[lay.by_freq] = np.arange(uniq.shape[0])
        x = rank_of[inv.reshape(-1)]
        fc = lay.freq_counts()
        id_streams = _encode_numbers(np.diff(uniq, prepend=-1) - 1) + _encode_numbers(dcnt - 1)
        level_streams = []
        # common ids: one inclusion bit per (position with signal, common id), then their levels
        m = lay.n_common
        com = x < m
        bitmap = np.zeros((t, m), dtype=np.int64)
        bitmap[pos[com], x[com]] = 1
        bitmap = bitmap[sig]
        for v, cols in _common_groups(fc[:m], sig.shape[0]):
            id_streams.append((bitmap[:, cols].T.reshape(-1), np.array([sig.shape[0] - v, v])))
        o = np.lexsort((x[com], pos[com]))
        ctx = _common_level_ctx(counts[pos[com][o]])
        level_streams += [(lvl[com][o][ctx == c], None) for c in range(_N_COMMON_CTX)]
        # the other ids, by level descending: top level + drops; ties as ascending index gaps
        rare = ~com
        rc = np.bincount(pos[rare], minlength=t)
        lr, xr, pr = lvl[rare], x[rare] - m, pos[rare]
        o = np.lexsort((xr, -lr, pr))
        lr, xr = lr[o], xr[o]
        first, tied, rb = _rare_structure(rc, _drops(lr, rc))
        drop = _drops(lr, rc)
        gap = np.zeros(lr.shape[0], dtype=np.int64)
        gap[1:] = xr[1:] - xr[:-1] - 1
        level_streams += [(lr[first], None)] + [(drop[~first & (rb == b)], None) for b in range(1, _N_RANK_BUCKETS)]
        id_streams += [(xr[~tied], fc[m:])] + _encode_numbers(gap[tied])
        return {
            "teacher_ids": entropy.encode(id_streams),
            "teacher_values": entropy.encode(level_streams),
            "teacher_tail": entropy.encode([(self._tail_levels(tr.log_tail), None)]),
        }

    def _levels(self, logp: np.ndarray) -> np.ndarray:
        return np.floor(np.sqrt(np.exp(np.asarray(logp, dtype=np.float64))) / float(self.sqrt_step)).astype(np.int64)

    def _tail_levels(self, log_tail: np.ndarray) -> np.ndarray:
        lt = np.asarray(log_tail, dtype=np.float64)
        out = np.zeros(lt.shape[0], dtype=np.int64)
        fin = np.isfinite(lt)
        if (lt[fin] > 0).any():
            raise CodecError("compact2 codec: a tail log-mass is above 0")
        out[fin] = 1 + np.rint(-lt[fin] / self.tail_step).clip(0, 64 / self.tail_step).astype(np.int64)
        return out

    # -- decode --------------------------------------------------------------------------------
    def decode(self, counts: np.ndarray, cols: dict[str, bytes]) -> Decoded:
        counts = np.asarray(counts, dtype=np.int64)
        t, n = counts.shape[0], int(counts.sum())
        sig = np.flatnonzero(counts > 0)
        ids_in = entropy.Decoder(cols["teacher_ids"])
        vals_in = entropy.Decoder(cols["teacher_values"])
        uniq = np.cumsum(_decode_numbers(ids_in).astype(np.int64) + 1) - 1
        d = uniq.shape[0]
        dcnt = _decode_numbers(ids_in, d).astype(np.int64) + 1
        if (n and (d == 0 or uniq[-1] >= 1 << 32)) or int(dcnt.sum()) != n:
            raise CodecError("compact2 codec: dictionary does not match the counts: corrupt sample")
        lay = _Layout.build(uniq, dcnt, sig.shape[0], self.common_share)
        fc, m = lay.freq_counts(), lay.n_common
        bitmap = np.zeros((sig.shape[0], m), dtype=np.int64)
        for v, cidx in _common_groups(fc[:m], sig.shape[0]):
            bits = ids_in.next(np.array([sig.shape[0] - v, v]), sig.shape[0] * cidx.shape[0])
            bitmap[:, cidx] = bits.reshape(cidx.shape[0], sig.shape[0]).T
        cpos_s, cx = np.nonzero(bitmap)  # (position, common index) ascending
        cpos = sig[cpos_s]
        ctx = _common_level_ctx(counts[cpos])
        clvl = np.zeros(cx.shape[0], dtype=np.int64)
        for c in range(_N_COMMON_CTX):
            sel = ctx == c
            got = vals_in.next()
            if got.shape[0] != int(sel.sum()):
                raise CodecError("compact2 codec: common level stream of the wrong length: corrupt sample")
            clvl[sel] = got
        rc = counts - np.bincount(cpos, minlength=t)
        if (rc < 0).any():
            raise CodecError("compact2 codec: inclusion bits do not match the counts: corrupt sample")
        nr = int(rc.sum())
        starts = np.cumsum(rc) - rc
        rank = np.arange(nr) - np.repeat(starts, rc)
        first = rank == 0
        rb = _rank_bucket(rank)
        drop = np.zeros(nr, dtype=np.int64)
        top = vals_in.next()
        if top.shape[0] != int(first.sum()):
            raise CodecError(f"compact2 codec: {top.shape[0]} top levels for {int(first.sum())} positions: corrupt sample")
        for b in range(1, _N_RANK_BUCKETS):
            sel = ~first & (rb == b)
            got = vals_in.next()
            if got.shape[0] != int(sel.sum()):
                raise CodecError("compact2 codec: level stream of the wrong length: corrupt sample")
            drop[sel] = got
        vals_in.finish()
        inc = -drop
        inc[first] = top
        rlvl = _segment_cumsum(inc, first)
        if nr and rlvl.min() < 0:
            raise CodecError("compact2 codec: negative level: corrupt sample")
        tied = ~first & (drop == 0)
        n_tied = int(tied.sum())
        fresh = ids_in.next(fc[m:], nr - n_tied)
        gaps = _decode_numbers(ids_in, n_tied).astype(np.int64)
        ids_in.finish()
        inc = np.zeros(nr, dtype=np.int64)
        inc[~tied] = fresh
        inc[tied] = gaps + 1
        xr = _segment_cumsum(inc, ~tied) + m
        if nr and xr.max() >= d:
            raise CodecError("compact2 codec: dictionary index out of range: corrupt sample")
        order = lay.by_freq
        ids = np.concatenate([uniq[order[cx]], uniq[order[xr]]])
        lvl = np.concatenate([clvl, rlvl])
        pos = np.concatenate([cpos, np.repeat(np.arange(t), rc)])
        o = np.argsort(pos * (1 << 32) + ids, kind="stable")
        ids, lvl = ids[o], lvl[o]
        logq = (2.0 * np.log((lvl + 0.5) * float(self.sqrt_step))).astype(np.float32)
        return Decoded(counts, ids, renormalise(logq, counts), self._tail_decode(cols["teacher_tail"], t))

    def _tail_decode(self, buf: bytes, t: int) -> np.ndarray:
        (lv,) = entropy.decode(buf, 1)
        if lv.shape[0] != t:
            raise CodecError(f"compact2 codec: {lv.shape[0]} tail values for {t} positions: corrupt sample")
        out = np.full(t, -np.inf, dtype=np.float32)
        fin = lv > 0
        out[fin] = -(lv[fin] - 1) * self.tail_step
        return out


def _drops(lvl: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Level drop from the previous entry of the same position (0 for each position's first)."""
    drop = np.zeros(lvl.shape[0], dtype=np.int64)
    drop[1:] = lvl[:-1] - lvl[1:]
    starts = (np.cumsum(counts) - counts)[counts > 0]
    drop[starts] = 0
    return drop


def _rare_structure(counts: np.ndarray, drop: np.ndarray):
    """(first entry of its position, tied with its predecessor, rank bucket) per entry."""
    starts = np.cumsum(counts) - counts
    rank = np.arange(drop.shape[0]) - np.repeat(starts, counts)
    first = rank == 0
    return first, ~first & (drop == 0), _rank_bucket(rank)


def _segment_cumsum(inc: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Running sum of inc restarted wherever start is True (start[0] must be True if inc is non-empty)."""
    if inc.shape[0] == 0:
        return inc.copy()
    c = np.cumsum(inc)
    seg = np.cumsum(start) - 1
    base = (c - inc)[start]
    return c - base[seg]
