"""Compatibility path: `compact5` lives in `schemas.codecs.compact5`, its prime in
`schemas.codecs.prime`."""

from schemas.codecs.compact5 import Compact5Codec
from schemas.codecs.prime import DEFAULT_PRIME_TOKENS, Prime

__all__ = ["DEFAULT_PRIME_TOKENS", "Compact5Codec", "Prime"]
