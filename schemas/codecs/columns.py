"""Fixed-width byte columns (the `exact` and `compact` formats): reading them back safely.

A column is a flat little-endian array; a decoder must refuse one whose length is not a whole
number of values, or whose value counts do not match the sample's per-position counts, with one
clear line instead of a numpy error or a silently short signal.
"""

from __future__ import annotations

import numpy as np

from schemas.errors import CodecError


def frombuffer(name: str, buf: bytes, dtype) -> np.ndarray:
    """`buf` as an array of `dtype`; a length that is not a whole number of values is refused."""
    dtype = np.dtype(dtype)
    if len(buf) % dtype.itemsize:
        raise CodecError(
            f"{name} codec: a {len(buf)}-byte column is not a whole number of {dtype} values: corrupt sample"
        )
    return np.frombuffer(buf, dtype=dtype)


def check_lengths(name, n, t, n_ids, n_vals, n_tail):
    """Refuse columns whose lengths do not match n entries over t positions."""
    if n_ids != n or n_vals != n or n_tail != t:
        raise CodecError(
            f"{name} codec: stored lengths do not match the counts (ids {n_ids}, values {n_vals}, "
            f"tail {n_tail}; expected {n} entries over {t} positions): corrupt sample"
        )
