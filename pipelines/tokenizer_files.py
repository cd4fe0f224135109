"""The teacher's tokenizer files, stored with the dataset for students with another tokenizer.

A cross-tokenizer student decodes each stored teacher sequence back to bytes, which needs the
teacher's tokenizer itself, not the URI it was loaded from (that checkpoint may be gone or moved
by the time someone trains). The launcher copies `tokenizer.json` (plus `tokenizer_config.json`
and `special_tokens_map.json` where present) byte for byte from the folder the pipeline loads
the tokenizer from; a tokenizer without `tokenizer.json` (a slow one: sentencepiece, vocab +
merges) gets the JSON of its fast conversion (`backend_tokenizer.to_str()`), the same
tokenizer the pipeline tokenised with (`pipelines.packing.load_tokenizer` loads the fast one).
`schemas.DatasetDir.publish_tokenizer_files` writes them create-if-absent and returns the
SHA-256s the manifest records.
"""

from __future__ import annotations

import os

from schemas import storage
from schemas.errors import ConfigError
from schemas.layout import TOKENIZER_FILES
from schemas.redact import redact_uri


def tokenizer_files(uri: str, tokenizer) -> dict[str, bytes]:
    """{file name: bytes} of the tokenizer at `uri`, as loaded into `tokenizer` (a transformers
    tokenizer); ConfigError naming the URI when there is no tokenizer.json and no fast version."""
    folder = storage.fetch_dir(uri)
    files = {}
    for name in TOKENIZER_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                files[name] = f.read()
    if "tokenizer.json" not in files:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(
                f"tokenizer {redact_uri(uri)}: has no tokenizer.json and no fast version to store one from; "
                "save it with transformers' PreTrainedTokenizerFast.save_pretrained first"
            )
        files["tokenizer.json"] = backend.to_str().encode("utf-8")
    return files
