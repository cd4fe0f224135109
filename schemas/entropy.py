"""Compatibility path: the entropy coder lives in `schemas.codecs.entropy`."""

from schemas.codecs.entropy import MAX_ALPHABET, TABLE, Decoder, decode, encode, uniform

__all__ = ["MAX_ALPHABET", "TABLE", "Decoder", "decode", "encode", "uniform"]
