"""Every stored format by its manifest name: a manifest names one of these and its parameters.

A format, once written to a dataset, stays here for good (old datasets must keep decoding);
a new idea is a new name. `make_codec` builds the codec a writer uses; `make_stored_codec` the
one a manifest's data was written with (its `stored_defaults` fill the parameters the manifest
predates).
"""

from __future__ import annotations

from schemas.codecs.compact import CompactCodec
from schemas.codecs.compact2 import Compact2Codec
from schemas.codecs.compact3 import Compact3Codec
from schemas.codecs.compact4 import Compact4Codec
from schemas.codecs.compact5 import Compact5Codec
from schemas.codecs.exact import ExactCodec
from schemas.codecs.protocol import Codec
from schemas.errors import CodecError

CODECS = {
    "exact": ExactCodec,
    "compact": CompactCodec,
    "compact2": Compact2Codec,
    "compact3": Compact3Codec,
    "compact4": Compact4Codec,
    "compact5": Compact5Codec,
}
DEFAULT_CODEC = "compact4"


def make_codec(name: str, params: dict | None = None) -> Codec:
    """Build a codec from its manifest name and parameters."""
    if name not in CODECS:
        raise CodecError(f"unknown codec {name!r}; known: {sorted(CODECS)}")
    try:
        return CODECS[name](**(params or {}))
    except TypeError as e:
        raise CodecError(f"bad parameters for codec {name!r}: {params!r} ({e})") from None


def make_stored_codec(name: str, params: dict | None = None) -> Codec:
    """The codec a manifest names, as its data was written: compact2/3/4 manifests without
    `mass_floor` were written by the format-1 encoder (mass_floor 0; same decoder, no guaranteed
    KL bound): each format's `stored_defaults`. New datasets record the encoder's mass_floor;
    `make_codec` is for writing."""
    defaults = CODECS[name].stored_defaults if name in CODECS else {}
    return make_codec(name, {**defaults, **(params or {})})
