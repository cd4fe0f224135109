"""pdistill's data contract: sample schema, manifest, logits codec and fidelity metrics.

Imports numpy and the standard library only, so that both the Beam pipeline and the Composer
trainer (and any reader of the datasets) can depend on it without pulling in the other side.
"""

from schemas.codecs import (
    DEFAULT_CODEC,
    Compact2Codec,
    Compact3Codec,
    Compact4Codec,
    Compact5Codec,
    CompactCodec,
    ExactCodec,
    make_codec,
    make_stored_codec,
)
from schemas.dataset_dir import DEAD_LETTER_DIR, INDEX_NAME, MANIFEST_NAME, PARTS_DIR, DatasetDir
from schemas.errors import (
    CodecError,
    CorruptDataset,
    IncompatibleDataset,
    IncompleteDataset,
    ManifestError,
    SchemaError,
)
from schemas.identity import fingerprint_of, fingerprint_tokenizer, sample_id, tokenizer_fingerprint
from schemas.kept import DenseTeacher, KeptEntries
from schemas.manifest import SCHEMA_VERSION, Manifest, check_compatible
from schemas.sample import build_sample, decode_dense, decode_next_logp, decode_sample, mds_columns
from schemas.token_bytes import TokenBytes, UnfitTokenizer, check_byte_coverage, token_bytes
from schemas.truncation import sample_select, truncate, truncate_tensor

__all__ = [
    "CodecError",
    "Compact2Codec",
    "Compact3Codec",
    "Compact4Codec",
    "Compact5Codec",
    "CompactCodec",
    "CorruptDataset",
    "DEAD_LETTER_DIR",
    "DatasetDir",
    "DEFAULT_CODEC",
    "DenseTeacher",
    "ExactCodec",
    "INDEX_NAME",
    "KeptEntries",
    "IncompatibleDataset",
    "IncompleteDataset",
    "MANIFEST_NAME",
    "Manifest",
    "ManifestError",
    "PARTS_DIR",
    "SCHEMA_VERSION",
    "SchemaError",
    "build_sample",
    "check_compatible",
    "decode_dense",
    "decode_sample",
    "decode_next_logp",
    "TokenBytes",
    "UnfitTokenizer",
    "check_byte_coverage",
    "token_bytes",
    "fingerprint_of",
    "fingerprint_tokenizer",
    "make_codec",
    "make_stored_codec",
    "mds_columns",
    "sample_id",
    "sample_select",
    "tokenizer_fingerprint",
    "truncate",
    "truncate_tensor",
]
