"""Compatibility path: the codecs live in `schemas.codecs` (one module per idea; see its docstring).

Kept so that code and notebooks importing `schemas.codec` keep working; new code imports from
`schemas.codecs` (or `schemas`).
"""

from __future__ import annotations

from schemas.codecs import (
    CODECS,
    DEFAULT_CODEC,
    Codec,
    Compact2Codec,
    Compact3Codec,
    Compact4Codec,
    Compact5Codec,
    CompactCodec,
    ExactCodec,
    lossless_decoded,
    make_codec,
    make_stored_codec,
    renormalise,
    segment_logsumexp,
)

__all__ = [
    "CODECS",
    "DEFAULT_CODEC",
    "Codec",
    "Compact2Codec",
    "Compact3Codec",
    "Compact4Codec",
    "Compact5Codec",
    "CompactCodec",
    "ExactCodec",
    "lossless_decoded",
    "make_codec",
    "make_stored_codec",
    "renormalise",
    "segment_logsumexp",
]
