"""`compact2`: the teacher signal at ~1.3-1.4 bytes per kept entry at codec KL < 1e-3 nats/token.

Three ideas, each measured in bench/codec against the alternatives:

* Values are quantised for the KL they cost. KL(p || q) ~ 2 * sum (sqrt q - sqrt p)^2 for small
  errors, so a uniform step h on sqrt(p) costs about h^2 / 6 nats per kept entry whatever the
  entry's size: low-probability entries get coarse steps in the log domain, the top ones fine
  steps. Level L = floor(sqrt(p) / h), decoded at (L + 1/2) * h, then renormalised over the kept
  set; p is the full softmax's probability, scaled up where the kept set holds less than 3/4 of
  the mass (`sqrt_levels`: what makes `kl_bound` a guarantee). Within a position the levels,
  taken in descending order, are non-increasing: stored as the top level and the (>= 0) drops,
  each rank bucket under its own model.
* Ids are coded against a per-sample dictionary: the distinct kept ids of the sequence, with how
  often each is kept to within a factor of two (its class), ordered most often kept first. An
  entry whose level differs from its predecessor's is coded as its class (one model per rank
  bucket: the top of a distribution keeps rarer ids than its tail) and its index in the class;
  entries tied at one level (most of the long low-probability tail) are a set, coded as gaps
  between ascending dictionary indices, so their order costs nothing.
* Every stream is entropy-coded by constriction's ANS coder under the stream's own histogram
  (schemas.entropy): samples stay self-contained and decode with a handful of vectorised calls.

Columns: teacher_values = levels block, teacher_ids = dictionary + id block, teacher_tail =
log tail mass quantised to `tail_step` nats (0 = no tail) in its own block. KeptEntries ids are
ascending within each position, like the other codecs. Any vocabulary up to 2^32. The step h
comes from `kl_target` and the counts, so the decoder needs nothing else. Deterministic: the
same log-probs give the same bytes on a machine (a level boundary could round differently under
another CPU's exp, as the teacher's logits themselves do), and the decoder works from integers
only (histograms, counts; h by IEEE-exact sqrt), so any machine decodes the same ids and levels.

Measured, and dropped (bench/codec history): coding the most often kept ids by inclusion (one
bit per position) saves on ids what their levels then cost unordered; contexts by the
position's count, or class steps inside tied sets, cost more in histograms than they save.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from schemas import entropy
from schemas.codec import renormalise, segment_logsumexp
from schemas.errors import CodecError
from schemas.kept import KeptEntries

# max over one entry of the generalised KL its level costs, in units of h^2 (`sqrt_levels`)
WORST_ENTRY_KL = 2 * np.log(2) - 0.75

# Rank buckets: 0 (the top level itself), then the drops at rank 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+.
_RANK_EDGES = np.array([1, 2, 4, 8, 16, 32, 64])
_N_RANK_BUCKETS = len(_RANK_EDGES) + 1
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


@functools.lru_cache(maxsize=None)
def _piece_layout(max_class: int) -> dict:
    """For each class c >= 2: the (shift, width) pieces of its c - 1 extra bits (built once per
    size: every number stream of every sample asks for one). Read-only."""
    out = {}
    for c in range(2, max_class + 1):
        bits, pieces, shift = c - 1, [], 0
        while shift < bits:
            w = min(_PIECE_BITS, bits - shift)
            pieces.append((shift, w))
            shift += w
        out[c] = tuple(pieces)
    return out


def _extra_pieces(v: np.ndarray, cls: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    streams = []
    order = np.argsort(cls.astype(np.uint8), kind="stable")  # classes <= 64: radix sort
    ends = np.searchsorted(cls[order], np.arange(int(cls.max()) + 2 if cls.size else 1), side="left")
    for c, pieces in _piece_layout(int(cls.max()) if cls.size else 0).items():
        sel = v[order[ends[c] : ends[c + 1]]]
        for shift, w in pieces:
            sym = ((sel >> np.uint64(shift)) & np.uint64((1 << w) - 1)).astype(np.int64)
            streams.append((sym, entropy.uniform(1 << w)))
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
    if not n:
        return np.zeros(0, dtype=np.uint64)
    top = int(cls.max())
    if top > 33:  # nothing coded here exceeds 2^32
        raise CodecError("compact2 codec: a number of more than 33 bits: corrupt sample")
    order = np.argsort(cls.astype(np.uint8), kind="stable")  # the extras come class by class, in entry order
    ends = np.searchsorted(cls[order], np.arange(top + 2), side="left").tolist()
    # in class order: the leading one, then each piece's bits in place (slices, not scatters)
    sv = np.zeros(n, dtype=np.uint64)
    for c, pieces in _piece_layout(top).items():
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


def _count_classes(dcnt: np.ndarray) -> np.ndarray:
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


def _dictionary_order(uniq: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary order (most often kept first, then by id) and where each class starts in it."""
    by_freq = np.lexsort((uniq, -cls))
    n_cls = int(cls.max()) + 1 if cls.size else 0
    sizes = np.bincount(cls, minlength=n_cls)[::-1]  # classes in dictionary order: highest first
    return by_freq, np.concatenate([[0], np.cumsum(sizes)])


def _dictionary(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sample's dictionary of distinct ids: (ids ascending, count classes, class starts in
    dictionary order, each entry's index in dictionary order)."""
    uniq, inv, dcnt = np.unique(ids, return_inverse=True, return_counts=True)
    cls = _count_classes(dcnt)
    by_freq, bounds = _dictionary_order(uniq, cls)
    rank_of = np.empty(uniq.shape[0], dtype=np.int64)
    rank_of[by_freq] = np.arange(uniq.shape[0])
    return uniq, cls, bounds, rank_of[inv.reshape(-1)]


def _fresh_streams(x: np.ndarray, rb: np.ndarray, bounds: np.ndarray):
    """A fresh entry = (class in dictionary order, under a model per rank bucket) + its index
    within the class (uniform): the top of a distribution keeps rarer ids than its tail."""
    k = np.searchsorted(bounds, x, side="right") - 1
    streams = [(k[rb == b], None) for b in range(_N_RANK_BUCKETS)]
    for c in range(bounds.shape[0] - 1):
        size = int(bounds[c + 1] - bounds[c])
        streams.append((x[k == c] - bounds[c], entropy.uniform(max(size, 1))))
    return streams


def _decode_fresh(dec: entropy.Decoder, rb: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    k = np.zeros(rb.shape[0], dtype=np.int64)
    for b in range(_N_RANK_BUCKETS):
        sel = rb == b
        got = dec.next()
        if got.shape[0] != int(sel.sum()):
            raise CodecError("compact2 codec: id class stream of the wrong length: corrupt sample")
        k[sel] = got
    if k.size and k.max() >= bounds.shape[0] - 1:
        raise CodecError("compact2 codec: id class out of range: corrupt sample")
    x = np.zeros(rb.shape[0], dtype=np.int64)
    for c in range(bounds.shape[0] - 1):
        sel = k == c
        size = int(bounds[c + 1] - bounds[c])
        x[sel] = dec.next(entropy.uniform(max(size, 1)), int(sel.sum())) + bounds[c]
    return x


@dataclass(frozen=True)
class Compact2Codec:
    kl_target: float = 7.5e-4
    tail_step: float = 1.0 / 16.0
    # the least kept mass a position's levels stand for (`sqrt_levels`); encoder-only: the decoder
    # never reads it. 0 = format 1 (sqrt(p) of the full softmax, no guaranteed bound): what a
    # manifest without it was written with (`schemas.codec.make_stored_codec`).
    mass_floor: float = 0.75
    name: str = field(default="compact2", init=False)

    def __post_init__(self):
        if not (1e-7 <= float(self.kl_target) <= 0.1):
            raise CodecError(f"compact2 codec kl_target must be in [1e-7, 0.1] nats/token, got {self.kl_target!r}")
        if not (0.0 < float(self.tail_step) <= 1.0):
            raise CodecError(f"compact2 codec tail_step must be in (0, 1] nats, got {self.tail_step!r}")
        if not (0.0 <= float(self.mass_floor) <= 1.0):
            raise CodecError(f"compact2 codec mass_floor must be in [0, 1], got {self.mass_floor!r}")

    def params(self) -> dict:
        return {"kl_target": float(self.kl_target), "tail_step": float(self.tail_step), "mass_floor": float(self.mass_floor)}

    def kl_design(self) -> float:
        """Design codec KL, nats/token: the target the step is set for (bench/codec measures
        ~1.1x of it on a real teacher at top-0.95: `sqrt_levels`)."""
        return float(self.kl_target)

    def kl_bound(self, max_kept: int | None = None) -> float:
        """Guaranteed codec KL, nats/token, for every input: KL(kept set's own distribution ||
        decoded), averaged over a sample's positions with signal, is at most
        6 (2 ln 2 - 3/4) / mass_floor * kl_target (5.09 * kl_target at the default 3/4; proof:
        `sqrt_levels`), whatever the counts (`max_kept` is for codecs whose bound depends on them).
        inf for format 1 (mass_floor 0), whose KL grows as 1 / (kept mass)."""
        if not self.mass_floor:
            return float("inf")
        return float(6.0 * WORST_ENTRY_KL / self.mass_floor * self.kl_target)

    def sqrt_levels(self, logp: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """[N] each entry's level L = floor(a / h), a = sqrt(p * s / m): p the entry's probability,
        m its position's kept mass, s = max(m, mass_floor); h = `sqrt_step(counts)`.

        Why s: the decoder returns q = b^2 / sum b^2, b = (L + 1/2) h, renormalised over the kept
        set, so only the kept set's own distribution r = p / m is reproduced, and a step h on
        sqrt(p) is a step h / sqrt(m) on sqrt(r): the KL grows as 1 / m (format 1, mass_floor 0,
        used s = m: a kept set holding 25 % of the mass cost 8x the target). With s = m wherever
        m >= mass_floor (default 3/4) the
        levels are format 1's there, bit for bit (so the decoded mass still predicts the tail,
        compact3); where the kept set holds less they stand for its own sqrt-probabilities scaled
        to mass 3/4. Encoding sqrt(r) itself (s = 1 everywhere) breaks that tail prediction:
        +0.01-0.03 B per kept entry at the same measured KL (bench/codec on a real teacher).

        The guarantee (exact arithmetic; float32 log-probs add rounding of ~1e-7 relative). Write
        x = sqrt(r), y = b / sqrt(s), h' = h / sqrt(s) <= h / sqrt(mass_floor): y is x rounded
        down to a multiple of h', plus h' / 2. For any y > 0, as sum x^2 = 1 and ln u <= u - 1,
          KL(r || y^2 / sum y^2) = sum r ln(r / y^2) + ln sum y^2 <= sum_i (y_i^2 - x_i^2 - x_i^2 ln(y_i^2 / x_i^2)).
        Each term is h'^2 F(alpha), alpha = x / h' in [L, L + 1), beta = L + 1/2,
        F = beta^2 - alpha^2 - 2 alpha^2 ln(beta / alpha): F falls to 0 at alpha = beta and rises
        to either end, and over all L its largest value is at L = 0, alpha -> 1: 2 ln 2 - 3/4 =
        0.636 (tending to 1/2, i.e. 2 (h'/2)^2, for high levels; alpha uniform in a high level gives
        the h^2 / 6 the step is designed for). So a position with k entries costs at most
        0.636 k h^2 / mass_floor: relative to k, which may be far above the sample's mean
        count k_bar; averaged over the sample's positions with signal, h^2 = 6 kl_target / k_bar
        makes it 6 * 0.636 / 0.75 * kl_target whatever the counts. The worst case needs every entry
        just below a level boundary and kept sets of 3/4 of the mass; real text measures ~1.1x."""
        counts = np.asarray(counts, dtype=np.int64)
        lp = np.asarray(logp, dtype=np.float64)
        log_m = segment_logsumexp(lp, counts)
        shift = np.zeros(counts.shape[0])
        if self.mass_floor > 0:
            low = np.isfinite(log_m) & (log_m < np.log(self.mass_floor))
            shift[low] = np.log(self.mass_floor) - log_m[low]  # 0 elsewhere: format 1's levels, bit for bit
        return np.floor(np.sqrt(np.exp(lp + np.repeat(shift, counts))) / self.sqrt_step(counts)).astype(np.int64)

    def sqrt_step(self, counts: np.ndarray) -> float:
        """The step h on sqrt(p) that spends kl_target nats/token: h^2 / 6 per kept entry, over the
        sample's mean kept entries per position (from the counts, so the decoder agrees)."""
        counts = np.asarray(counts, dtype=np.int64)
        n_sig = int((counts > 0).sum())
        mean = int(counts.sum()) / n_sig if n_sig else 1.0
        return float(np.sqrt(6.0 * float(self.kl_target) / mean))

    # -- encode --------------------------------------------------------------------------------
    def encode(self, tr: KeptEntries) -> dict[str, bytes]:
        counts = np.asarray(tr.counts, dtype=np.int64)
        ids = np.asarray(tr.ids, dtype=np.int64)
        t, n = counts.shape[0], ids.shape[0]
        if n and (ids.min() < 0 or ids.max() >= 1 << 32):
            raise CodecError("compact2 codec: ids must be in [0, 2^32)")
        pos = np.repeat(np.arange(t), counts)
        lvl = self.sqrt_levels(tr.logp, counts)
        uniq, cls, bounds, x = _dictionary(ids)
        o = _entry_order(pos, lvl, x, t, uniq.shape[0])
        lvl, x = lvl[o], x[o]
        drop = _drops(lvl, counts)
        first, tied, rb = _structure(counts, drop)
        gap = np.zeros(n, dtype=np.int64)
        gap[1:] = x[1:] - x[:-1] - 1
        level_streams = [(lvl[first], None)] + [(drop[~first & (rb == b)], None) for b in range(1, _N_RANK_BUCKETS)]
        id_streams = (
            _encode_numbers(np.diff(uniq, prepend=-1) - 1)
            + [(cls, None)]
            + _fresh_streams(x[~tied], rb[~tied], bounds)
            + _encode_numbers(gap[tied])
        )
        return {
            "teacher_ids": entropy.encode(id_streams),
            "teacher_values": entropy.encode(level_streams),
            "teacher_tail": entropy.encode([(self._tail_levels(tr.log_tail), None)]),
        }

    def _tail_levels(self, log_tail: np.ndarray) -> np.ndarray:
        lt = np.asarray(log_tail, dtype=np.float64)
        out = np.zeros(lt.shape[0], dtype=np.int64)
        fin = np.isfinite(lt)
        if (lt[fin] > 0).any():
            raise CodecError(f"{self.name} codec: a tail log-mass is above 0")
        out[fin] = 1 + np.rint(-lt[fin] / self.tail_step).clip(0, 64 / self.tail_step).astype(np.int64)
        return out

    # -- decode --------------------------------------------------------------------------------
    def _level_reader(self, dec: entropy.Decoder):
        """How the levels block's streams are read (compact3 splits them)."""
        return dec.next

    def _decode_levels(self, buf: bytes, counts: np.ndarray) -> np.ndarray:
        """The levels block: each position's levels, descending (compact2 and compact3)."""
        t, n = counts.shape[0], int(counts.sum())
        vals_in = entropy.Decoder(buf, max(n, t, _N_RANK_BUCKETS) + 1)
        next_stream = self._level_reader(vals_in)
        first, _, rb = _structure(counts, np.ones(n, dtype=np.int64))
        top = next_stream()
        if top.shape[0] != int(first.sum()):
            raise CodecError(f"{self.name} codec: {top.shape[0]} top levels for {int(first.sum())} positions: corrupt sample")
        drop = np.zeros(n, dtype=np.int64)
        for b in range(1, _N_RANK_BUCKETS):
            sel = ~first & (rb == b)
            got = next_stream()
            if got.shape[0] != int(sel.sum()):
                raise CodecError(f"{self.name} codec: level stream of the wrong length: corrupt sample")
            drop[sel] = got
        vals_in.finish()
        inc = -drop
        inc[first] = top
        lvl = _segment_cumsum(inc, first)
        if n and lvl.min() < 0:
            raise CodecError(f"{self.name} codec: negative level: corrupt sample")
        return lvl

    def decode(self, counts: np.ndarray, cols: dict[str, bytes]) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        t, n = counts.shape[0], int(counts.sum())
        limit = max(n, t) + 1  # no stream holds more symbols than entries or positions
        lvl = self._decode_levels(cols["teacher_values"], counts)
        first, tied, rb = _structure(counts, _drops(lvl, counts))
        n_tied = int(tied.sum())

        ids_in = entropy.Decoder(cols["teacher_ids"], limit)
        uniq = np.cumsum(_decode_numbers(ids_in).astype(np.int64) + 1) - 1
        d = uniq.shape[0]
        if (n and d == 0) or d > n or (d and uniq[-1] >= 1 << 32):
            raise CodecError("compact2 codec: dictionary does not match the counts: corrupt sample")
        cls = ids_in.next()
        if cls.shape[0] != d or (d and cls.max() > 32):
            raise CodecError("compact2 codec: dictionary classes of the wrong length: corrupt sample")
        by_freq, bounds = _dictionary_order(uniq, cls)
        fresh = _decode_fresh(ids_in, rb[~tied], bounds)
        gaps = _decode_numbers(ids_in, n_tied).astype(np.int64)
        ids_in.finish()
        inc = np.zeros(n, dtype=np.int64)
        inc[~tied] = fresh
        inc[tied] = gaps + 1
        x = _segment_cumsum(inc, ~tied)
        if n and x.max() >= d:
            raise CodecError("compact2 codec: dictionary index out of range: corrupt sample")
        ids = uniq[by_freq][x]
        pos = np.repeat(np.arange(t), counts)
        o = np.argsort(pos * (1 << 32) + ids, kind="stable")
        ids, lvl = ids[o], lvl[o]
        logq = (2.0 * np.log((lvl + 0.5) * self.sqrt_step(counts))).astype(np.float32)
        return KeptEntries(counts, ids, renormalise(logq, counts), self._tail_decode(cols["teacher_tail"], t))

    def _tail_decode(self, buf: bytes, t: int) -> np.ndarray:
        (lv,) = entropy.decode(buf, 1, max(t, int(64 / self.tail_step) + 2))
        if lv.shape[0] != t:
            raise CodecError(f"{self.name} codec: {lv.shape[0]} tail values for {t} positions: corrupt sample")
        return self._tail_values(lv)

    def _tail_values(self, lv: np.ndarray) -> np.ndarray:
        t = lv.shape[0]
        out = np.full(t, -np.inf, dtype=np.float32)
        fin = lv > 0
        out[fin] = -(lv[fin] - 1) * self.tail_step
        return out


def _entry_order(pos: np.ndarray, lvl: np.ndarray, x: np.ndarray, t: int, d: int) -> np.ndarray:
    """Entries by position, level descending, dictionary index: one argsort of a packed int64 key
    (10x faster than lexsort), lexsort when the key would not fit."""
    n_lvl = int(lvl.max()) + 1 if lvl.size else 1
    if t * n_lvl * max(d, 1) < 1 << 62:
        return np.argsort((pos * n_lvl + (n_lvl - 1 - lvl)) * max(d, 1) + x, kind="stable")
    return np.lexsort((x, -lvl, pos))


def _drops(lvl: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Level drop from the previous entry of the same position (0 for each position's first)."""
    drop = np.zeros(lvl.shape[0], dtype=np.int64)
    drop[1:] = lvl[:-1] - lvl[1:]
    starts = (np.cumsum(counts) - counts)[counts > 0]
    drop[starts] = 0
    return drop


def _structure(counts: np.ndarray, drop: np.ndarray):
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
