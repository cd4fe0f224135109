"""Repeats: the kept set where the same text was seen before, as a predictor (compact4 on).

In prose the same tokens recur ("the", ",", "."), and so does the teacher's next-token
distribution after them. For a position t the decoder finds, from the tokens alone, its
*predictor*: the last earlier position s with the same two tokens (tokens[s - 1], tokens[s]) ==
(tokens[t - 1], tokens[t]), else the last one with the same token (`predictors`; with a prime,
`sources` looks in the prime too). On SmolLM2-135M over pydoc prose 74 % of the positions of a
2048-token sample have one, and about half (two tokens) or a third (one token) of their kept ids
were kept at s: 29 % of all kept entries. No distance is coded.

Per position with a predictor, one flag per entry of s says whether that id is kept at t too (a
model per predictor kind and the entry's rank at s against t's count), and each such *repeat*
gets one symbol placing it among t's level groups (`place_streams`). A repeat's id is then not
coded: it is the id in that slot at s.

To point into s the decoder needs s's entries in an order that does not depend on their ids:
each position's *slots* are its level groups in descending order, within a group the hinted
entry first, then the repeats in their order at the predictor, then the other ids by dictionary
index (`slot_ids`). Repeats of repeats are resolved by pointer jumping (`resolve`: predictors
always lie earlier), so decoding stays vectorised; the encoder orders the slots in rounds by
predictor depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.codecs import entropy, varint
from schemas.codecs.contexts import context_streams, decode_context_streams
from schemas.codecs.level_blocks import split_cost
from schemas.codecs.prime import Prime
from schemas.codecs.structure import Layout

REPEAT_RANK_EDGES = np.array([1, 2, 4, 8, 16])  # rank buckets of a predictor's entries: 0, 1, 2-3, 4-7, 8-15, 16+
N_RB = len(REPEAT_RANK_EDGES) + 1
RATIO_QUARTERS = (1, 2, 3, 4, 6)  # membership buckets: rank at s / count at t below 1/4, 1/2, 3/4, 1, 3/2, above
N_RATIO = len(RATIO_QUARTERS) + 1
N_KINDS = 2  # predictor kinds: the same two tokens, the same token (three tokens: no better, measured)
N_CTX = N_KINDS * N_RATIO  # membership contexts


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
class Sources:
    """Where predictors point: q *known* positions (a prime's: `schemas.codecs.prime`; their
    ids, in slot order, known to both sides before the sample) followed by the sample's own T
    positions. Slot indices run over the known slots first, then the sample's entries."""

    q: int
    counts: np.ndarray  # [q + T]
    starts: np.ndarray  # [q + T] each source position's first slot
    known_pos: np.ndarray  # [known slots] the source position of each known slot
    known_ids: np.ndarray  # [known slots] their ids

    @classmethod
    def own(cls, counts: np.ndarray, known_counts=None, known_ids=None) -> Sources:
        """The sample's own positions, after `known_counts` known ones (default none)."""
        kc = np.zeros(0, dtype=np.int64) if known_counts is None else np.asarray(known_counts, dtype=np.int64)
        allc = np.concatenate([kc, counts])
        return cls(
            q=kc.shape[0],
            counts=allc,
            starts=np.cumsum(allc) - allc,
            known_pos=np.repeat(np.arange(kc.shape[0]), kc),
            known_ids=np.zeros(0, dtype=np.int64) if known_ids is None else np.asarray(known_ids, dtype=np.int64),
        )


def sources(tokens, counts: np.ndarray, prime: Prime | None = None) -> tuple[np.ndarray, np.ndarray, Sources]:
    """Each position's predictor (as a source index, -1: none), its kind, and the sources. Without
    a prime: the sample's own positions. With one, in this order: its two tokens' last match in
    the sample, in the prime, its token's last match in the sample, in the prime; the prime
    positions the sample points at become its known sources, in prime order."""
    if prime is None:
        s_of, kind = predictors(np.asarray(tokens).reshape(-1), counts)
        return s_of, kind, Sources.own(counts)
    tok = np.asarray(tokens, dtype=np.int64).reshape(-1)
    s_of, kind = predictors(tok, counts)
    two, one = prime.last_match.lookup(tok, np.flatnonzero(np.asarray(counts) > 0))
    in_two, in_one = (s_of >= 0) & (kind == 0), (s_of >= 0) & (kind == 1)
    use_two = ~in_two & (two >= 0)
    use_one = ~in_two & ~use_two & ~in_one & (one >= 0)
    from_prime = use_two | use_one
    s_of = np.where(use_two, two, np.where(use_one, one, s_of))
    kind = np.where(use_two, 0, np.where(use_one, 1, kind))
    used = np.unique(s_of[from_prime])
    q = used.shape[0]
    s_src = np.where(from_prime, np.searchsorted(used, s_of), np.where(s_of >= 0, s_of + q, -1))
    kc = prime.counts[used]
    first = np.repeat(prime.starts[used], kc) + (np.arange(int(kc.sum())) - np.repeat(np.cumsum(kc) - kc, kc))
    return s_src, kind, Sources.own(counts, kc, prime.ids[first])


def predicted_slots(lay: Layout, s_of: np.ndarray, kind: np.ndarray, src: Sources):
    """The predictor slots: for each position t with a predictor, every slot of s in order.
    Returns (t of each slot, slot index at s in the sources' slot space, membership context,
    placement context, predicted group offset at t: the group holding the slot's rank at t)."""
    has = np.flatnonzero((s_of >= 0) & (lay.counts > 0))
    sizes = src.counts[s_of[has]]
    t_of = np.repeat(has, sizes)
    rank = np.arange(t_of.shape[0]) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    slot = src.starts[s_of[t_of]] + rank
    ct = lay.counts[t_of]
    # membership: the slot's rank at s against the count at t (r / count_t in quarters)
    ratio = sum((4 * rank >= q * ct).astype(np.int64) for q in RATIO_QUARTERS)
    rb = np.searchsorted(REPEAT_RANK_EDGES, rank, side="right")
    at = lay.starts[t_of] + np.minimum(rank, ct - 1)
    pred = lay.gnum[at] - lay.first_group[t_of] if t_of.size else rank
    return t_of, slot, kind[t_of] * N_RATIO + ratio, rb, pred


def place_streams(grp: np.ndarray, pred: np.ndarray, n_groups: np.ndarray, pctx: np.ndarray) -> list:
    """Each repeat's level group at t, a model per rank bucket at s, under the cheaper of two
    rules per bucket (a flag each): relative to the group holding the same rank at t (an
    unchanged distribution costs nothing), or counted from t's lowest group (on real text most
    tail repeats land in the long tied tail while the distribution drifts). The choice uses
    float cost estimates, like compact3's split: in a near-tie another machine may pick the other
    rule; the bytes then differ, the decoded signal does not."""
    rules, sym = [], np.zeros(grp.shape[0], dtype=np.int64)
    for c in range(N_RB):
        sel = pctx == c
        options = (varint.zigzag(grp[sel] - pred[sel]), n_groups[sel] - 1 - grp[sel])
        rule = min((0, 1), key=lambda r: (split_cost(options[r], 0) if options[r].size else 0.0, r))
        rules.append(rule)
        sym[sel] = options[rule]
    return [(np.asarray(rules, dtype=np.int64), entropy.uniform(2))] + context_streams(sym, pctx, N_RB)


def decode_places(dec: entropy.Decoder, pred: np.ndarray, n_groups: np.ndarray, pctx: np.ndarray) -> np.ndarray:
    """Each repeat's level group at t, as `place_streams` wrote it."""
    rules = dec.next(entropy.uniform(2), N_RB)
    sym = decode_context_streams(dec, pctx, N_RB, "repeat placements")
    return np.where(rules[pctx] == 0, pred + varint.unzigzag(sym), n_groups - 1 - sym)


def slot_ids(
    lay: Layout, ids: np.ndarray, role: np.ndarray, sub: np.ndarray, repeat: np.ndarray, s_of: np.ndarray, src: Sources
) -> np.ndarray:
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
    out = np.empty(qs + n, dtype=np.int64)
    out[:qs] = src.known_ids
    out[qs + lay.starts[pos] + rank] = ids
    return out


def resolve(val: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """Each slot's id: a repeat's pointer followed (by pointer jumping: predictors lie earlier,
    so it ends) to a slot whose id is known."""
    while True:
        nptr = ptr[ptr]
        if np.array_equal(nptr, ptr):
            break
        ptr = nptr
    return val[ptr]
