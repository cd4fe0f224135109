"""Compatibility path: `compact3` lives in `schemas.codecs.compact3`."""

from schemas.codecs.compact3 import Compact3Codec

__all__ = ["Compact3Codec"]
