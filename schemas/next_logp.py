"""The `teacher_next_logp` column: the teacher's log-probability of each actual next token.

A student with another tokenizer cannot read the teacher's kept ids, but it can compare
likelihoods of the same text: the sum of next_logp[t] over a span of teacher tokens is the
teacher's log-probability of those bytes. next_logp[t] = log p_teacher(tokens[t + 1] | tokens[: t + 1]),
NaN where t + 1 >= n_tokens (the last real position and padding).

Format `nl1` (bytes): magic b"NL", a version byte (1), the grid exponent e (step = 2**-e nat),
a varint m (the values before the trailing run of NaN, which is not stored), then one zstd frame
(with its checksum, so damaged bytes are refused, not decoded to other numbers) over the m uint16
codes q = round(-logp / step) byte-shuffled (all low bytes, then all high bytes: the high byte is
the whole-nat part and compresses to ~2 bits, the low byte is near-uniform noise). Code 0xFFFF
marks a NaN inside the stored prefix.

Error bound: |decoded - logp| <= step / 2 = 1/512 nat (0.00195) for logp in [-255.99, 0];
a log-probability below -255.99 nat (p < e^-255, zero for any loss) is stored as -65534 * step,
and a (rounding) positive one as 0. Measured on SmolLM2-135M over the demo corpus (16 sequences
of 512, CPU fp32, mean surprisal 2.78 nat): 1.68 bytes per token (unshuffled 1.70; a 1/64 nat
grid 1.31, 1/1024 1.93); the codes' order-0 entropy is 1.31, so an entropy coder could save ~0.37.
`bench.codec` prints the figure beside the kept entries'.
"""

from __future__ import annotations

import numpy as np
import zstandard

from schemas.codecs import varint
from schemas.errors import CodecError

NAME = "nl1"
STEP_EXPONENT = 8  # step = 2**-8 nat
STEP = 2.0**-STEP_EXPONENT
NAN_CODE = 0xFFFF
MAX_CODE = 0xFFFE
_MAGIC = b"NL\x01"
_MAX_LEN = 1 << 28


def manifest_entry() -> dict:
    """What the manifest records about the column (`schemas.manifest.NextLogp`)."""
    return {"codec": NAME, "step": STEP}


def bound() -> float:
    """The round-trip error bound, in nats, for log-probabilities in [-MAX_CODE * STEP, 0]."""
    return STEP / 2


def _read_count(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    """The header's LEB128 count at ``pos`` (`schemas.codecs.varint`) and the offset after it."""
    head = np.frombuffer(buf[pos : pos + 6], dtype=np.uint8)
    ends = np.flatnonzero(head < 0x80)
    if not len(ends) or ends[0] > 4:
        raise CodecError(f"{where}: truncated or corrupt length")
    end = pos + int(ends[0]) + 1
    return int(varint.decode(buf[pos:end], 1)[0]), end


def encode(values: np.ndarray) -> bytes:
    """float32 [T] log-probabilities (NaN where there is none) -> `nl1` bytes."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    nan = np.isnan(x)
    if np.isinf(x).any():
        raise CodecError("next-token log-probabilities must be finite or NaN, got an infinity")
    m = int(len(x) - np.argmax(~nan[::-1])) if (~nan).any() else 0
    x, nan = x[:m], nan[:m]
    q = np.rint(np.clip(-np.where(nan, 0.0, x), 0.0, MAX_CODE * STEP) * (1 << STEP_EXPONENT))
    q = np.where(nan, NAN_CODE, q).astype("<u2")
    shuffled = q.view(np.uint8).reshape(-1, 2).T.tobytes()  # low bytes, then high bytes
    frame = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(shuffled)
    return _MAGIC + bytes([STEP_EXPONENT]) + varint.encode(np.asarray([m])) + frame


def decode(data: bytes, seq_len: int, where: str = "teacher_next_logp") -> np.ndarray:
    """`nl1` bytes -> float32 [seq_len] (NaN where the teacher gave none); CodecError naming
    `where` for bytes that are not this format, damaged, or longer than the sequence."""
    buf = bytes(data)
    if buf[: len(_MAGIC)] != _MAGIC:
        raise CodecError(f"{where}: not an {NAME} column (starts {buf[:3]!r})")
    if len(buf) < 4 or buf[3] != STEP_EXPONENT:
        raise CodecError(f"{where}: unknown grid exponent {buf[3] if len(buf) > 3 else None}")
    m, pos = _read_count(buf, 4, where)
    if m > seq_len or m > _MAX_LEN:
        raise CodecError(f"{where}: holds {m} positions, the sequence has {seq_len}")
    try:
        raw = zstandard.ZstdDecompressor().decompress(buf[pos:], max_output_size=2 * m + 1)
    except zstandard.ZstdError as e:
        raise CodecError(f"{where}: damaged ({e})") from None
    if len(raw) != 2 * m:
        raise CodecError(f"{where}: {len(raw)} bytes do not hold {m} positions: truncated or corrupt")
    q = np.frombuffer(raw, np.uint8).reshape(2, m).T.copy().view("<u2").reshape(-1)
    out = np.full(seq_len, np.nan, dtype=np.float32)
    out[:m] = np.where(q == NAN_CODE, np.nan, -(q.astype(np.float64) * STEP)).astype(np.float32)
    return out
