"""`compact5`: compact4 primed with a per-dataset *prime*, teacher signal both sides already hold.

Composed of compact4's pieces (`repeat_coder`), handed the dataset's prime (`prime`): a
position's predictor is the last match of its two tokens, else its token, in prime + sample
(the sample's own matches are later, so they win: `repeats.sources`), and the dictionary is
coded against the prime's kept ids (`dictionary_basis.PrimeBasis`). A 512-token sample then
finds more predictors and pays far less for its dictionary. It decodes exactly compact2's signal.

The prime is data, not a parameter: `params()` name it by its SHA-256 (`prime_sha256`,
`Prime.digest`) so a decoder handed another prime refuses instead of decoding garbage; a writer's
settings name only its size (`prime_tokens`), the digest joins the manifest when the prime
exists. Built without a prime the codec only states its parameters; encode and decode need
`with_prime` (`needs_prime`; `schemas.DatasetDir.stored_codec` loads it).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from schemas.codecs import quantiser, repeat_coder
from schemas.codecs.dictionary_basis import PrimeBasis
from schemas.codecs.prime import DEFAULT_PRIME_TOKENS, MAX_PRIME_TOKENS, Prime
from schemas.codecs.repeats import sources
from schemas.errors import CodecError
from schemas.kept import KeptEntries


@dataclass(frozen=True)
class Compact5Codec(quantiser.SqrtQuantised):
    """compact4 with a prime. Built without one it only states its parameters (a writer's
    settings, before the prime exists); encode and decode need `with_prime`."""

    kl_target: float = 8e-4  # as compact4's
    tail_step: float = 1.0 / 16.0
    mass_floor: float = 0.75
    name: str = field(default="compact5", init=False)
    prime_tokens: int = DEFAULT_PRIME_TOKENS  # how many tokens of teacher signal the writer puts in the prime
    prime_sha256: str | None = None  # the prime the data was coded against (`Prime.digest`), as a manifest names it
    prime: Prime | None = field(default=None, compare=False, repr=False)
    needs_tokens: ClassVar[bool] = True
    needs_prime: ClassVar[bool] = True  # readers and writers must hand it its dataset's prime
    stored_defaults: ClassVar[dict] = {}

    def __post_init__(self):
        quantiser.check_params(self.kl_target, self.tail_step, self.mass_floor)
        if (
            not isinstance(self.prime_tokens, int)
            or isinstance(self.prime_tokens, bool)
            or not 1 <= self.prime_tokens <= MAX_PRIME_TOKENS
        ):
            raise CodecError(
                f"compact5 codec prime_tokens must be an integer in [1, {MAX_PRIME_TOKENS}], got {self.prime_tokens!r}"
            )
        if self.prime is not None and not isinstance(self.prime, Prime):
            raise CodecError(f"compact5 codec: prime must be a schemas.codecs.Prime, got {type(self.prime).__name__}")
        if self.prime_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(self.prime_sha256)):
            raise CodecError(f"compact5 codec prime_sha256 must be 64 hex digits, got {self.prime_sha256!r}")
        if self.prime is not None and self.prime_sha256 is None:
            object.__setattr__(self, "prime_sha256", self.prime.digest)
        if self.prime is not None and self.prime.digest != self.prime_sha256:
            raise CodecError(f"compact5 codec: the prime's SHA-256 is {self.prime.digest}, not {self.prime_sha256}")

    def with_prime(self, prime: Prime, where: str = "codec prime") -> Compact5Codec:
        """This codec holding `prime`, which must be the one its `prime_sha256` names (if it names one)."""
        if self.prime_sha256 is not None and prime.digest != self.prime_sha256:
            raise CodecError(
                f"{where}: its SHA-256 {prime.digest[:16]}... is not the {self.prime_sha256[:16]}... the "
                "manifest names: the dataset's samples were coded against another prime"
            )
        return dataclasses.replace(self, prime=prime, prime_sha256=prime.digest)

    def params(self) -> dict:
        out = {
            **quantiser.params(self.kl_target, self.tail_step, self.mass_floor),
            "prime_tokens": int(self.prime_tokens),
        }
        return {**out, "prime_sha256": self.prime_sha256} if self.prime_sha256 is not None else out

    def _primed(self) -> Prime:
        if self.prime is None:
            raise CodecError(
                "compact5 codec: no prime loaded (read the dataset's codec prime: schemas.DatasetDir.stored_codec)"
            )
        return self.prime

    def _sources(self, tokens, counts: np.ndarray):
        """Each position's predictor into prime + sample (`repeats.sources`)."""
        return sources(tokens, counts, self._primed())

    def encode(self, tr: KeptEntries, tokens=None) -> dict[str, bytes]:
        prime = self._primed()
        return repeat_coder.encode(self, tr, tokens, prime, PrimeBasis(prime))

    def decode(self, counts: np.ndarray, cols: dict[str, bytes], tokens=None) -> KeptEntries:
        prime = self._primed()
        return repeat_coder.decode(self, counts, cols, tokens, prime, PrimeBasis(prime))
