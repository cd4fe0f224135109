"""`compact2`: the teacher signal at ~1.3-1.4 bytes per kept entry at codec KL < 1e-3 nats/token.

Composed of: values as sqrt(p) levels (`quantiser`), stored in the `bucketed` levels block
(`level_blocks`); ids against a per-sample dictionary written as id gaps (`dictionary`); the tail
on its own scale (`tail.plain_*`); every stream entropy-coded by constriction's ANS under its own
histogram (`entropy`): samples stay self-contained and decode with a handful of vectorised calls.

Columns: teacher_values = levels block, teacher_ids = dictionary + id block, teacher_tail = tail
block. KeptEntries ids are ascending within each position, like the other formats. Any
vocabulary up to 2^32. Deterministic: the same log-probs give the same bytes on a machine (a
level boundary could round differently under another CPU's exp, as the teacher's logits
themselves do), and the decoder works from integers only, so any machine decodes the same.

Measured, and dropped (docs/codecs.md): coding the most often kept ids by inclusion (one bit per
position) saves on ids what their levels then cost unordered; contexts by the position's count,
or class steps inside tied sets, cost more in histograms than they save.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from schemas.codecs import entropy, quantiser, tail
from schemas.codecs.dictionary import (
    decode_indexed_ids,
    decode_plain,
    decoded_entries,
    dictionary,
    index_streams,
    plain_streams,
)
from schemas.codecs.level_blocks import bucketed_arrays, decode_bucketed
from schemas.codecs.structure import checked_entries, drops, entry_order, structure
from schemas.kept import KeptEntries

WORST_ENTRY_KL = quantiser.WORST_ENTRY_KL


@dataclass(frozen=True)
class Compact2Codec(quantiser.SqrtQuantised):
    kl_target: float = 7.5e-4
    tail_step: float = 1.0 / 16.0
    # the least kept mass a position's levels stand for (`quantiser.sqrt_levels`); encoder-only:
    # the decoder never reads it. 0 = format 1 (sqrt(p) of the full softmax, no guaranteed bound):
    # what a manifest without it was written with (`stored_defaults`).
    mass_floor: float = 0.75
    name: str = field(default="compact2", init=False)
    needs_tokens: ClassVar[bool] = False
    needs_prime: ClassVar[bool] = False
    stored_defaults: ClassVar[dict] = {"mass_floor": 0.0}

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        counts, ids, pos = checked_entries(self.name, tr)
        t = counts.shape[0]
        lvl = self.sqrt_levels(tr.logp, counts)
        uniq, cls, bounds, x = dictionary(ids)
        o = entry_order(pos, lvl, x, t, uniq.shape[0])
        lvl, x = lvl[o], x[o]
        _, tied, rb = structure(counts, drops(lvl, counts))
        return {
            "teacher_ids": entropy.encode(plain_streams(uniq, cls) + index_streams(x, ~tied, rb[~tied], bounds)),
            "teacher_values": entropy.encode([(a, None) for a in bucketed_arrays(lvl, counts)]),
            "teacher_tail": tail.plain_block(self.name, tr.log_tail, self.tail_step),
        }

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        t, n = counts.shape[0], int(counts.sum())
        lvl = decode_bucketed(self.name, cols["teacher_values"], counts, split=False)
        _, tied, rb = structure(counts, drops(lvl, counts))
        ids_in = entropy.Decoder(cols["teacher_ids"], max(n, t) + 1)  # no stream holds more symbols
        uniq, cls = decode_plain(ids_in, n)
        ids = decode_indexed_ids(ids_in, ~tied, rb[~tied], uniq, cls, "compact2")
        pos = np.repeat(np.arange(t), counts)
        return decoded_entries(
            counts,
            pos,
            ids,
            lvl,
            self.sqrt_step(counts),
            lambda _: tail.decode_plain(self.name, cols["teacher_tail"], t, self.tail_step),
            self.name,
            check_twice=False,
        )
