"""The prime: teacher signal every sample of a dataset may point into as if seen before it.

compact4's predictors only look back inside the sample: a 512-token sample finds an earlier
position with the same token at 60 % of its positions and pays for its own id dictionary. A
*prime* is a few thousand positions of the same teacher's signal on the same corpus (tokens, and
each position's kept ids from most to least probable), written once per dataset: a sample's
positions then find predictors in it (`schemas.codecs.repeats.sources`), and its dictionary is
coded against the prime's kept ids (`schemas.codecs.dictionary_basis.PrimeBasis`). The prime's
positions cost nothing to code.

The prime is data, not a parameter: a codec's `params()` name it by its SHA-256 (`Prime.digest`)
so a decoder handed another prime refuses instead of decoding garbage. Its bytes
(`Prime.to_bytes`): magic, then zstd over little-endian P, N, tokens int32[P] (-1 between
documents), int64 here), counts uint32[P], ids uint32[N].
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import zstandard

from schemas.codecs.numbers import count_classes
from schemas.errors import CodecError
from schemas.kept import KeptEntries

_MAGIC = b"PDPRIME1"
N_PRIME_CLS = 8  # dictionary contexts: not in the prime, or its class there (1 .. 6, 7+), times "a token of the sample"
_MAX_PRIME = 1 << 24
DEFAULT_PRIME_TOKENS = 8192  # bench/codec: 4,096 -> 8,192 -> 16,384 tokens gain 0.013 then 0.004 B per kept entry
MAX_PRIME_TOKENS = 1 << 20  # positions or kept entries a prime file may declare (a corrupt header cannot ask more)


@dataclass(frozen=True, eq=False)
class Prime:
    """Teacher signal shared by every sample of a dataset: tokens [P] (-1 between documents, where
    counts are 0), counts [P], and each position's kept ids from most to least probable (ties by
    id) [sum(counts)]."""

    tokens: np.ndarray
    counts: np.ndarray
    ids: np.ndarray

    def __post_init__(self):
        tokens, counts, ids = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (self.tokens, self.counts, self.ids))
        if tokens.shape != counts.shape:
            raise CodecError(f"codec prime: {tokens.shape[0]} tokens but {counts.shape[0]} counts")
        if counts.size and counts.min() < 0 or int(counts.sum()) != ids.shape[0]:
            raise CodecError(f"codec prime: counts sum to {int(counts.sum())}, not the {ids.shape[0]} ids")
        if (
            ids.size
            and (ids.min() < 0 or ids.max() >= 1 << 32)
            or tokens.size
            and (tokens.min() < -1 or tokens.max() >= 1 << 32)
        ):
            raise CodecError("codec prime: an id or token outside [0, 2^32)")
        pos = np.repeat(np.arange(counts.shape[0]), counts)
        key = np.sort(pos * (1 << 32) + ids)
        if key.size > 1 and (key[1:] == key[:-1]).any():
            raise CodecError("codec prime: an id kept twice at one position")
        for name, a in (("tokens", tokens), ("counts", counts), ("ids", ids)):
            object.__setattr__(self, name, a)

    @classmethod
    def from_signal(cls, samples: list[tuple[np.ndarray, KeptEntries]]) -> Prime:
        """A prime from (tokens, kept entries) of whole samples, in order, a separator between them."""
        tokens, counts, ids = [], [], []
        for tk, tr in samples:
            tk = np.asarray(tk, dtype=np.int64).reshape(-1)
            if tk.shape[0] != tr.counts.shape[0]:
                raise CodecError(f"codec prime: a sample of {tk.shape[0]} tokens has {tr.counts.shape[0]} positions")
            pos = np.repeat(np.arange(tr.counts.shape[0]), tr.counts)
            o = np.lexsort((tr.ids, -tr.logp.astype(np.float64), pos))
            tokens += [tk, [-1]]
            counts += [np.asarray(tr.counts, dtype=np.int64), [0]]
            ids.append(np.asarray(tr.ids, dtype=np.int64)[o])

        def cat(parts):
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

        return cls(cat(tokens), cat(counts), cat(ids))

    def to_bytes(self) -> bytes:
        return _MAGIC + zstandard.ZstdCompressor(level=19).compress(self._payload)

    @classmethod
    def from_bytes(cls, buf: bytes, where: str = "codec prime") -> Prime:
        if buf[: len(_MAGIC)] != _MAGIC:
            raise CodecError(f"{where}: not a pdistill codec prime (magic {buf[: len(_MAGIC)]!r})")
        try:
            raw = zstandard.ZstdDecompressor().decompress(buf[len(_MAGIC) :], max_output_size=16 * _MAX_PRIME)
        except zstandard.ZstdError as e:
            raise CodecError(f"{where}: corrupt ({e})") from None
        if len(raw) < 16:
            raise CodecError(f"{where}: truncated")
        p, n = struct.unpack_from("<QQ", raw)
        if p > _MAX_PRIME or n > _MAX_PRIME or len(raw) != 16 + 12 * p + 4 * n:
            raise CodecError(f"{where}: {len(raw)} bytes do not hold {p} positions and {n} ids: truncated or corrupt")
        tokens = np.frombuffer(raw, "<i8", p, 16)
        counts = np.frombuffer(raw, "<u4", p, 16 + 8 * p)
        ids = np.frombuffer(raw, "<u4", n, 16 + 12 * p)
        return cls(tokens, counts, ids)

    @cached_property
    def _payload(self) -> bytes:
        return (
            struct.pack("<QQ", self.tokens.shape[0], self.ids.shape[0])
            + self.tokens.astype("<i8").tobytes()
            + self.counts.astype("<u4").tobytes()
            + self.ids.astype("<u4").tobytes()
        )

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the prime's content (not of its zstd bytes: any zstd version agrees)."""
        return hashlib.sha256(self._payload).hexdigest()

    @cached_property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    @cached_property
    def kept_context(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct kept ids ascending, each one's dictionary context: 1 + how often it is kept,
        to a factor of two, capped)."""
        uniq, cnt = np.unique(self.ids, return_counts=True)
        return uniq, 1 + np.minimum(count_classes(cnt), N_PRIME_CLS - 2)

    @cached_property
    def last_match(self) -> LastMatch:
        return LastMatch.of(self.tokens, self.counts)


@dataclass(frozen=True)
class LastMatch:
    """The prime's last position (with signal) for each token and each pair (previous token,
    token), the first position's previous token being the separator -1: built once per prime,
    so a sample's predictors into the prime are lookups."""

    tokens: np.ndarray  # distinct tokens of the prime, -1 included, ascending
    single: np.ndarray  # token index -> last position (-1: none)
    pair_keys: np.ndarray  # previous index * len(tokens) + token index, ascending
    pair_pos: np.ndarray  # their last positions

    @classmethod
    def of(cls, tokens: np.ndarray, counts: np.ndarray) -> LastMatch:
        utok = np.union1d(tokens, [-1])
        ti = np.searchsorted(utok, tokens)
        pi = np.concatenate([[np.searchsorted(utok, -1)], ti[:-1]])
        sig = np.flatnonzero(counts > 0)
        single = np.full(utok.shape[0], -1, dtype=np.int64)
        single[ti[sig]] = sig  # ascending positions: the last write wins
        keys = pi[sig] * utok.shape[0] + ti[sig]
        rk, first = np.unique(keys[::-1], return_index=True)  # first in reverse: the last position
        return cls(utok, single, rk, sig[::-1][first])

    def lookup(self, tokens: np.ndarray, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[T] each position's last pair match and last token match in the prime (-1: none),
        for the positions `sig` (the sample's first position follows a separator)."""
        u = self.tokens.shape[0]
        at = np.minimum(np.searchsorted(self.tokens, tokens), u - 1)
        ti = np.where(self.tokens[at] == tokens, at, -1)
        pi = np.concatenate([[np.searchsorted(self.tokens, -1)], ti[:-1]])
        one = np.full(tokens.shape[0], -1, dtype=np.int64)
        two = np.full(tokens.shape[0], -1, dtype=np.int64)
        known = sig[ti[sig] >= 0]
        one[known] = self.single[ti[known]]
        both = known[pi[known] >= 0]
        if both.size and self.pair_keys.size:
            key = pi[both] * u + ti[both]
            k = np.minimum(np.searchsorted(self.pair_keys, key), self.pair_keys.shape[0] - 1)
            hit = self.pair_keys[k] == key
            two[both[hit]] = self.pair_pos[k[hit]]
        return two, one
