"""The names of a dataset's files, relative to its root (the layout `schemas.dataset_dir` documents).

One place for the names, so the owner of the folder (`schemas.dataset_dir.DatasetDir`) and the
checks of what it holds (`schemas.integrity`) agree on them without importing each other.

Standard library only (nothing at all).
"""

from __future__ import annotations

SETTINGS_NAME = "_settings.json"
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.json"
PARTS_DIR = "parts"
DEAD_LETTER_DIR = "dead_letter"
STATS_NAME = "stats.json"
PRIME_NAME = "codec_prime.bin"
TOKENIZER_DIR = "tokenizer"  # the teacher's tokenizer files, as the manifest's tokenizer.files lists them
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")  # the names stored


def stats_path(unit: str) -> str:
    """A unit's stats.json, relative to the dataset root."""
    return f"{PARTS_DIR}/{unit}/{STATS_NAME}"


def tokenizer_path(name: str) -> str:
    """A stored tokenizer file, relative to the dataset root."""
    return f"{TOKENIZER_DIR}/{name}"


def dead_letter_path(unit: str) -> str:
    """A unit's dead-letter records, relative to the dataset root."""
    return f"{DEAD_LETTER_DIR}/{unit}.jsonl"
