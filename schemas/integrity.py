"""Is an MDS index true to storage? Shards checked against what the store holds.

An MDS index lists every shard with the file it is stored as (`zip_data` when compressed, else
`raw_data`), that file's size in bytes and its hashes (our writer records xxh3_64).
`check_shards` checks, without changing anything it reads, that every listed shard file exists,
has the recorded size and (unless `hashes=False`, for huge datasets) the recorded hash. Each
finding is a `Problem` naming the file (relative to the dataset root) and what is wrong.
The dataset-level verdict (manifest, part folders, counts) is `schemas.DatasetDir.verify`, which
knows the layout and uses these checks.

Imports the standard library only; fsspec and xxhash are imported inside the functions.
"""
from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field
from typing import Optional

from schemas.manifest import Manifest

PREFERRED_HASHES = ("xxh3_64", "xxh3_128", "xxh64", "xxh128", "sha256", "sha1", "md5", "xxh32")


@dataclass(frozen=True)
class Problem:
    file: str  # relative to the dataset root ("." for the dataset as a whole)
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}"


@dataclass
class Verification:
    uri: str
    manifest: Optional[Manifest] = None
    index: Optional[dict] = None
    problems: list[Problem] = field(default_factory=list)
    shards_checked: int = 0
    bytes_checked: int = 0  # bytes hashed (0 when hashes were skipped)
    hashed: bool = True

    @property
    def whole(self) -> bool:
        return not self.problems


def hash_bytes(algo: str, data: bytes) -> str:
    """Hex digest as streaming's MDSWriter records it (`streaming.base.hashing.get_hash`)."""
    import xxhash

    if algo in xxhash.algorithms_available:
        return getattr(xxhash, algo)(data).hexdigest()
    return hashlib.new(algo, data).hexdigest()


def supported_hash(recorded: dict) -> Optional[str]:
    for algo in PREFERRED_HASHES:
        if algo in recorded:
            return algo
    return None


def stored_file(shard: dict) -> Optional[dict]:
    """The entry of the file a shard is stored as: zip_data when compressed, else raw_data."""
    return shard.get("zip_data") or shard.get("raw_data")


def list_files(uri: str) -> dict[str, int]:
    """{path relative to the dataset root: size} for every file under it (one recursive listing)."""
    from schemas import storage

    fs, root = storage.fs_and_path(uri)
    fs.invalidate_cache()
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    root = root.rstrip("/")
    out = {}
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        rel = posixpath.relpath(path.replace("\\", "/"), root.replace("\\", "/"))
        out[rel] = int(info.get("size") or 0)
    return out


def check_shards(uri: str, index: dict, listing: dict[str, int], *, index_name: str,
                 hashes: bool = True) -> tuple[list[Problem], int, int]:
    """Every shard the index (stored as `index_name`) lists against storage: (problems, shards
    checked, bytes hashed)."""
    from schemas import storage

    problems: list[Problem] = []
    checked = hashed = 0
    for i, shard in enumerate(index.get("shards") or []):
        entry = stored_file(shard) if isinstance(shard, dict) else None
        if not entry or "basename" not in entry:
            problems.append(Problem(index_name, f"shard {i} has no file entry (raw_data/zip_data)"))
            continue
        name, want_size = entry["basename"], entry.get("bytes")
        checked += 1
        if name not in listing:
            problems.append(Problem(name, f"missing (listed in {index_name} as shard {i})"))
            continue
        if want_size is not None and listing[name] != int(want_size):
            problems.append(Problem(name, f"size {listing[name]} bytes, {index_name} records {want_size} "
                                          "(truncated or replaced)"))
            continue
        if not hashes:
            continue
        recorded = entry.get("hashes") or {}
        algo = supported_hash(recorded)
        if algo is None:
            problems.append(Problem(name, f"{index_name} records no hash for it (cannot verify its content; "
                                          "skip hashing to check sizes only)"))
            continue
        data = storage.read_bytes(storage.join(uri, name))
        hashed += len(data)
        if hash_bytes(algo, data) != recorded[algo]:
            problems.append(Problem(name, f"content differs from {index_name} ({algo} {hash_bytes(algo, data)}, "
                                          f"recorded {recorded[algo]}): corrupt"))
    return problems, checked, hashed
