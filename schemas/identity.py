"""Stable identities: sample ids, tokenizer, file, settings and URI fingerprints (no RNG).

Every content fingerprint in pdistill is made here, so that one hash (sha256, written
"sha256:<hex>") and one serialisation (sorted-key JSON) decide what "the same" means everywhere;
`sample_id` uses blake2b for its 64-bit ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

PREFIX = "sha256:"


def sample_id(source_fingerprint: str, unit: str, index: int) -> int:
    """Deterministic 64-bit id of the index-th sequence of a work unit."""
    h = hashlib.blake2b(f"{source_fingerprint}\x00{unit}\x00{index}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def hasher(first: bytes = b""):
    """An incremental sha256 (for content fed in blocks); finish it with `tagged`."""
    return hashlib.sha256(first)


def tagged(h) -> str:
    """ "sha256:<hex>" of an incremental hasher from `hasher`."""
    return PREFIX + h.hexdigest()


def hex_digest(data: bytes | str, digits: int | None = None) -> str:
    """The sha256 hex digest of bytes (or UTF-8 text), cut to `digits` (an untagged key)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:digits]


def json_digest(obj: Any, *, default=None, digits: int | None = None) -> str:
    """The sha256 hex digest of sorted-key JSON of `obj` (`default` as for json.dumps), cut to `digits`."""
    return hex_digest(json.dumps(obj, sort_keys=True, default=default), digits)


def fingerprint_json(obj: Any, *, default=None, digits: int | None = None) -> str:
    """ "sha256:<hex>" over sorted-key JSON of `obj` (see `json_digest`)."""
    return PREFIX + json_digest(obj, default=default, digits=digits)


def dataset_identity(manifest_json: str | None, index: dict) -> str:
    """Content identity of a dataset: its manifest and root index (shard names, sizes and hashes),
    not its URI. Autoresume compares it, and the shard cache is keyed by it, so a dataset replaced
    at the same location is neither resumed into nor read from the old one's cache."""
    return fingerprint_json(
        {"manifest": json.loads(manifest_json) if manifest_json else None, "index": index}, default=str, digits=16
    )


def fingerprint_files(named_paths: Iterable[tuple[bytes, str]], block: int = 1 << 22) -> str:
    """sha256 over (prefix bytes, file content) pairs in order: each prefix, then the file's bytes."""
    h = hasher()
    for prefix, path in named_paths:
        h.update(prefix)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(block), b""):
                h.update(chunk)
    return tagged(h)


def int_key(key: str) -> int:
    """A stable 64-bit integer of a string (the first 8 bytes of its sha256, big-endian)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def tokenizer_fingerprint(vocab: dict[str, int], special_tokens: dict | None = None) -> str:
    """sha256 over the token->id table and special tokens: equal iff the tokenizers map alike."""
    payload = json.dumps(
        {"vocab": sorted(vocab.items(), key=lambda kv: kv[1]), "special": special_tokens or {}},
        sort_keys=True,
        ensure_ascii=False,
    )
    return PREFIX + hex_digest(payload)


def fingerprint_of(parts: list[str]) -> str:
    """sha256 over an ordered list of strings (e.g. file URIs with sizes and etags)."""
    h = hasher()
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 (os.fsdecode) is still a name
        h.update(b"\x00")
    return tagged(h)


def fingerprint_tokenizer(tokenizer) -> str:
    """Fingerprint of a Hugging Face tokenizer object (duck-typed: get_vocab, all_special_tokens)."""
    special = {"all_special_tokens": sorted(getattr(tokenizer, "all_special_tokens", []) or [])}
    return tokenizer_fingerprint(tokenizer.get_vocab(), special)
