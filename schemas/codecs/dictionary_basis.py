"""The dictionary coded against ids the decoder already knows: the sample's tokens, or a prime.

A third of a sample's kept ids are tokens its own text contains (stored in the sample anyway),
and with a prime most of them were kept there too. Listing such an id in the dictionary then
costs a flag (or a symbol under its context) instead of an id gap; only the other ids are
written as gaps. A *basis* says what is known and how the dictionary is written against it:

* `TokenBasis` (compact3, compact4): one flag per distinct token of the text (in the dictionary
  or not), the other ids as gaps, the count classes of the two kinds in two streams (tokens of
  the text are kept more often).
* `PrimeBasis` (compact5): the prime's kept ids and the sample's tokens, each with a context (its
  class in the prime, 0 if not in it, and whether the text holds it); per candidate one symbol
  under its context's model: 0 (not in the dictionary) or 1 + its count class.

Each basis: `basis(next_tokens)` (what both sides compute), `size(basis)` (its flag count, for the
decoder's stream limit), `streams(uniq, cls, basis)` and `decode(dec, basis, n)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.codecs import entropy
from schemas.codecs.contexts import context_streams, decode_context_streams
from schemas.codecs.numbers import decode_numbers, encode_numbers
from schemas.codecs.prime import N_PRIME_CLS, Prime
from schemas.errors import CodecError


@dataclass(frozen=True)
class TokenBasis:
    """The sample's distinct tokens (compact3's dictionary)."""

    def basis(self, nxt: np.ndarray) -> np.ndarray:
        return np.unique(nxt[:-1])

    def size(self, basis: np.ndarray) -> int:
        return basis.shape[0]

    def streams(self, uniq: np.ndarray, cls: np.ndarray, seen: np.ndarray) -> list:
        flag = np.isin(seen, uniq)
        in_seen = np.isin(uniq, seen)
        other = uniq[~in_seen]
        return (
            [(flag.astype(np.int64), None)]
            + encode_numbers(np.diff(other, prepend=-1) - 1)
            + [(cls[in_seen], None), (cls[~in_seen], None)]
        )

    def decode(self, dec: entropy.Decoder, seen: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        flag = dec.next()
        if flag.shape[0] != seen.shape[0] or (flag.size and flag.max() > 1):
            raise CodecError("compact3 codec: dictionary flags do not match the tokens: corrupt sample")
        other = np.cumsum(decode_numbers(dec).astype(np.int64) + 1) - 1
        from_seen = seen[flag == 1]
        uniq = np.union1d(from_seen, other)
        if (
            uniq.shape[0] != from_seen.shape[0] + other.shape[0]
            or uniq.shape[0] > n
            or (uniq.size and uniq[-1] >= 1 << 32)
        ):
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


@dataclass(frozen=True)
class PrimeBasis:
    """The prime's kept ids and the sample's tokens (compact5's dictionary)."""

    prime: Prime

    def basis(self, nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids the dictionary is coded against, ascending: the prime's kept ids and the
        sample's tokens; and each one's context: its class in the prime (0: not in it), and
        whether the sample's text holds it."""
        kept, kctx = self.prime.kept_context
        toks = np.unique(nxt[:-1])
        toks = toks[toks >= 0]
        at = np.searchsorted(kept, toks)
        new = (
            toks[(at >= kept.shape[0]) | (kept[np.minimum(at, max(kept.shape[0] - 1, 0))] != toks)]
            if kept.size
            else toks
        )
        where = np.searchsorted(kept, new)
        cand = np.insert(kept, where, new)
        ctx = np.insert(kctx, where, 0)
        ctx[np.searchsorted(cand, toks)] += N_PRIME_CLS
        return cand, ctx

    def size(self, basis) -> int:
        return basis[0].shape[0]

    def streams(self, uniq: np.ndarray, cls: np.ndarray, basis) -> list:
        """Per candidate id one symbol under a model per context: 0 (not in the sample's
        dictionary) or 1 + its count class; the other ids as gaps, their classes in one stream."""
        cand, ctx = basis
        at = np.searchsorted(uniq, cand)
        hit = at < uniq.shape[0]
        hit[hit] = uniq[at[hit]] == cand[hit]
        sym = (
            np.where(hit, 1 + cls[np.minimum(at, max(uniq.shape[0] - 1, 0))], 0)
            if uniq.size
            else np.zeros(cand.shape[0], np.int64)
        )
        other = ~np.isin(uniq, cand)
        return (
            context_streams(sym.astype(np.int64), ctx, 2 * N_PRIME_CLS)
            + encode_numbers(np.diff(uniq[other], prepend=-1) - 1)
            + [(cls[other], None)]
        )

    def decode(self, dec: entropy.Decoder, basis, n: int) -> tuple[np.ndarray, np.ndarray]:
        cand, ctx = basis
        sym = decode_context_streams(dec, ctx, 2 * N_PRIME_CLS, "dictionary symbols")
        other = np.cumsum(decode_numbers(dec).astype(np.int64) + 1) - 1
        ocls = dec.next()
        if ocls.shape[0] != other.shape[0]:
            raise CodecError("compact5 codec: dictionary classes of the wrong length: corrupt sample")
        got = cand[sym > 0]
        uniq = np.union1d(got, other)
        if uniq.shape[0] != got.shape[0] + other.shape[0] or uniq.shape[0] > n or (uniq.size and uniq[-1] >= 1 << 32):
            raise CodecError("compact5 codec: dictionary does not match the counts: corrupt sample")
        cls = np.zeros(uniq.shape[0], dtype=np.int64)
        cls[np.searchsorted(uniq, got)] = sym[sym > 0] - 1
        cls[np.searchsorted(uniq, other)] = ocls
        if cls.size and cls.max() > 32:
            raise CodecError("compact5 codec: a dictionary class out of range: corrupt sample")
        return uniq, cls
