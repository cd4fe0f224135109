"""Compatibility path: `compact2` lives in `schemas.codecs.compact2`."""

from schemas.codecs.compact2 import WORST_ENTRY_KL, Compact2Codec

__all__ = ["WORST_ENTRY_KL", "Compact2Codec"]
