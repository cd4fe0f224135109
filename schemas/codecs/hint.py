"""The next token as a free hint: the id the text itself says the teacher predicted (compact3 on).

The sample stores its tokens anyway, and the token at t + 1 is the one the teacher predicted at
position t: on real text it is among the kept ids ~90 % of the time and the top entry ~46 %
(SmolLM2-135M on pydoc prose), where a dictionary index would cost ~7.5 bits. Per position
with signal one symbol: 0 = the next token is not a kept id (or there is none: the sample's
last position), else 1 + the index of its level group (0 = the top level) among the position's
groups; the level already says how probable it is, so only the group is needed. The hinted
entry is then left out of the id coding: its id is the next token.
"""

from __future__ import annotations

import numpy as np

from schemas.codecs import entropy
from schemas.codecs.structure import Layout
from schemas.errors import CodecError


def next_tokens(tokens, t: int) -> np.ndarray:
    """[T] the token each position predicts (-1 for the last: it lies in the next sample)."""
    if tokens is None:
        raise CodecError("compact3 codec: needs the sample's tokens (the next token is the hint)")
    tok = np.asarray(tokens).astype(np.int64).reshape(-1)
    if tok.shape[0] != t:
        raise CodecError(f"compact3 codec: {tok.shape[0]} tokens for {t} positions")
    return np.concatenate([tok[1:], [-1]])


def hint_symbols(lay: Layout, hit: np.ndarray) -> np.ndarray:
    """[T] each position's hint (`hit`: the entries whose id is their position's next token)."""
    hint = np.zeros(lay.t, dtype=np.int64)
    hint[lay.pos[hit]] = lay.gnum[hit] - lay.first_group[lay.pos[hit]] + 1
    return hint


def hint_stream(lay: Layout, hit: np.ndarray) -> list:
    """The hint symbols of the positions with signal, under their own histogram."""
    return [(hint_symbols(lay, hit)[lay.counts > 0], None)]


def decode_hints(dec: entropy.Decoder, lay: Layout, nxt: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions with a hint, the global level group each hint lies in)."""
    sig = lay.counts > 0
    hs = dec.next()
    if hs.shape[0] != int(sig.sum()):
        raise CodecError(f"{name} codec: hint stream of the wrong length: corrupt sample")
    hint = np.zeros(lay.t, dtype=np.int64)
    hint[sig] = hs
    hp = np.flatnonzero(hint)
    if hp.size and ((hint[hp] > lay.n_groups[hp]).any() or (nxt[hp] < 0).any()):
        raise CodecError(f"{name} codec: a hint outside its position's levels: corrupt sample")
    return hp, lay.first_group[hp] + hint[hp] - 1
