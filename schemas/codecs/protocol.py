"""The `Codec` protocol: what every stored format offers, and what it needs, declared.

A format turns a sequence's `KeptEntries` into the three byte columns of an MDS sample
(teacher_ids, teacher_values, teacher_tail) and back. What a format needs from its caller is
part of the protocol, not probed: `needs_tokens` (the sample's tokens must be passed to encode
and decode: compact3 on), `needs_prime` (the dataset's prime must be loaded with `with_prime`
before encoding or decoding: `PrimedCodec`, compact5), and `stored_defaults` (the parameters a
manifest written before a parameter existed implies: `registry.make_stored_codec`).
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from schemas.kept import KeptEntries


@runtime_checkable
class Codec(Protocol):
    name: str
    needs_tokens: ClassVar[bool]  # encode / decode need the sample's tokens
    needs_prime: ClassVar[bool]  # a `PrimedCodec`: encode / decode need `with_prime`
    stored_defaults: ClassVar[dict]  # parameters a manifest that does not name them was written with

    def params(self) -> dict:
        """The parameters a manifest records (make_codec(name, params) rebuilds the codec)."""

    def kl_design(self) -> float:
        """The codec KL, nats/token, the format is designed for."""

    def kl_bound(self, max_kept: int | None = None) -> float:
        """The codec KL, nats/token, guaranteed for every input."""

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        """The three columns of one sample."""

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        """The sample's kept entries: ids ascending per position, log-probs renormalised over the
        kept set, the log tail mass."""


@runtime_checkable
class PrimedCodec(Codec, Protocol):
    prime_tokens: int  # how many tokens of teacher signal a writer puts in the prime
    prime_sha256: str | None  # the prime the data was coded against, once it exists

    def with_prime(self, prime, where: str = "codec prime") -> PrimedCodec:
        """This codec holding `prime` (refused if it is not the one `prime_sha256` names)."""
