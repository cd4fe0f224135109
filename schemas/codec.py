"""Codecs: how a sequence's `KeptEntries` become bytes in an MDS sample, and back.

Every codec stores three byte columns beside the per-position counts:
  teacher_ids, teacher_values, teacher_tail.
Decoding returns the same record type (`schemas.kept.KeptEntries`): kept ids ascending per
position and their log-probabilities *renormalised over the kept set* (the paper's F at tau = 1),
plus the log of the dropped tail mass. Temperature is applied at
training time: softmax(logp / tau) over the kept set equals softmax(z / tau) over it.

* `exact`   ids as little-endian uint32, log-probs as float32 (or float16): the reference.
* `compact` (v1, the default until compact2) per position ids sorted ascending and delta-coded as LEB128 varints (the
  first id absolute, then gap - 1), values quantized on the log scale relative to the position's
  top entry, one byte each (q = round((max - logp) / step), clipped at 255), tail log-mass as
  float16. Zstd over the MDS shard then entropy-codes the small gaps and the skewed q values.
  Quantization error in the log domain with step s costs about s**2 / 24 nats of KL.
* `compact2` see schemas.codec_compact2: values quantised on sqrt(p) for the KL they
  cost, ids against a per-sample dictionary, every stream entropy-coded (constriction's ANS).
* `compact3` see schemas.codec_compact3: compact2 with the next token (stored in the
  sample's `tokens`) as a hint, so its id costs a few bits instead of ~10. Needs the tokens to
  encode and decode (`needs_tokens`; schemas.sample passes them).
* `compact4` (default) see schemas.codec_compact4: compact3 plus the kept set at the last earlier
  position with the same tokens, so a recurring id costs ~6 bits instead of ~8. Needs the tokens.
* `compact5` see schemas.codec_compact5: compact4 primed with the dataset's prime (teacher signal
  on a few thousand tokens of the same corpus, one file per dataset): more positions find a
  predictor, and the dictionary is coded against the prime's kept ids. Needs the tokens and the
  prime (`needs_prime`; `schemas.DatasetDir.stored_codec` loads it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas import varint
from schemas.errors import CodecError
from schemas.kept import KeptEntries


def segment_logsumexp(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[T] logsumexp of each position's entries (-inf for positions with no entries)."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.full(counts.shape[0], -np.inf, dtype=np.float64)
    nz = counts > 0
    if not nz.any():
        return out
    starts = (np.cumsum(counts) - counts)[nz]
    v = values.astype(np.float64)
    m = np.maximum.reduceat(v, starts)
    rep = np.repeat(m, counts[nz])
    out[nz] = m + np.log(np.add.reduceat(np.exp(v - rep), starts))
    return out


def renormalise(logp: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Log-probs renormalised over each position's kept set."""
    lse = segment_logsumexp(logp, counts)
    return (logp.astype(np.float64) - np.repeat(lse, counts)).astype(np.float32)


def _sorted_by_id(tr: KeptEntries) -> tuple[np.ndarray, np.ndarray]:
    pos = np.repeat(np.arange(tr.counts.shape[0]), tr.counts)
    order = np.lexsort((tr.ids, pos))
    return tr.ids[order], tr.logp[order]


def lossless_decoded(tr: KeptEntries) -> KeptEntries:
    """What a lossless codec would decode: ids ascending per position, log-probs renormalised
    over the kept set. The reference for codec error, and the live teacher's layout."""
    ids, logp = _sorted_by_id(tr)
    return KeptEntries(np.asarray(tr.counts), ids, renormalise(logp, tr.counts), tr.log_tail)


@dataclass(frozen=True)
class ExactCodec:
    value_dtype: str = "float32"
    name: str = field(default="exact", init=False)

    def __post_init__(self):
        if self.value_dtype not in ("float32", "float16"):
            raise CodecError(f"exact codec value_dtype must be float32 or float16, got {self.value_dtype!r}")

    def params(self) -> dict:
        return {"value_dtype": self.value_dtype}

    def kl_design(self) -> float:
        """Design codec KL, nats/token: none for float32; float16 rounds log-probs in [-16, 0] to
        at most 2^-7, about ulp^2 / 24."""
        return 0.0 if self.value_dtype == "float32" else 2.0**-14 / 24

    def kl_bound(self, max_kept: int | None = None) -> float:
        """Guaranteed codec KL, nats/token, averaged over a sample's positions with signal, for
        samples keeping at most `max_kept` entries per position (default: any, 2^32). float32: none
        (beyond float32 rounding). float16 stores l = ln r with relative error e <= 2^-11, so by
        KL(r || q) <= sum r (e^d - 1 - d), d = e l: each entry costs at most
        2^-23 max_r r^(1 - 2^-11) ln^2 r = 2^-23 * 0.542 (at ln r ~ -2)."""
        if self.value_dtype == "float32":
            return 0.0
        return 2.0**-23 * 0.542 * float(max_kept or 2**32)

    def encode(self, tr: KeptEntries) -> dict[str, bytes]:
        ref = lossless_decoded(tr)
        return {
            "teacher_ids": ref.ids.astype("<u4").tobytes(),
            "teacher_values": ref.logp.astype("<" + np.dtype(self.value_dtype).str[1:]).tobytes(),
            "teacher_tail": tr.log_tail.astype("<f4").tobytes(),
        }

    def decode(self, counts: np.ndarray, cols: dict[str, bytes]) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        n = int(counts.sum())
        ids = _frombuffer(self.name, cols["teacher_ids"], "<u4").astype(np.int64)
        vals = _frombuffer(self.name, cols["teacher_values"], np.dtype(self.value_dtype).newbyteorder("<"))
        tail = _frombuffer(self.name, cols["teacher_tail"], "<f4")
        _check_lengths(self.name, n, counts.shape[0], ids.shape[0], vals.shape[0], tail.shape[0])
        return KeptEntries(counts, ids, renormalise(vals.astype(np.float32), counts), tail.astype(np.float32))


@dataclass(frozen=True)
class CompactCodec:
    step: float = 1.0 / 16.0
    name: str = field(default="compact", init=False)

    def __post_init__(self):
        if not (0.0 < float(self.step) <= 1.0):
            raise CodecError(f"compact codec step must be in (0, 1] nats, got {self.step!r}")

    def params(self) -> dict:
        return {"step": float(self.step)}

    def kl_design(self) -> float:
        """Design codec KL, nats/token: log-domain rounding with step s costs about s^2 / 24."""
        return float(self.step) ** 2 / 24

    def kl_bound(self, max_kept: int | None = None) -> float:
        """Guaranteed codec KL, nats/token, averaged over a sample's positions with signal, for
        samples keeping at most `max_kept` entries per position (default: any, 2^32): s^2 / 8 +
        (max_kept - 1) e^(-255 s). An entry within 255 steps of the top moves by d in [-s/2, s/2]
        in the log domain (Hoeffding: ln E e^d <= E d + s^2 / 8); one clipped at 255 steps keeps at
        most e^(-255 s) of the top's mass, which renormalisation takes from the others."""
        s = float(self.step)
        return s * s / 8 + (float(max_kept or 2**32) - 1) * float(np.exp(-255 * s))

    def encode(self, tr: KeptEntries) -> dict[str, bytes]:
        counts = np.asarray(tr.counts, dtype=np.int64)
        ids, logp = _sorted_by_id(tr)
        starts = np.cumsum(counts) - counts
        gaps = np.empty_like(ids)
        if ids.shape[0]:
            gaps[0] = ids[0]
            gaps[1:] = ids[1:] - ids[:-1] - 1
            nz = counts > 0
            gaps[starts[nz]] = ids[starts[nz]]  # each position's first id is absolute
        top = np.repeat(_segment_max(logp, counts), counts)
        q = np.clip(np.rint((top - logp.astype(np.float64)) / self.step), 0, 255).astype(np.uint8)
        return {
            "teacher_ids": varint.encode(gaps.astype(np.uint64)),
            "teacher_values": q.tobytes(),
            "teacher_tail": tr.log_tail.astype("<f2").tobytes(),
        }

    def decode(self, counts: np.ndarray, cols: dict[str, bytes]) -> KeptEntries:
        counts = np.asarray(counts, dtype=np.int64)
        n = int(counts.sum())
        gaps = varint.decode(cols["teacher_ids"], n).astype(np.int64)
        q = np.frombuffer(cols["teacher_values"], dtype=np.uint8)
        tail = _frombuffer(self.name, cols["teacher_tail"], "<f2")
        _check_lengths(self.name, n, counts.shape[0], gaps.shape[0], q.shape[0], tail.shape[0])
        # ids = running sum of (gap + 1) restarted at each position's first entry
        starts = np.cumsum(counts) - counts
        inc = gaps + 1
        nz = counts > 0
        inc[starts[nz]] = gaps[starts[nz]]
        csum = np.cumsum(inc)
        base = np.repeat(csum[starts[nz]] - inc[starts[nz]], counts[nz])
        ids = csum - base
        rel = -q.astype(np.float32) * np.float32(self.step)
        return KeptEntries(counts, ids, renormalise(rel, counts), tail.astype(np.float32))


def _segment_max(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = np.full(counts.shape[0], -np.inf)
    nz = counts > 0
    if nz.any():
        out[nz] = np.maximum.reduceat(values.astype(np.float64), (np.cumsum(counts) - counts)[nz])
    return out


def _frombuffer(name: str, buf: bytes, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if len(buf) % dtype.itemsize:
        raise CodecError(f"{name} codec: a {len(buf)}-byte column is not a whole number of {dtype} values: corrupt sample")
    return np.frombuffer(buf, dtype=dtype)


def _check_lengths(name, n, t, n_ids, n_vals, n_tail):
    if n_ids != n or n_vals != n or n_tail != t:
        raise CodecError(
            f"{name} codec: stored lengths do not match the counts (ids {n_ids}, values {n_vals}, "
            f"tail {n_tail}; expected {n} entries over {t} positions): corrupt sample"
        )


# compact2/3 live in their own modules and build on renormalise above, hence the late import.
from schemas.codec_compact2 import Compact2Codec  # noqa: E402
from schemas.codec_compact3 import Compact3Codec  # noqa: E402
from schemas.codec_compact4 import Compact4Codec  # noqa: E402
from schemas.codec_compact5 import Compact5Codec  # noqa: E402

# Every codec ever written stays here: a manifest names one of these and its parameters.
CODECS = {"exact": ExactCodec, "compact": CompactCodec, "compact2": Compact2Codec, "compact3": Compact3Codec,
          "compact4": Compact4Codec, "compact5": Compact5Codec}
DEFAULT_CODEC = "compact4"


def make_codec(name: str, params: dict | None = None):
    """Build a codec from its manifest name and parameters."""
    if name not in CODECS:
        raise CodecError(f"unknown codec {name!r}; known: {sorted(CODECS)}")
    try:
        return CODECS[name](**(params or {}))
    except TypeError as e:
        raise CodecError(f"bad parameters for codec {name!r}: {params!r} ({e})") from None


def make_stored_codec(name: str, params: dict | None = None):
    """The codec a manifest names, as its data was written: compact2/3/4 manifests without
    `mass_floor` were written by the format-1 encoder (mass_floor 0; same decoder, no guaranteed
    KL bound). New datasets record the encoder's mass_floor; `make_codec` is for writing."""
    params = dict(params or {})
    if name in ("compact2", "compact3", "compact4"):
        params.setdefault("mass_floor", 0.0)
    return make_codec(name, params)
