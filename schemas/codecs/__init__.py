"""Codecs: how a sequence's `KeptEntries` become the bytes of an MDS sample, and back.

Every format stores three byte columns beside the per-position counts (teacher_ids,
teacher_values, teacher_tail) and decodes to the same record: kept ids ascending per position,
log-probabilities renormalised over the kept set (the paper's F at tau = 1), the log of the
dropped tail mass. Temperature is applied at training time.

One module per idea, each saying what it saves and why:

  varint, numbers        variable-length numbers: LEB128 bytes; Elias-gamma classes + raw bits
  entropy, contexts      the entropy coder (constriction's ANS) and models per context
  segments, columns      per-position arithmetic on flat entries; fixed-width columns
  quantiser              values as sqrt(p) levels, quantised for the KL they cost
  structure              the level / rank structure both sides know before any id
  level_blocks           three layouts of the levels column
  dictionary             the per-sample id dictionary; ids as dictionary indices
  dictionary_basis       the dictionary against ids the decoder knows (tokens, a prime)
  hint                   the next token as a free hint
  repeats, repeat_coder  the kept set where the same text was seen before, as a predictor
  prime                  per-dataset teacher signal every sample may point into
  tail                   the dropped mass, against the level the kept mass predicts
  protocol, registry     the `Codec` protocol; every stored format by name

The formats are short compositions of those pieces (no format subclasses another):
`exact` (reference), `compact` (v1), `compact2`, `compact3`, `compact4` (default), `compact5`.
docs/codecs.md has the measurements behind each idea.
"""

from schemas.codecs.compact import CompactCodec
from schemas.codecs.compact2 import Compact2Codec
from schemas.codecs.compact3 import Compact3Codec
from schemas.codecs.compact4 import Compact4Codec
from schemas.codecs.compact5 import Compact5Codec
from schemas.codecs.exact import ExactCodec
from schemas.codecs.prime import Prime
from schemas.codecs.protocol import Codec, PrimedCodec
from schemas.codecs.registry import CODECS, DEFAULT_CODEC, make_codec, make_stored_codec
from schemas.codecs.segments import lossless_decoded, renormalise, segment_logsumexp

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
    "Prime",
    "PrimedCodec",
    "lossless_decoded",
    "make_codec",
    "make_stored_codec",
    "renormalise",
    "segment_logsumexp",
]
