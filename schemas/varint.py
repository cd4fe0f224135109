"""Compatibility path: varints live in `schemas.codecs.varint`."""

from schemas.codecs.varint import decode, encode, unzigzag, zigzag

__all__ = ["decode", "encode", "unzigzag", "zigzag"]
