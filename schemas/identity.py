"""Stable identities: sample ids, tokenizer and file fingerprints (sha256 / blake2b, no RNG)."""
from __future__ import annotations

import hashlib
import json


def sample_id(source_fingerprint: str, unit: str, index: int) -> int:
    """Deterministic 64-bit id of the index-th sequence of a work unit."""
    h = hashlib.blake2b(f"{source_fingerprint}\x00{unit}\x00{index}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def tokenizer_fingerprint(vocab: dict[str, int], special_tokens: dict | None = None) -> str:
    """sha256 over the token->id table and special tokens: equal iff the tokenizers map alike."""
    payload = json.dumps(
        {"vocab": sorted(vocab.items(), key=lambda kv: kv[1]), "special": special_tokens or {}},
        sort_keys=True,
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def fingerprint_of(parts: list[str]) -> str:
    """sha256 over an ordered list of strings (e.g. file URIs with sizes and etags)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 (os.fsdecode) is still a name
        h.update(b"\x00")
    return "sha256:" + h.hexdigest()


def fingerprint_tokenizer(tokenizer) -> str:
    """Fingerprint of a Hugging Face tokenizer object (duck-typed: get_vocab, all_special_tokens)."""
    special = {"all_special_tokens": sorted(getattr(tokenizer, "all_special_tokens", []) or [])}
    return tokenizer_fingerprint(tokenizer.get_vocab(), special)
