"""`compact4`: compact3 plus the kept set where the same text was seen before (the default).

In prose the same tokens recur ("the", ",", "."), and so does the teacher's next-token
distribution after them. For a position t the decoder finds, from the tokens alone, its
*predictor*: the last earlier position s of the same sample with the same two tokens
(tokens[s - 1], tokens[s]) == (tokens[t - 1], tokens[t]), else the last one with the same token.
On SmolLM2-135M over pydoc prose 74 % of the positions of a 2048-token sample have one (60 % at
512), and about half (two tokens) or a third (one token) of their kept ids were kept at s: 29 %
of all kept entries, against ~17 % shared with the neighbouring position. No distance is coded.

Per position with a predictor, one flag per entry of s says whether that id is kept at t too (a
model per predictor kind and the entry's rank at s against t's count), and each such *repeat*
gets one symbol placing it among t's level groups (a stream per rank bucket at s, under the
cheaper of two rules, a flag per stream: relative to the group holding the same rank at t, or
counted from t's lowest group). A repeat's id is then not coded: it is the id in that slot at s.
Everything else about ids is compact3's (the next-token hint, the remaining ids against a
per-sample dictionary: fresh ids by class, tied ones as gaps), over the entries that are neither
hinted nor repeats; the tail is compact3's.

To point into s the decoder needs s's entries in an order that does not depend on their ids:
each position's *slots* are its level groups in descending order, within a group the hinted
entry first, then the repeats in their order at the predictor, then the other ids by
dictionary index. Repeats of repeats are resolved by pointer jumping (predictors always lie
earlier), so decoding stays vectorised; the encoder orders the slots in rounds by predictor depth.

Values: compact2's levels, each position's top level as compact3 codes it, then every drop under
a model chosen by the level above it (a drop cannot exceed it; low levels drop by 0 or 1), coded
rank by rank so that the decoder knows each context when it needs it (one call per rank, a row
of counts per drop: schemas.entropy's 2-D models).

It decodes to exactly compact2's signal (ids, log-probs, tail). Its default `kl_target` is 8e-4
(compact2/3: 7.5e-4): measured codec KL 9.0e-4 / 8.9e-4 on real text, 10 % under issue 13's 1e-3,
guaranteed <= 4.1e-3 (compact2's `kl_bound`). Measured (bench/codec): 1.365 / 1.264 B per kept
entry at top-0.95-50 / -100 on 512-token samples, 1.298 / 1.209 on one 2048-token sample
(compact3 at 7.5e-4: 1.426 / 1.328, 1.390 / 1.303).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas import entropy, varint
from schemas.codec import renormalise
from schemas.codec_compact2 import (
    _decode_fresh,
    _decode_numbers,
    _dictionary,
    _dictionary_order,
    _drops,
    _encode_numbers,
    _entry_order,
    _fresh_streams,
    _rank_bucket,
    _segment_cumsum,
)
from schemas.codec_compact3 import (
    Compact3Codec,
    _decode_dictionary,
    _dictionary_streams,
    _group_start_rank,
    _groups,
    _next_tokens,
    _MAX_SHIFT,
    _split_cost,
    _split_streams,
)
from schemas.errors import CodecError
from schemas.kept import KeptEntries

_REPEAT_RANK_EDGES = np.array([1, 2, 4, 8, 16])  # rank buckets of a predictor's entries: 0, 1, 2-3, 4-7, 8-15, 16+
_N_RB = len(_REPEAT_RANK_EDGES) + 1
_RATIO_QUARTERS = (1, 2, 3, 4, 6)  # membership buckets: rank at s / count at t below 1/4, 1/2, 3/4, 1, 3/2, above
_N_RATIO = len(_RATIO_QUARTERS) + 1
_N_KINDS = 2  # predictor kinds: the same two tokens, the same token (three tokens: no better, measured)


def predictors(tokens: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[T] each position's predictor s (-1: none) and its kind (0: the same two tokens
    (tokens[s - 1], tokens[s]), 1: the same token), from the tokens alone: the last earlier match.
    Only positions with signal predict or are predicted."""
    tok = np.asarray(tokens, dtype=np.int64).reshape(-1)
    t = tok.shape[0]
    s_of = np.full(t, -1, dtype=np.int64)
    kind = np.zeros(t, dtype=np.int64)
    sig = np.flatnonzero(np.asarray(counts) > 0)
    if sig.size < 2:
        return s_of, kind
    uniq, inv = np.unique(tok, return_inverse=True)
    inv = inv.reshape(-1)
    one = inv[sig]
    two = (np.concatenate([[-1], inv[:-1]])[sig] + 1) * (uniq.shape[0] + 1) + one  # with the token before
    for k, key in ((1, one), (0, two)):  # the two-token match wins
        o = np.argsort(key, kind="stable")
        same = np.flatnonzero(key[o][1:] == key[o][:-1]) + 1
        s_of[sig[o[same]]] = sig[o[same - 1]]
        kind[sig[o[same]]] = k
    return s_of, kind


@dataclass(frozen=True)
class _Sources:
    """Where predictors point: q *known* positions (a prime's: `schemas.codec_compact5`; their
    ids, in slot order, known to both sides before the sample) followed by the sample's own T
    positions. Slot indices run over the known slots first, then the sample's entries."""

    q: int
    counts: np.ndarray  # [q + T]
    starts: np.ndarray  # [q + T] each source position's first slot
    known_pos: np.ndarray  # [known slots] the source position of each known slot
    known_ids: np.ndarray  # [known slots] their ids

    @classmethod
    def own(cls, counts: np.ndarray, known_counts=None, known_ids=None) -> "_Sources":
        """The sample's own positions, after `known_counts` known ones (default none)."""
        kc = np.zeros(0, dtype=np.int64) if known_counts is None else np.asarray(known_counts, dtype=np.int64)
        allc = np.concatenate([kc, counts])
        return cls(q=kc.shape[0], counts=allc, starts=np.cumsum(allc) - allc,
                   known_pos=np.repeat(np.arange(kc.shape[0]), kc),
                   known_ids=np.zeros(0, dtype=np.int64) if known_ids is None else np.asarray(known_ids, dtype=np.int64))


class _Layout:
    """The levels' structure, from the counts and the (descending) levels alone: what both sides
    know before any id."""

    def __init__(self, counts: np.ndarray, lvl: np.ndarray):
        self.counts = counts
        self.t, self.n = counts.shape[0], lvl.shape[0]
        self.starts = np.cumsum(counts) - counts
        self.pos = np.repeat(np.arange(self.t), counts)
        self.lvl = lvl
        self.new = _groups(self.pos, lvl)
        self.gnum = np.cumsum(self.new) - 1  # global group number of each entry
        self.gstart = np.flatnonzero(self.new)  # entry index where each group starts
        self.gsize = np.diff(np.append(self.gstart, self.n))
        self.glvl = lvl[self.gstart] if self.n else lvl[:0]
        self.gpos = self.pos[self.gstart] if self.n else self.pos[:0]
        self.first_group = np.zeros(self.t, dtype=np.int64)
        if self.n:
            self.first_group = self.gnum[np.minimum(self.starts, self.n - 1)]
        self.n_groups = np.bincount(self.gpos, minlength=self.t) if self.n else np.zeros(self.t, dtype=np.int64)
        self.start_rank = _group_start_rank(self.new, counts)

    def predicted(self, s_of: np.ndarray, kind: np.ndarray, src: "_Sources"):
        """The predictor slots: for each position t with a predictor, every slot of s in order.
        Returns (t of each slot, slot index at s in the sources' slot space, membership context,
        placement context, predicted group offset at t: the group holding the slot's rank at t)."""
        has = np.flatnonzero((s_of >= 0) & (self.counts > 0))
        sizes = src.counts[s_of[has]]
        t_of = np.repeat(has, sizes)
        rank = np.arange(t_of.shape[0]) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        slot = src.starts[s_of[t_of]] + rank
        ct = self.counts[t_of]
        # membership: the slot's rank at s against the count at t (r / count_t in quarters)
        ratio = sum((4 * rank >= q * ct).astype(np.int64) for q in _RATIO_QUARTERS)
        rb = np.searchsorted(_REPEAT_RANK_EDGES, rank, side="right")
        at = self.starts[t_of] + np.minimum(rank, ct - 1)
        pred = self.gnum[at] - self.first_group[t_of] if t_of.size else rank
        return t_of, slot, kind[t_of] * _N_RATIO + ratio, rb, pred


def _context_streams(sym: np.ndarray, ctx: np.ndarray, n_ctx: int) -> list:
    """Symbols under a model per context, in their own order: each context's histogram as a
    header table, then one stream of per-symbol rows (one decoder call for all contexts)."""
    hists = [np.bincount(sym[ctx == c]) for c in range(n_ctx)]
    return [(entropy.TABLE, h) for h in hists] + [(sym, _rows_table(hists)[ctx])]


def _decode_context_streams(dec: entropy.Decoder, ctx: np.ndarray, n_ctx: int, what: str) -> np.ndarray:
    hists = [dec.table() for _ in range(n_ctx)]
    if [int(h.sum()) for h in hists] != np.bincount(ctx, minlength=n_ctx).tolist():
        raise CodecError(f"compact4 codec: {what} do not match the predictors: corrupt sample")
    return dec.next(_rows_table(hists).astype(np.float64)[ctx], ctx.shape[0])


def _rows_table(hists: list[np.ndarray]) -> np.ndarray:
    """[contexts, widest alphabet (at least 2: constriction's minimum)] histograms as rows."""
    table = np.zeros((len(hists), max([h.shape[0] for h in hists] + [2])), dtype=np.int64)
    for c, h in enumerate(hists):
        table[c, : h.shape[0]] = h
    return table


def _place_streams(grp: np.ndarray, pred: np.ndarray, n_groups: np.ndarray, pctx: np.ndarray) -> list:
    """Each repeat's level group at t, a model per rank bucket at s, under the cheaper of two
    rules per bucket (a flag each): relative to the group holding the same rank at t (an
    unchanged distribution costs nothing), or counted from t's lowest group (on real text most
    tail repeats land in the long tied tail while the distribution drifts). The choice uses
    float cost estimates, like compact3's split: in a near-tie another machine may pick the other
    rule; the bytes then differ, the decoded signal does not."""
    rules, sym = [], np.zeros(grp.shape[0], dtype=np.int64)
    for c in range(_N_RB):
        sel = pctx == c
        options = (varint.zigzag(grp[sel] - pred[sel]), n_groups[sel] - 1 - grp[sel])
        rule = min((0, 1), key=lambda r: (_split_cost(options[r], 0) if options[r].size else 0.0, r))
        rules.append(rule)
        sym[sel] = options[rule]
    return [(np.asarray(rules, dtype=np.int64), entropy.uniform(2))] + _context_streams(sym, pctx, _N_RB)


def _decode_places(dec: entropy.Decoder, pred: np.ndarray, n_groups: np.ndarray, pctx: np.ndarray) -> np.ndarray:
    rules = dec.next(entropy.uniform(2), _N_RB)
    sym = _decode_context_streams(dec, pctx, _N_RB, "repeat placements")
    return np.where(rules[pctx] == 0, pred + varint.unzigzag(sym), n_groups - 1 - sym)


_LEVEL_EDGES = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64])  # drop contexts: the level above it
_N_LEVEL_CTX = len(_LEVEL_EDGES) + 1


def _level_rounds(counts: np.ndarray) -> list[np.ndarray]:
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


def _level_widths(hists: list[np.ndarray]) -> np.ndarray:
    """[contexts] each model's row width: a rank's rows are cut to the widest model among them
    (late ranks sit at low levels, whose drops are small: fewer zeros to copy and quantise)."""
    return np.maximum([h.shape[0] for h in hists], 2)


def _level_streams(lv: np.ndarray, counts: np.ndarray) -> list:
    """Levels, each position descending: the top levels (split as compact3), then each drop under
    a model chosen by the level above it (a drop cannot exceed it: low levels drop by 0 or 1),
    coded rank by rank so that the decoder knows every context when it needs it: one stream per
    rank, one row of counts per drop. The models' histograms are written once, as numbers,
    before the drops; a context that only ever drops by 0 costs (next to) nothing."""
    first = np.zeros(lv.shape[0], dtype=bool)
    first[(np.cumsum(counts) - counts)[counts > 0]] = True
    drop = _drops(lv, counts)
    ctx = np.zeros(lv.shape[0], dtype=np.int64)
    ctx[1:] = np.searchsorted(_LEVEL_EDGES, lv[:-1], side="right")
    hists = [np.bincount(drop[~first & (ctx == c)]) for c in range(_N_LEVEL_CTX)]
    packed = np.concatenate([entropy._pack_histogram(h) for h in hists]).astype(np.int64)
    table, width = _rows_table(hists), _level_widths(hists)
    out = _split_streams([lv[first]]) + _encode_numbers(packed)
    for idx in _level_rounds(counts):
        c = ctx[idx]
        out.append((drop[idx], table[c, : width[c].max()]))
    return out


_N_CTX = _N_KINDS * _N_RATIO


def _slot_ids(lay: "_Layout", ids: np.ndarray, role: np.ndarray, sub: np.ndarray, repeat: np.ndarray,
              s_of: np.ndarray, src: _Sources) -> np.ndarray:
    """[known slots + N] the ids in slot order (the encoder's side of the slots the decoder
    rebuilds): per position its level groups, within a group the hinted entry (role 0), the
    repeats (role 1) by their slot at the predictor, the rest (role 2) by dictionary index (`sub`).

    A repeat's order needs its predictor's slots, so positions are ordered in rounds by their
    depth in the chain of sample predictors (a known source is depth 0): one sort per round, not
    per position. `sub` is filled in for the repeats."""
    t, n, q = lay.t, ids.shape[0], src.q
    pos = lay.pos
    r = np.flatnonzero(repeat)
    sp = s_of[pos[r]]  # the repeat's source (known sources first, then the sample's positions)
    known = sp < q
    if known.any():  # where the id sits among the known source's slots (they are in slot order)
        kkey = src.known_pos * (1 << 32) + src.known_ids
        ko = np.argsort(kkey, kind="stable")
        kslot = ko[np.searchsorted(kkey[ko], sp[known] * (1 << 32) + ids[r[known]])]
        sub[r[known]] = kslot - src.starts[sp[known]]
    rs, src_entry = r[~known], np.zeros(0, dtype=np.int64)
    if rs.size:  # the entry of the same id at the sample's predictor position
        ekey = pos * (1 << 32) + ids
        eo = np.argsort(ekey, kind="stable")
        src_entry = eo[np.searchsorted(ekey[eo], (sp[~known] - q) * (1 << 32) + ids[rs])]
    # each position's depth: 1 + its predictor's, for a position with repeats from the sample
    dep_on = np.full(t, -1, dtype=np.int64)
    dep_on[pos[rs]] = s_of[pos[rs]] - q
    depth, dl = [0] * t, dep_on.tolist()
    for p in range(t):  # predictors lie earlier: one pass (integers only)
        if dl[p] >= 0:
            depth[p] = depth[dl[p]] + 1
    depth_e = np.asarray(depth, dtype=np.int64)[pos]
    rank = np.zeros(n, dtype=np.int64)  # each entry's slot within its position
    by_depth = np.argsort(depth_e, kind="stable")  # rounds; within one, entries in position order
    edges = np.cumsum(np.bincount(depth_e, minlength=1)).tolist()
    rs_depth = depth_e[rs]
    ro = np.argsort(rs_depth, kind="stable")
    r_edges = np.searchsorted(rs_depth[ro], np.arange(len(edges) + 1)).tolist()
    m = int(max(sub.max(initial=0), lay.counts.max(initial=0))) + 1  # sub < m: a rank at a source, or an index
    for d, (a, b) in enumerate(zip([0] + edges[:-1], edges)):
        e = by_depth[a:b]
        if d:  # this round's repeats from the sample: their predictors' slots are known by now
            sel = ro[r_edges[d] : r_edges[d + 1]]
            sub[rs[sel]] = rank[src_entry[sel]]
        # by (group, role, sub) as one int64 key (unique: one hint per position, distinct ids);
        # the group number orders the positions
        e = e[np.argsort((lay.gnum[e] * 3 + role[e]) * m + sub[e], kind="stable")]
        pe = pos[e]
        new = np.ones(e.shape[0], dtype=bool)
        new[1:] = pe[1:] != pe[:-1]
        first = np.flatnonzero(new)
        rank[e] = np.arange(e.shape[0]) - np.repeat(first, np.diff(np.append(first, e.shape[0])))
    qs = src.known_ids.shape[0]
    slot_ids = np.empty(qs + n, dtype=np.int64)
    slot_ids[:qs] = src.known_ids
    slot_ids[qs + lay.starts[pos] + rank] = ids
    return slot_ids


@dataclass(frozen=True)
class Compact4Codec(Compact3Codec):
    # measured codec KL ~1.12x of it on real text at top-0.95-50/-100: 9.0e-4, 10 % under the 1e-3
    kl_target: float = 8e-4
    name: str = field(default="compact4", init=False)

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        counts, ids, nxt, pos0, lvl0 = self.entry_levels(tr, tokens)
        t, n = counts.shape[0], ids.shape[0]
        o = _entry_order(pos0, lvl0, ids, t, int(ids.max()) + 1 if n else 1)  # by position, level desc, id
        lv, ids = lvl0[o], ids[o]
        lay = _Layout(counts, lv)
        pos = lay.pos
        level_streams = _level_streams(lv, counts)
        hinted = ids == nxt[pos]
        hint = np.zeros(t, dtype=np.int64)
        hint[pos[hinted]] = lay.gnum[hinted] - lay.first_group[pos[hinted]] + 1
        # repeats: kept at t, kept at its predictor s, not hinted (order-free: membership only)
        s_of, kind, src = self._sources(tokens, counts)
        key = pos * (1 << 32) + ids
        src_key = np.concatenate([src.known_pos * (1 << 32) + src.known_ids, (pos + src.q) * (1 << 32) + ids])
        ps = s_of[pos]
        repeat = (ps >= 0) & ~hinted & np.isin(np.where(ps >= 0, ps, 0) * (1 << 32) + ids, src_key)
        rest = ~hinted & ~repeat
        uniq, cls, bounds, x = _dictionary(ids[rest])
        # slots: per group the hinted entry, the repeats by their slot at s, the rest by dictionary index
        sub = np.zeros(n, dtype=np.int64)
        sub[rest] = x
        role = np.where(hinted, 0, np.where(repeat, 1, 2))
        slot_ids = _slot_ids(lay, ids, role, sub, repeat, s_of, src)
        # the membership and placement symbols, slot by slot of each predictor
        t_of, slot, ctx, pctx, pred = lay.predicted(s_of, kind, src)
        kept_t = np.isin(t_of * (1 << 32) + slot_ids[slot], key[repeat])
        grp = np.zeros(t_of.shape[0], dtype=np.int64)
        if kept_t.any():
            rkey = key[repeat]
            rg = (lay.gnum - lay.first_group[pos])[repeat]
            ok = np.argsort(rkey)
            grp[kept_t] = rg[ok][np.searchsorted(rkey[ok], t_of[kept_t] * (1 << 32) + slot_ids[slot[kept_t]])]
        repeat_streams = (_context_streams(kept_t.astype(np.int64), ctx, _N_CTX)
                          + _place_streams(grp[kept_t], pred[kept_t], lay.n_groups[t_of[kept_t]], pctx[kept_t]))
        # the remaining entries, as compact3
        pos_r, lv_r, srank_r = pos[rest], lv[rest], lay.start_rank[rest]
        o2 = _entry_order(pos_r, lv_r, x, t, uniq.shape[0])
        x, srank_r = x[o2], srank_r[o2]
        fresh = _groups(pos_r[o2], lv_r[o2])
        gap = np.zeros(x.shape[0], dtype=np.int64)
        gap[1:] = x[1:] - x[:-1] - 1
        id_streams = (
            self._dictionary_streams(uniq, cls, self._basis(nxt))
            + [(hint[counts > 0], None)]
            + repeat_streams
            + _fresh_streams(x[fresh], _rank_bucket(srank_r[fresh]), bounds)
            + _encode_numbers(gap[~fresh])
        )
        return {
            "teacher_ids": entropy.encode(id_streams),
            "teacher_values": entropy.encode(level_streams),
            "teacher_tail": entropy.encode([(self._tail_symbols(tr.log_tail, lvl0, counts), None)]),
        }

    def _sources(self, tokens, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Sources]:
        """Each position's predictor (as a source index, -1: none), its kind, and the sources:
        here the sample's own positions only (compact5 puts a prime's in front)."""
        s_of, kind = predictors(np.asarray(tokens).reshape(-1), counts)
        return s_of, kind, _Sources.own(counts)

    def _basis(self, nxt: np.ndarray):
        """What the dictionary is coded against: here the sample's distinct tokens (compact3's)."""
        return np.unique(nxt[:-1])

    def _basis_size(self, basis) -> int:
        return basis.shape[0]

    def _dictionary_streams(self, uniq: np.ndarray, cls: np.ndarray, basis) -> list:
        """The sample's dictionary (ids, count classes) against `basis`."""
        return _dictionary_streams(uniq, cls, basis)

    def _decode_dictionary(self, dec: entropy.Decoder, basis, n: int) -> tuple[np.ndarray, np.ndarray]:
        return _decode_dictionary(dec, basis, n)

    def _decode_levels(self, buf: bytes, counts: np.ndarray) -> np.ndarray:
        t, n = counts.shape[0], int(counts.sum())
        # the longest stream: the packed drop histograms, at most 1 + 3 numbers per context and drop
        dec = entropy.Decoder(buf, 3 * n + t + 2 * _N_LEVEL_CTX + (1 << _MAX_SHIFT))
        shift = int(dec.next(entropy.uniform(_MAX_SHIFT + 1), 1)[0])
        top = dec.next()
        if shift:
            top = (top << shift) | dec.next(entropy.uniform(1 << shift), top.shape[0])
        starts = np.cumsum(counts) - counts
        if top.shape[0] != int((counts > 0).sum()):
            raise CodecError(f"compact4 codec: {top.shape[0]} top levels for {int((counts > 0).sum())} positions: corrupt sample")
        packed = _decode_numbers(dec).astype(np.int64).tolist()  # Python ints for _unpack_histogram
        hists, at = [], 0
        try:
            for _ in range(_N_LEVEL_CTX):
                h, at = entropy._unpack_histogram(packed, at, n)
                hists.append(h)
        except IndexError:
            raise CodecError("compact4 codec: truncated level histograms: corrupt sample") from None
        if at != len(packed):
            raise CodecError("compact4 codec: level histograms do not match: corrupt sample")
        lvl = np.zeros(n, dtype=np.int64)
        lvl[starts[counts > 0]] = top
        if top.size and top.max() > 1.0 / self.sqrt_step(counts) + 1:  # sqrt(p) <= 1
            raise CodecError("compact4 codec: a level above the scale: corrupt sample")
        # each level's model row and width, built once (levels above the top edge share the last context)
        ctx_of = np.searchsorted(_LEVEL_EDGES, np.arange(int(top.max()) + 1 if top.size else 1), side="right")
        by_level, width = _rows_table(hists).astype(np.float64)[ctx_of], _level_widths(hists)[ctx_of]
        for idx in _level_rounds(counts):
            above = lvl[idx - 1]
            lvl[idx] = above - dec.rows(by_level[above, : width[above].max()])
        dec.finish()
        if n and lvl.min() < 0:
            raise CodecError("compact4 codec: negative level: corrupt sample")
        return lvl

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        t, n = counts.shape[0], int(counts.sum())
        nxt = _next_tokens(tokens, t)
        lay = _Layout(counts, self._decode_levels(cols["teacher_values"], counts))
        n_grp = lay.gstart.shape[0]
        s_of, kind, src = self._sources(tokens, counts)
        t_of, slot, ctx, pctx, pred = lay.predicted(s_of, kind, src)
        # the longest stream: the repeat flags, one per predictor slot, can outnumber the entries
        # (one position may predict two, by its two tokens and by its token alone)
        basis = self._basis(nxt)  # its flags can outnumber the entries (compact5: the prime's kept ids)
        ids_in = entropy.Decoder(cols["teacher_ids"], max(n, t, _N_RB, t_of.shape[0], self._basis_size(basis)) + 1)
        uniq, cls = self._decode_dictionary(ids_in, basis, n)
        sig = counts > 0
        hs = ids_in.next()
        if hs.shape[0] != int(sig.sum()):
            raise CodecError("compact4 codec: hint stream of the wrong length: corrupt sample")
        hint = np.zeros(t, dtype=np.int64)
        hint[sig] = hs
        hp = np.flatnonzero(hint)
        if hp.size and ((hint[hp] > lay.n_groups[hp]).any() or (nxt[hp] < 0).any()):
            raise CodecError("compact4 codec: a hint outside its position's levels: corrupt sample")
        hint_g = lay.first_group[hp] + hint[hp] - 1
        # repeats: membership per predictor slot, then each repeat's level group at t
        kept_t = _decode_context_streams(ids_in, ctx, _N_CTX, "repeat flags") == 1
        r_t, r_src, pctx = t_of[kept_t], slot[kept_t], pctx[kept_t]
        grp = _decode_places(ids_in, pred[kept_t], lay.n_groups[r_t], pctx)
        if grp.size and ((grp < 0).any() or (grp >= lay.n_groups[r_t]).any()):
            raise CodecError("compact4 codec: a repeat outside its position's levels: corrupt sample")
        r_g = lay.first_group[r_t] + grp
        taken = np.bincount(np.concatenate([hint_g, r_g]).astype(np.int64), minlength=n_grp)
        if taken.shape[0] > n_grp or (taken > lay.gsize).any():
            raise CodecError("compact4 codec: a level group holds more ids than its size: corrupt sample")
        # the other entries: each group's remaining slots, coded as compact3 codes them
        rest_g = np.repeat(np.arange(n_grp), lay.gsize - taken)
        fresh = np.ones(rest_g.shape[0], dtype=bool)
        fresh[1:] = rest_g[1:] != rest_g[:-1]
        by_freq, bounds = _dictionary_order(uniq, cls)
        fx = _decode_fresh(ids_in, _rank_bucket(lay.start_rank[lay.gstart[rest_g[fresh]]]), bounds)
        gaps = _decode_numbers(ids_in, int((~fresh).sum())).astype(np.int64)
        ids_in.finish()
        inc = np.zeros(rest_g.shape[0], dtype=np.int64)
        inc[fresh] = fx
        inc[~fresh] = gaps + 1
        x = _segment_cumsum(inc, fresh)
        if x.size and (uniq.shape[0] == 0 or x.max() >= uniq.shape[0]):
            raise CodecError("compact4 codec: dictionary index out of range: corrupt sample")
        # the slots: per group the hinted entry, the repeats in predictor order, the rest by index
        g_all = np.concatenate([hint_g, r_g, rest_g])
        role = np.repeat([0, 1, 2], [hint_g.shape[0], r_g.shape[0], rest_g.shape[0]])
        sub = np.concatenate([np.zeros(hint_g.shape[0], np.int64), np.arange(r_g.shape[0]), np.arange(rest_g.shape[0])])
        order = np.lexsort((sub, role, g_all))
        qs = src.known_ids.shape[0]  # slots of the known (primed) positions come first
        val = np.concatenate([src.known_ids, np.concatenate(
            [nxt[hp], np.full(r_g.shape[0], -1, np.int64), uniq[by_freq][x] if x.size else x])[order]])
        ptr = np.arange(qs + n)
        is_rep = role[order] == 1
        ptr[qs:][is_rep] = r_src[sub[order][is_rep]]
        while True:  # a repeat of a repeat: pointer jumping (predictors lie earlier, so it ends)
            nptr = ptr[ptr]
            if np.array_equal(nptr, ptr):
                break
            ptr = nptr
        ids = val[ptr][qs:]
        pos, lvl = lay.pos, lay.lvl
        o = np.argsort(pos * (1 << 32) + ids, kind="stable")
        ids, lvl = ids[o], lvl[o]
        if n > 1 and ((ids[1:] == ids[:-1]) & (pos[1:] == pos[:-1])).any():
            raise CodecError("compact4 codec: an id kept twice at one position: corrupt sample")
        logq = (2.0 * np.log((lvl + 0.5) * self.sqrt_step(counts))).astype(np.float32)
        return KeptEntries(counts, ids, renormalise(logq, counts), self._tail_from(cols["teacher_tail"], lvl, counts))
