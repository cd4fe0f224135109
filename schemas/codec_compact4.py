"""Compatibility path: `compact4` lives in `schemas.codecs.compact4`, its predictors in
`schemas.codecs.repeats`."""

from schemas.codecs.compact4 import Compact4Codec
from schemas.codecs.repeats import predictors

__all__ = ["Compact4Codec", "predictors"]
