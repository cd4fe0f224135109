"""Vectorised unsigned LEB128 varints: small numbers in one byte, any uint32 in at most five;
and the zigzag map that lets signed differences use them (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...)."""

from __future__ import annotations

import numpy as np

from schemas.errors import CodecError

_MAX_BYTES = 5  # 5 * 7 = 35 bits, enough for any id below 2**32


def encode(values: np.ndarray) -> bytes:
    v = np.asarray(values, dtype=np.uint64)
    if v.size and int(v.max()) >= 1 << 35:
        raise CodecError(f"varint value {int(v.max())} needs more than {_MAX_BYTES} bytes")
    nbytes = np.ones(v.shape[0], dtype=np.int64)
    for b in range(1, _MAX_BYTES):
        nbytes += (v >> np.uint64(7 * b)) > 0
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    starts = np.cumsum(nbytes) - nbytes
    for b in range(_MAX_BYTES):
        m = nbytes > b
        if not m.any():
            break
        byte = ((v[m] >> np.uint64(7 * b)) & np.uint64(0x7F)).astype(np.uint8)
        cont = (nbytes[m] > b + 1).astype(np.uint8) << 7
        out[starts[m] + b] = byte | cont
    return out.tobytes()


def decode(buf: bytes, count: int) -> np.ndarray:
    a = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(a < 0x80)
    if ends.shape[0] != count or (count and ends[-1] != a.shape[0] - 1):
        raise CodecError(f"varint stream holds {ends.shape[0]} values, expected {count}")
    starts = np.concatenate([[0], ends[:-1] + 1]) if count else ends
    lens = ends - starts + 1
    if count and lens.max() > _MAX_BYTES:
        raise CodecError("varint longer than 5 bytes: corrupt id stream")
    out = np.zeros(count, dtype=np.uint64)
    for b in range(int(lens.max()) if count else 0):
        m = lens > b
        out[m] |= (a[starts[m] + b] & 0x7F).astype(np.uint64) << np.uint64(7 * b)
    return out


def zigzag(d: np.ndarray) -> np.ndarray:
    """Signed to unsigned, small magnitudes first: 0, -1, 1, -2, 2 -> 0, 1, 2, 3, 4."""
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def unzigzag(z: np.ndarray) -> np.ndarray:
    return np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
