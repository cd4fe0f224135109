"""`compact3`: compact2 plus the next token as a free hint.

Composed of: compact2's sqrt(p) levels (`quantiser`), stored in the `split` levels block (each
level stream as a high part and 0-4 raw low bits: `level_blocks`); the next-token hint (`hint`:
~90 % of positions keep their next token, ~46 % at the top); the dictionary against the sample's
own tokens (`dictionary_basis.TokenBasis`) and the other ids by dictionary index (`dictionary`);
the tail against the level the decoded kept mass predicts (`tail.predicted_*`). It decodes to
exactly compact2's signal (ids, log-probs, tail).

Measured and not built (docs/codecs.md): a per-dataset unigram side table saves at most ~0.35
bit per kept entry: not enough for the plumbing of a side file every decoder must read.

encode and decode need the sample's tokens (`needs_tokens`; `schemas.sample` passes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from schemas.codecs import entropy, quantiser, tail
from schemas.codecs.dictionary import (
    decode_indexed_ids,
    decoded_entries,
    dictionary,
    index_streams,
)
from schemas.codecs.dictionary_basis import TokenBasis
from schemas.codecs.hint import decode_hints, hint_stream, next_tokens
from schemas.codecs.level_blocks import bucketed_arrays, decode_bucketed, split_streams
from schemas.codecs.structure import (
    Layout,
    checked_entries,
    entry_order,
    groups,
    rank_bucket,
)
from schemas.kept import KeptEntries

_BASIS = TokenBasis()


@dataclass(frozen=True)
class Compact3Codec(quantiser.SqrtQuantised):
    kl_target: float = 7.5e-4
    tail_step: float = 1.0 / 16.0
    mass_floor: float = 0.75  # as compact2's
    name: str = field(default="compact3", init=False)
    needs_tokens: ClassVar[bool] = True
    needs_prime: ClassVar[bool] = False
    stored_defaults: ClassVar[dict] = {"mass_floor": 0.0}

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        counts, ids, pos = checked_entries(self.name, tr)
        t, n = counts.shape[0], ids.shape[0]
        nxt = next_tokens(tokens, t)
        lvl = self.sqrt_levels(tr.logp, counts)
        # levels: per position descending (ties in any order: they are equal)
        o = entry_order(pos, lvl, np.zeros(n, dtype=np.int64), t, 1)
        lv_s, hit_s = lvl[o], ids[o] == nxt[pos[o]]
        lay = Layout(counts, lv_s)
        # the entries that are not hinted, by dictionary index
        keep = ~hit_s
        lv_r, pos_r, srank_r = lv_s[keep], lay.pos[keep], lay.start_rank[keep]
        uniq, cls, bounds, x = dictionary(ids[o][keep])
        o2 = entry_order(pos_r, lv_r, x, t, uniq.shape[0])  # stable: (pos, level) order is kept
        x, srank_r = x[o2], srank_r[o2]
        fresh = groups(pos_r[o2], lv_r[o2])
        id_streams = (
            _BASIS.streams(uniq, cls, _BASIS.basis(nxt))
            + hint_stream(lay, hit_s)
            + index_streams(x, fresh, rank_bucket(srank_r[fresh]), bounds)
        )
        return {
            "teacher_ids": entropy.encode(id_streams),
            "teacher_values": entropy.encode(split_streams(bucketed_arrays(lv_s, counts))),
            "teacher_tail": tail.predicted_block(
                self.name, tr.log_tail, lvl, counts, self.sqrt_step(counts), self.tail_step
            ),
        }

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        t, n = counts.shape[0], int(counts.sum())
        nxt = next_tokens(tokens, t)
        lay = Layout(counts, decode_bucketed(self.name, cols["teacher_values"], counts, split=True))
        ids_in = entropy.Decoder(cols["teacher_ids"], max(n, t) + 1)
        uniq, cls = _BASIS.decode(ids_in, _BASIS.basis(nxt), n)
        hp, g = decode_hints(ids_in, lay, nxt, "compact3")
        keep = np.ones(n, dtype=bool)
        if hp.size:
            ends = np.append(lay.gstart[1:], n)
            keep[ends[g] - 1] = False  # a group's slots are interchangeable: drop its last
        fresh = groups(lay.pos[keep], lay.lvl[keep])
        ids = np.empty(n, dtype=np.int64)
        ids[keep] = decode_indexed_ids(ids_in, fresh, rank_bucket(lay.start_rank[keep][fresh]), uniq, cls, "compact3")
        ids[~keep] = nxt[lay.pos[~keep]]
        h = self.sqrt_step(counts)
        return decoded_entries(
            counts,
            lay.pos,
            ids,
            lay.lvl,
            h,
            lambda lvl: tail.decode_predicted(self.name, cols["teacher_tail"], lvl, counts, h, self.tail_step),
            "compact3",
        )
