"""`compact5`: compact4 primed with a per-dataset *prime*, teacher signal both sides already hold.

compact4's predictors only look back inside the sample: a 512-token sample finds an earlier
position with the same token at 60 % of its positions and pays for its own id dictionary
(1.04 bit per kept entry at top-0.95-50, against 0.46 on 2048-token samples). A *prime* is a few
thousand positions of the same teacher's signal on the same corpus (tokens, and each position's
kept ids from most to least probable), written once per dataset: every sample may point into it
as if it were text seen before the sample's first token. A position's predictor is then the last
match of its two tokens, else its token, in prime + sample (the sample's own matches are later,
so they win); the prime's positions cost nothing to code, and a repeat from them is coded exactly
as a repeat from inside the sample (a flag per slot, a placement).

Measured (bench/codec, SmolLM2-135M on pydoc prose, a prime of the 16,384 tokens that follow the
bench's 2,048): see the README's codec section. Everything else (levels, hint, dictionary, tail)
is compact4's: it decodes exactly compact2's signal.

The prime is data, not a parameter: the codec's `params()` name it by its SHA-256 (`prime_sha256`,
`Prime.digest`) so a decoder handed another prime refuses instead of decoding garbage; a writer's
settings name only its size (`prime_tokens`), the digest joins the manifest when the prime exists. Its bytes
(`Prime.to_bytes`): magic, then zstd over little-endian P, N, tokens int32[P] (-1 between
documents), int64 here), counts uint32[P], ids uint32[N].
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from schemas import entropy
from schemas.codec_compact2 import _count_classes, _decode_numbers, _encode_numbers
from schemas.codec_compact4 import Compact4Codec, _context_streams, _decode_context_streams, _Sources, predictors
from schemas.errors import CodecError
from schemas.kept import KeptEntries

_MAGIC = b"PDPRIME1"
_N_PRIME_CLS = 8  # dictionary contexts: not in the prime, or its class there (1 .. 6, 7+), times "a token of the sample"
_MAX_PRIME = 1 << 24
DEFAULT_PRIME_TOKENS = 8192  # bench/codec: 4,096 -> 8,192 -> 16,384 tokens gain 0.013 then 0.004 B per kept entry
_MAX_PRIME_TOKENS = 1 << 20  # positions or kept entries a prime file may declare (a corrupt header cannot ask more)


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
        if ids.size and (ids.min() < 0 or ids.max() >= 1 << 32) or tokens.size and (tokens.min() < -1 or tokens.max() >= 1 << 32):
            raise CodecError("codec prime: an id or token outside [0, 2^32)")
        pos = np.repeat(np.arange(counts.shape[0]), counts)
        key = np.sort(pos * (1 << 32) + ids)
        if key.size > 1 and (key[1:] == key[:-1]).any():
            raise CodecError("codec prime: an id kept twice at one position")
        for name, a in (("tokens", tokens), ("counts", counts), ("ids", ids)):
            object.__setattr__(self, name, a)

    @classmethod
    def from_signal(cls, samples: list[tuple[np.ndarray, KeptEntries]]) -> "Prime":
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
        cat = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
        return cls(cat(tokens), cat(counts), cat(ids))

    def to_bytes(self) -> bytes:
        import zstandard

        return _MAGIC + zstandard.ZstdCompressor(level=19).compress(self._payload)

    @classmethod
    def from_bytes(cls, buf: bytes, where: str = "codec prime") -> "Prime":
        import zstandard

        if buf[: len(_MAGIC)] != _MAGIC:
            raise CodecError(f"{where}: not a pdistill codec prime (magic {buf[:len(_MAGIC)]!r})")
        try:
            raw = zstandard.ZstdDecompressor().decompress(buf[len(_MAGIC):], max_output_size=16 * _MAX_PRIME)
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
        return (struct.pack("<QQ", self.tokens.shape[0], self.ids.shape[0]) + self.tokens.astype("<i8").tobytes()
                + self.counts.astype("<u4").tobytes() + self.ids.astype("<u4").tobytes())

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
        return uniq, 1 + np.minimum(_count_classes(cnt), _N_PRIME_CLS - 2)

    @cached_property
    def last_match(self) -> "_LastMatch":
        return _LastMatch.of(self.tokens, self.counts)


@dataclass(frozen=True)
class _LastMatch:
    """The prime's last position (with signal) for each token and each pair (previous token,
    token), the first position's previous token being the separator -1: built once per prime,
    so a sample's predictors into the prime are lookups."""

    tokens: np.ndarray  # distinct tokens of the prime, -1 included, ascending
    single: np.ndarray  # token index -> last position (-1: none)
    pair_keys: np.ndarray  # previous index * len(tokens) + token index, ascending
    pair_pos: np.ndarray  # their last positions

    @classmethod
    def of(cls, tokens: np.ndarray, counts: np.ndarray) -> "_LastMatch":
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


@dataclass(frozen=True)
class Compact5Codec(Compact4Codec):
    """compact4 with a prime. Built without one it only states its parameters (a writer's
    settings, before the prime exists); encode and decode need `with_prime`."""

    prime_tokens: int = DEFAULT_PRIME_TOKENS  # how many tokens of teacher signal the writer puts in the prime
    prime_sha256: str | None = None  # the prime the data was coded against (`Prime.digest`), as a manifest names it
    prime: Prime | None = field(default=None, compare=False, repr=False)
    name: str = field(default="compact5", init=False)
    needs_prime = True  # class attribute: readers and writers must hand it its dataset's prime

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.prime_tokens, int) or isinstance(self.prime_tokens, bool) or not 1 <= self.prime_tokens <= _MAX_PRIME_TOKENS:
            raise CodecError(f"compact5 codec prime_tokens must be an integer in [1, {_MAX_PRIME_TOKENS}], got {self.prime_tokens!r}")
        if self.prime is not None and not isinstance(self.prime, Prime):
            raise CodecError(f"compact5 codec: prime must be a schemas.codec_compact5.Prime, got {type(self.prime).__name__}")
        if self.prime_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(self.prime_sha256)):
            raise CodecError(f"compact5 codec prime_sha256 must be 64 hex digits, got {self.prime_sha256!r}")
        if self.prime is not None and self.prime_sha256 is None:
            object.__setattr__(self, "prime_sha256", self.prime.digest)
        if self.prime is not None and self.prime.digest != self.prime_sha256:
            raise CodecError(f"compact5 codec: the prime's SHA-256 is {self.prime.digest}, not {self.prime_sha256}")

    def with_prime(self, prime: Prime, where: str = "codec prime") -> "Compact5Codec":
        """This codec holding `prime`, which must be the one its `prime_sha256` names (if it names one)."""
        if self.prime_sha256 is not None and prime.digest != self.prime_sha256:
            raise CodecError(f"{where}: its SHA-256 {prime.digest[:16]}... is not the {self.prime_sha256[:16]}... the "
                             "manifest names: the dataset's samples were coded against another prime")
        return dataclasses.replace(self, prime=prime, prime_sha256=prime.digest)

    def params(self) -> dict:
        out = {**super().params(), "prime_tokens": int(self.prime_tokens)}
        return {**out, "prime_sha256": self.prime_sha256} if self.prime_sha256 is not None else out

    def _primed(self) -> Prime:
        if self.prime is None:
            raise CodecError("compact5 codec: no prime loaded (read the dataset's codec prime: "
                             "schemas.DatasetDir.stored_codec)")
        return self.prime

    def _basis(self, nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids the dictionary is coded against, ascending: the prime's kept ids and the
        sample's tokens; and each one's context: its class in the prime (0: not in it), and
        whether the sample's text holds it."""
        kept, kctx = self._primed().kept_context
        toks = np.unique(nxt[:-1])
        toks = toks[toks >= 0]
        at = np.searchsorted(kept, toks)
        new = toks[(at >= kept.shape[0]) | (kept[np.minimum(at, max(kept.shape[0] - 1, 0))] != toks)] if kept.size else toks
        where = np.searchsorted(kept, new)
        cand = np.insert(kept, where, new)
        ctx = np.insert(kctx, where, 0)
        ctx[np.searchsorted(cand, toks)] += _N_PRIME_CLS
        return cand, ctx

    def _basis_size(self, basis) -> int:
        return basis[0].shape[0]

    def _dictionary_streams(self, uniq: np.ndarray, cls: np.ndarray, basis) -> list:
        """Per candidate id one symbol under a model per context: 0 (not in the sample's
        dictionary) or 1 + its count class; the other ids as gaps, their classes in one stream."""
        cand, ctx = basis
        at = np.searchsorted(uniq, cand)
        hit = at < uniq.shape[0]
        hit[hit] = uniq[at[hit]] == cand[hit]
        sym = np.where(hit, 1 + cls[np.minimum(at, max(uniq.shape[0] - 1, 0))], 0) if uniq.size else np.zeros(cand.shape[0], np.int64)
        other = ~np.isin(uniq, cand)
        return (_context_streams(sym.astype(np.int64), ctx, 2 * _N_PRIME_CLS)
                + _encode_numbers(np.diff(uniq[other], prepend=-1) - 1) + [(cls[other], None)])

    def _decode_dictionary(self, dec: entropy.Decoder, basis, n: int) -> tuple[np.ndarray, np.ndarray]:
        cand, ctx = basis
        sym = _decode_context_streams(dec, ctx, 2 * _N_PRIME_CLS, "dictionary symbols")
        other = np.cumsum(_decode_numbers(dec).astype(np.int64) + 1) - 1
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

    def _sources(self, tokens, counts: np.ndarray):
        """Each position's predictor, in this order: its two tokens' last match in the sample, in
        the prime, its token's last match in the sample, in the prime. The prime positions the
        sample points at become its known sources, in prime order."""
        pr = self._primed()
        tok = np.asarray(tokens, dtype=np.int64).reshape(-1)
        s_of, kind = predictors(tok, counts)
        two, one = pr.last_match.lookup(tok, np.flatnonzero(np.asarray(counts) > 0))
        in_two, in_one = (s_of >= 0) & (kind == 0), (s_of >= 0) & (kind == 1)
        use_two = ~in_two & (two >= 0)
        use_one = ~in_two & ~use_two & ~in_one & (one >= 0)
        from_prime = use_two | use_one
        s_of = np.where(use_two, two, np.where(use_one, one, s_of))
        kind = np.where(use_two, 0, np.where(use_one, 1, kind))
        used = np.unique(s_of[from_prime])
        q = used.shape[0]
        s_src = np.where(from_prime, np.searchsorted(used, s_of), np.where(s_of >= 0, s_of + q, -1))
        kc = pr.counts[used]
        first = np.repeat(pr.starts[used], kc) + (np.arange(int(kc.sum())) - np.repeat(np.cumsum(kc) - kc, kc))
        return s_src, kind, _Sources.own(counts, kc, pr.ids[first])
