"""The id and levels blocks of compact4 and compact5: repeats from predictors, then the rest.

One coder for both formats, composed of the pieces: levels by the level above
(`level_blocks.by_level_above_streams`); in the id block the dictionary against a basis
(`dictionary_basis`), the next-token hint (`hint`), the repeats from each position's predictor
(`repeats`: a flag per predictor slot, then a placement per repeat), and the remaining ids by
dictionary index (`dictionary.index_streams`); the tail against its prediction (`tail`). The
formats differ only in what they hand in: compact4 no prime and a `TokenBasis`, compact5 its
prime (more sources for the predictors) and a `PrimeBasis`.

`codec` is the format (its `name`, `sqrt_levels`, `sqrt_step` and `tail_step` are read).
"""

from __future__ import annotations

import numpy as np

from schemas.codecs import entropy, tail
from schemas.codecs.contexts import context_streams, decode_context_streams
from schemas.codecs.dictionary import (
    decode_indexed_ids,
    decoded_entries,
    dictionary,
    index_streams,
)
from schemas.codecs.hint import decode_hints, hint_stream, next_tokens
from schemas.codecs.level_blocks import by_level_above_streams, decode_by_level_above
from schemas.codecs.prime import Prime
from schemas.codecs.repeats import (
    N_CTX,
    N_RB,
    decode_places,
    place_streams,
    predicted_slots,
    resolve,
    slot_ids,
    sources,
)
from schemas.codecs.structure import (
    Layout,
    checked_entries,
    entry_order,
    groups,
    rank_bucket,
)
from schemas.errors import CodecError
from schemas.kept import KeptEntries


def encode(codec, tr: KeptEntries, tokens, prime: Prime | None, basis) -> dict[str, bytes]:
    """The three columns of one sample."""
    counts, ids, pos0 = checked_entries(codec.name, tr)
    t, n = counts.shape[0], ids.shape[0]
    nxt = next_tokens(tokens, t)
    lvl0 = codec.sqrt_levels(tr.logp, counts)
    o = entry_order(pos0, lvl0, ids, t, int(ids.max()) + 1 if n else 1)  # by position, level desc, id
    lv, ids = lvl0[o], ids[o]
    lay = Layout(counts, lv)
    pos = lay.pos
    level_streams = by_level_above_streams(lv, counts)
    hinted = ids == nxt[pos]
    # repeats: kept at t, kept at its predictor s, not hinted (order-free: membership only)
    s_of, kind, src = sources(tokens, counts, prime)
    key = pos * (1 << 32) + ids
    src_key = np.concatenate([src.known_pos * (1 << 32) + src.known_ids, (pos + src.q) * (1 << 32) + ids])
    ps = s_of[pos]
    repeat = (ps >= 0) & ~hinted & np.isin(np.where(ps >= 0, ps, 0) * (1 << 32) + ids, src_key)
    rest = ~hinted & ~repeat
    uniq, cls, bounds, x = dictionary(ids[rest])
    # slots: per group the hinted entry, the repeats by their slot at s, the rest by dictionary index
    sub = np.zeros(n, dtype=np.int64)
    sub[rest] = x
    role = np.where(hinted, 0, np.where(repeat, 1, 2))
    slot_of = slot_ids(lay, ids, role, sub, repeat, s_of, src)
    # the membership and placement symbols, slot by slot of each predictor
    t_of, slot, ctx, pctx, pred = predicted_slots(lay, s_of, kind, src)
    kept_t = np.isin(t_of * (1 << 32) + slot_of[slot], key[repeat])
    grp = np.zeros(t_of.shape[0], dtype=np.int64)
    if kept_t.any():
        rkey = key[repeat]
        rg = (lay.gnum - lay.first_group[pos])[repeat]
        ok = np.argsort(rkey)
        grp[kept_t] = rg[ok][np.searchsorted(rkey[ok], t_of[kept_t] * (1 << 32) + slot_of[slot[kept_t]])]
    repeat_streams = context_streams(kept_t.astype(np.int64), ctx, N_CTX) + place_streams(
        grp[kept_t], pred[kept_t], lay.n_groups[t_of[kept_t]], pctx[kept_t]
    )
    # the remaining entries, by dictionary index
    pos_r, lv_r, srank_r = pos[rest], lv[rest], lay.start_rank[rest]
    o2 = entry_order(pos_r, lv_r, x, t, uniq.shape[0])
    x, srank_r = x[o2], srank_r[o2]
    fresh = groups(pos_r[o2], lv_r[o2])
    id_streams = (
        basis.streams(uniq, cls, basis.basis(nxt))
        + hint_stream(lay, hinted)
        + repeat_streams
        + index_streams(x, fresh, rank_bucket(srank_r[fresh]), bounds)
    )
    h = codec.sqrt_step(counts)
    return {
        "teacher_ids": entropy.encode(id_streams),
        "teacher_values": entropy.encode(level_streams),
        "teacher_tail": tail.predicted_block(codec.name, tr.log_tail, lvl0, counts, h, codec.tail_step),
    }


def decode(codec, counts: np.ndarray, cols: dict[str, bytes], tokens, prime: Prime | None, basis) -> KeptEntries:
    """The sample's kept entries from its three columns."""
    counts = np.asarray(counts, dtype=np.int64)
    t, n = counts.shape[0], int(counts.sum())
    h = codec.sqrt_step(counts)
    nxt = next_tokens(tokens, t)
    lay = Layout(counts, decode_by_level_above(cols["teacher_values"], counts, h))
    n_grp = lay.gstart.shape[0]
    s_of, kind, src = sources(tokens, counts, prime)
    t_of, slot, ctx, pctx, pred = predicted_slots(lay, s_of, kind, src)
    # the longest stream: the repeat flags, one per predictor slot, can outnumber the entries
    # (one position may predict two, by its two tokens and by its token alone)
    known = basis.basis(nxt)  # its flags can outnumber the entries (compact5: the prime's kept ids)
    ids_in = entropy.Decoder(cols["teacher_ids"], max(n, t, N_RB, t_of.shape[0], basis.size(known)) + 1)
    uniq, cls = basis.decode(ids_in, known, n)
    hp, hint_g = decode_hints(ids_in, lay, nxt, "compact4")
    # repeats: membership per predictor slot, then each repeat's level group at t
    kept_t = decode_context_streams(ids_in, ctx, N_CTX, "repeat flags") == 1
    r_t, r_src, pctx = t_of[kept_t], slot[kept_t], pctx[kept_t]
    grp = decode_places(ids_in, pred[kept_t], lay.n_groups[r_t], pctx)
    if grp.size and ((grp < 0).any() or (grp >= lay.n_groups[r_t]).any()):
        raise CodecError("compact4 codec: a repeat outside its position's levels: corrupt sample")
    r_g = lay.first_group[r_t] + grp
    taken = np.bincount(np.concatenate([hint_g, r_g]).astype(np.int64), minlength=n_grp)
    if taken.shape[0] > n_grp or (taken > lay.gsize).any():
        raise CodecError("compact4 codec: a level group holds more ids than its size: corrupt sample")
    # the other entries: each group's remaining slots, by dictionary index
    rest_g = np.repeat(np.arange(n_grp), lay.gsize - taken)
    fresh = np.ones(rest_g.shape[0], dtype=bool)
    fresh[1:] = rest_g[1:] != rest_g[:-1]
    rest_ids = decode_indexed_ids(
        ids_in, fresh, rank_bucket(lay.start_rank[lay.gstart[rest_g[fresh]]]), uniq, cls, "compact4"
    )
    # the slots: per group the hinted entry, the repeats in predictor order, the rest by index
    g_all = np.concatenate([hint_g, r_g, rest_g])
    role = np.repeat([0, 1, 2], [hint_g.shape[0], r_g.shape[0], rest_g.shape[0]])
    sub = np.concatenate([np.zeros(hint_g.shape[0], np.int64), np.arange(r_g.shape[0]), np.arange(rest_g.shape[0])])
    order = np.lexsort((sub, role, g_all))
    qs = src.known_ids.shape[0]  # slots of the known (primed) positions come first
    val = np.concatenate(
        [src.known_ids, np.concatenate([nxt[hp], np.full(r_g.shape[0], -1, np.int64), rest_ids])[order]]
    )
    ptr = np.arange(qs + n)
    is_rep = role[order] == 1
    ptr[qs:][is_rep] = r_src[sub[order][is_rep]]
    ids = resolve(val, ptr)[qs:]
    return decoded_entries(
        counts,
        lay.pos,
        ids,
        lay.lvl,
        h,
        lambda lvl: tail.decode_predicted(codec.name, cols["teacher_tail"], lvl, counts, h, codec.tail_step),
        "compact4",
    )
