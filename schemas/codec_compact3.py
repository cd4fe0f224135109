"""`compact3`: compact2 plus the next token as a free hint (the default for new datasets).

The sample stores its tokens anyway, and the token at t + 1 is the one the teacher predicted at
position t: on real text it is among the kept ids ~90 % of the time and the top entry ~46 %
(SmolLM2-135M on pydoc prose). compact2 spends ~7.5 bits on such an id (the top of a
distribution keeps rarer ids than its tail). compact3 codes, per position with signal, one
symbol: 0 = the next token is not a kept id (or there is none: the sample's last position),
else 1 + the index of its level group (0 = the top level) among the position's levels, taken in
descending order; the level already says how probable it is, so only the group is needed. The
hinted entry is then left out of the id coding: its id is the next token.

Three more differences from compact2 (schemas.codec_compact2), whose levels and id layout over
the remaining entries are reused (fresh entries by class per rank bucket of their level group's
start, tied entries as gaps):
* the dictionary is coded against the sample's own tokens (a third of the kept entries are ids
  the text contains): a flag per distinct token, the other ids as gaps, the count classes of
  the two kinds in two streams; the hint stream follows;
* the tail level (the same 1/16-nat scale) is coded as its difference from the level that
  1 - (decoded kept mass) predicts: ~2.3-2.5 bits per position less. The prediction works from
  integers and IEEE-rounded arithmetic only (see `_tail_prediction`), so it is the same on
  every machine;
* each level stream is split into a high part (own histogram) and 0-4 uniform low bits, the
  split chosen per stream by the encoder: the top level spans ~100 values, whose histogram
  costs more than its words on a 512-token sample. (The choice uses float cost estimates: like
  compact2's level boundaries, another CPU's log could pick another split in a near-tie; the
  bytes then differ, the decoded signal does not.)
It decodes to exactly compact2's signal (ids, log-probs, tail).

Measured (bench/codec's candidates table, and ideal entropies against held-out fits) and not
built: a per-dataset unigram side table saves at most ~0.35 bit per kept entry with a table of
the teacher's kept-id frequencies (0.16-0.2 bit with corpus token frequencies; nothing with a
Zipf prior on the id itself, which the per-sample dictionary already exploits): not enough for
the plumbing of a side file every decoder must read.

decode needs the sample's tokens (`schemas.sample.decode_sample` passes them); a codec that
needs them says so with `needs_tokens`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas import entropy, varint
from schemas.codec import renormalise
from schemas.codec_compact2 import (
    Compact2Codec,
    _decode_fresh,
    _decode_numbers,
    _dictionary,
    _dictionary_order,
    _drops,
    _encode_numbers,
    _entry_order,
    _fresh_streams,
    _N_RANK_BUCKETS,
    _rank_bucket,
    _segment_cumsum,
    _structure,
)
from schemas.errors import CodecError
from schemas.kept import KeptEntries


_LN2 = 0.6931471805599453  # ln 2, as a literal: the tail prediction uses no libm


def _next_tokens(tokens, t: int) -> np.ndarray:
    """[T] the token each position predicts (-1 for the last: it lies in the next sample)."""
    if tokens is None:
        raise CodecError("compact3 codec: needs the sample's tokens (the next token is the hint)")
    tok = np.asarray(tokens).astype(np.int64).reshape(-1)
    if tok.shape[0] != t:
        raise CodecError(f"compact3 codec: {tok.shape[0]} tokens for {t} positions")
    return np.concatenate([tok[1:], [-1]])


def _groups(pos: np.ndarray, lvl: np.ndarray) -> np.ndarray:
    """True where an entry starts a level group: a new position or a new level (entries sorted
    by position, then level descending)."""
    new = np.ones(pos.shape[0], dtype=bool)
    new[1:] = (pos[1:] != pos[:-1]) | (lvl[1:] != lvl[:-1])
    return new


def _group_start_rank(new: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per entry of the full (sorted) position: the rank at which its level group starts."""
    gnum = np.cumsum(new) - 1
    start = np.flatnonzero(new)[gnum]
    return start - np.repeat(np.cumsum(counts) - counts, counts)


def _dictionary_streams(uniq: np.ndarray, cls: np.ndarray, seen: np.ndarray):
    """The dictionary against the sample's own tokens (a third of the kept entries are ids the
    text itself contains): one flag per distinct token (in the dictionary or not), the other ids
    as gaps; count classes in two streams (tokens of the text are kept more often)."""
    flag = np.isin(seen, uniq)
    in_seen = np.isin(uniq, seen)
    other = uniq[~in_seen]
    return ([(flag.astype(np.int64), None)] + _encode_numbers(np.diff(other, prepend=-1) - 1)
            + [(cls[in_seen], None), (cls[~in_seen], None)])


def _decode_dictionary(dec: entropy.Decoder, seen: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    flag = dec.next()
    if flag.shape[0] != seen.shape[0] or (flag.size and flag.max() > 1):
        raise CodecError("compact3 codec: dictionary flags do not match the tokens: corrupt sample")
    other = np.cumsum(_decode_numbers(dec).astype(np.int64) + 1) - 1
    from_seen = seen[flag == 1]
    uniq = np.union1d(from_seen, other)
    if uniq.shape[0] != from_seen.shape[0] + other.shape[0] or uniq.shape[0] > n or (uniq.size and uniq[-1] >= 1 << 32):
        raise CodecError("compact3 codec: dictionary does not match the counts: corrupt sample")
    in_seen = np.zeros(uniq.shape[0], dtype=bool)  # from_seen lies in uniq: mark where
    in_seen[np.searchsorted(uniq, from_seen)] = True
    cls = np.zeros(uniq.shape[0], dtype=np.int64)
    for sel in (in_seen, ~in_seen):
        got = dec.next()
        if got.shape[0] != int(sel.sum()) or (got.size and got.max() > 32):
            raise CodecError("compact3 codec: dictionary classes of the wrong length: corrupt sample")
        cls[sel] = got
    return uniq, cls


_MAX_SHIFT = 4


def _split_cost(a: np.ndarray, shift: int) -> float:
    """Estimated bits of a stream coded as (a >> shift) under its own histogram + shift raw bits."""
    hi = a >> shift
    c = np.bincount(hi)
    nz = c[c > 0]
    head = len(varint.encode(entropy._pack_histogram(c)))
    return float(-(nz * np.log2(nz / a.shape[0])).sum()) + shift * a.shape[0] + 8 * head


def _split_streams(arrays: list[np.ndarray]) -> list:
    """Level streams with wide, flat histograms (the top level spans ~100 values) cost more in
    histogram than in words on a 512-token sample: each is coded as its high part under its own
    histogram and `shift` low bits uniform, the shift (0-4) chosen per stream by the encoder and
    written first (one uniform symbol per stream)."""
    shifts = [min(range(_MAX_SHIFT + 1), key=lambda s: (_split_cost(a, s), s)) if a.size else 0 for a in arrays]
    out = [(np.asarray(shifts, dtype=np.int64), entropy.uniform(_MAX_SHIFT + 1))]
    for a, sh in zip(arrays, shifts):
        out.append((a >> sh, None))
        if sh:
            out.append((a & ((1 << sh) - 1), entropy.uniform(1 << sh)))
    return out


@dataclass(frozen=True)
class Compact3Codec(Compact2Codec):
    name: str = field(default="compact3", init=False)
    needs_tokens = True  # class attribute: build_sample / decode_sample pass the sample's tokens

    def entry_levels(self, tr: KeptEntries, tokens) -> tuple[np.ndarray, ...]:
        """What every encoder from compact3 on starts from: counts, ids (checked to fit 32 bits),
        the next token of each position, each entry's position and its sqrt(p) level."""
        counts = np.asarray(tr.counts, dtype=np.int64)
        ids = np.asarray(tr.ids, dtype=np.int64)
        t, n = counts.shape[0], ids.shape[0]
        if n and (ids.min() < 0 or ids.max() >= 1 << 32):
            raise CodecError(f"{self.name} codec: ids must be in [0, 2^32)")
        return counts, ids, _next_tokens(tokens, t), np.repeat(np.arange(t), counts), self.sqrt_levels(tr.logp, counts)

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        counts, ids, nxt, pos, lvl = self.entry_levels(tr, tokens)
        t, n = counts.shape[0], ids.shape[0]
        # levels: per position descending (ties in any order: they are equal), as compact2
        o = _entry_order(pos, lvl, np.zeros(n, dtype=np.int64), t, 1)
        lv_s, pos_s, hit_s = lvl[o], pos[o], ids[o] == nxt[pos[o]]
        drop = _drops(lv_s, counts)
        first, _, rb = _structure(counts, drop)
        level_streams = _split_streams([lv_s[first]] + [drop[~first & (rb == b)] for b in range(1, _N_RANK_BUCKETS)])
        new = _groups(pos_s, lv_s)
        gnum = np.cumsum(new) - 1
        hint = np.zeros(t, dtype=np.int64)
        starts = np.cumsum(counts) - counts
        if n:
            gfirst = gnum[np.minimum(starts, n - 1)]
            hint[pos_s[hit_s]] = gnum[hit_s] - gfirst[pos_s[hit_s]] + 1
        start_rank = _group_start_rank(new, counts)
        # the remaining entries, coded like compact2 over their own dictionary
        keep = ~hit_s
        ids_r, lv_r, pos_r, srank_r = ids[o][keep], lv_s[keep], pos_s[keep], start_rank[keep]
        uniq, cls, bounds, x = _dictionary(ids_r)
        o2 = _entry_order(pos_r, lv_r, x, t, uniq.shape[0])  # stable: (pos, level) order is kept
        x, srank_r = x[o2], srank_r[o2]
        fresh = _groups(pos_r[o2], lv_r[o2])
        gap = np.zeros(x.shape[0], dtype=np.int64)
        gap[1:] = x[1:] - x[:-1] - 1
        id_streams = (
            _dictionary_streams(uniq, cls, np.unique(nxt[:-1]))
            + [(hint[counts > 0], None)]
            + _fresh_streams(x[fresh], _rank_bucket(srank_r[fresh]), bounds)
            + _encode_numbers(gap[~fresh])
        )
        return {
            "teacher_ids": entropy.encode(id_streams),
            "teacher_values": entropy.encode(level_streams),
            "teacher_tail": entropy.encode([(self._tail_symbols(tr.log_tail, lvl, counts), None)]),
        }

    def _level_reader(self, dec: entropy.Decoder):
        shifts = iter(dec.next(entropy.uniform(_MAX_SHIFT + 1), _N_RANK_BUCKETS).tolist())

        def next_stream() -> np.ndarray:
            sh = next(shifts, 0)
            hi = dec.next()
            if not sh:
                return hi
            return (hi << sh) | dec.next(entropy.uniform(1 << sh), hi.shape[0])

        return next_stream

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        t, n = counts.shape[0], int(counts.sum())
        nxt = _next_tokens(tokens, t)
        limit = max(n, t) + 1
        lvl = self._decode_levels(cols["teacher_values"], counts)
        pos = np.repeat(np.arange(t), counts)
        new = _groups(pos, lvl)
        gnum = np.cumsum(new) - 1
        gstart = np.flatnonzero(new)
        start_rank = _group_start_rank(new, counts)

        ids_in = entropy.Decoder(cols["teacher_ids"], limit)
        uniq, cls = _decode_dictionary(ids_in, np.unique(nxt[:-1]), n)
        d = uniq.shape[0]
        sig = counts > 0
        hs = ids_in.next()
        if hs.shape[0] != int(sig.sum()):
            raise CodecError("compact3 codec: hint stream of the wrong length: corrupt sample")
        hint = np.zeros(t, dtype=np.int64)
        hint[sig] = hs
        hp = np.flatnonzero(hint)
        n_groups = np.bincount(pos[new], minlength=t) if n else np.zeros(t, dtype=np.int64)
        if hp.size and ((hint[hp] > n_groups[hp]).any() or (nxt[hp] < 0).any()):
            raise CodecError("compact3 codec: a hint outside its position's levels: corrupt sample")
        keep = np.ones(n, dtype=bool)
        if hp.size:
            g = gnum[(np.cumsum(counts) - counts)[hp]] + hint[hp] - 1  # the hinted level groups
            ends = np.append(gstart[1:], n)
            keep[ends[g] - 1] = False  # a group's slots are interchangeable: drop its last
        pos_r = pos[keep]
        fresh = _groups(pos_r, lvl[keep])
        by_freq, bounds = _dictionary_order(uniq, cls)
        fx = _decode_fresh(ids_in, _rank_bucket(start_rank[keep][fresh]), bounds)
        gaps = _decode_numbers(ids_in, int((~fresh).sum())).astype(np.int64)
        ids_in.finish()
        inc = np.zeros(pos_r.shape[0], dtype=np.int64)
        inc[fresh] = fx
        inc[~fresh] = gaps + 1
        x = _segment_cumsum(inc, fresh)
        if x.size and (d == 0 or x.max() >= d):
            raise CodecError("compact3 codec: dictionary index out of range: corrupt sample")
        ids = np.empty(n, dtype=np.int64)
        ids[keep] = uniq[by_freq][x] if x.size else x
        ids[~keep] = nxt[pos[~keep]]
        o = np.argsort(pos * (1 << 32) + ids, kind="stable")
        ids, lvl = ids[o], lvl[o]
        if n > 1 and ((ids[1:] == ids[:-1]) & (pos[1:] == pos[:-1])).any():
            raise CodecError("compact3 codec: an id kept twice at one position: corrupt sample")
        logq = (2.0 * np.log((lvl + 0.5) * self.sqrt_step(counts))).astype(np.float32)
        return KeptEntries(counts, ids, renormalise(logq, counts), self._tail_from(cols["teacher_tail"], lvl, counts))

    # -- tail: the stored level against the one the kept levels predict ---------------------------
    def _tail_prediction(self, lvl: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """[T] the tail level that 1 - (the decoded kept mass) would give. Integers in, and only
        frexp and IEEE-rounded + - * / after (no libm log or exp, which may differ by an ulp
        between machines), so the encoder and any decoder compute the same prediction."""
        sq = (2 * lvl + 1) ** 2  # (L + 1/2)^2 h^2 = sq * h^2 / 4: the decoded p, before renormalising
        mass = np.zeros(counts.shape[0], dtype=np.int64)
        nz = counts > 0
        if nz.any():
            mass[nz] = np.add.reduceat(sq, (np.cumsum(counts) - counts)[nz])
        h = self.sqrt_step(counts)
        rest = np.maximum(1.0 - mass.astype(np.float64) * (h * h / 4.0), 2.0**-40)
        m, e = np.frexp(rest)  # rest = m * 2^e, m in [0.5, 1): ln = e ln 2 + ln m by its atanh series
        u = (m - 1.0) / (m + 1.0)
        u2 = u * u
        ln = e * _LN2 + u * (2.0 + u2 * (2.0 / 3.0 + u2 * (2.0 / 5.0 + u2 * (2.0 / 7.0 + u2 * (2.0 / 9.0)))))
        return 1 + np.rint(np.clip(-ln / self.tail_step, 0, 64 / self.tail_step)).astype(np.int64)

    def _tail_symbols(self, log_tail: np.ndarray, lvl: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """0 = no tail, else 1 + the zigzag of (stored level - predicted level)."""
        lv = self._tail_levels(log_tail)
        d = lv - self._tail_prediction(lvl, counts)
        return np.where(lv == 0, 0, 1 + varint.zigzag(d))

    def _tail_from(self, buf: bytes, lvl: np.ndarray, counts: np.ndarray) -> np.ndarray:
        t = counts.shape[0]
        (sym,) = entropy.decode(buf, 1, max(t, int(64 / self.tail_step) + 2))
        if sym.shape[0] != t or (sym.size and sym.max() > 4 * (64 / self.tail_step) + 8):
            raise CodecError(f"{self.name} codec: {sym.shape[0]} tail values for {t} positions: corrupt sample")
        z = sym - 1
        lv = np.where(sym == 0, 0, self._tail_prediction(lvl, counts) + varint.unzigzag(z))
        if (lv[sym > 0] < 1).any():
            raise CodecError(f"{self.name} codec: a tail level below the scale: corrupt sample")
        return self._tail_values(lv)
