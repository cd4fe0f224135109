"""Is a dataset whole? The root index checked against what storage holds.

The root `index.json` lists every shard with the file it is stored as (`zip_data` when
compressed, else `raw_data`), that file's size in bytes and its hashes (our writer records
xxh3_64). `verify_dataset` checks, without changing anything it reads:
  * `manifest.json` and `index.json` exist and parse;
  * every listed shard file exists, has the recorded size and (unless `hashes=False`, for huge
    datasets) the recorded hash;
  * every part folder a shard lives in still holds its `index.json`, and the number of part
    folders equals the manifest's `counts.units`;
  * the index's sample total equals the manifest's `counts.sequences`, and the manifest's counts
    reconcile (documents = packed + dead letters).
Each finding is a `Problem` naming the file (relative to the dataset root) and what is wrong.
Wrapped by `schemas.dataset_dir.DatasetDir` (`verify`, `check_shards`), which `pdistill inspect` (the
verdict) and the trainer's preflight (local shards) call.

Imports the standard library only; fsspec and xxhash are imported inside the functions.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Optional

from schemas.errors import ManifestError
from schemas.dataset_dir import INDEX_NAME, MANIFEST_NAME, PARTS_DIR
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


def _read_json(uri: str, rel: str, problems: list[Problem]):
    from schemas import storage

    try:
        return json.loads(storage.read_text(storage.join(uri, rel)))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(Problem(rel, f"not valid JSON ({e})"))
    return None


def check_shards(uri: str, index: dict, listing: dict[str, int], *, hashes: bool = True) -> tuple[list[Problem], int, int]:
    """Every shard the index lists against storage: (problems, shards checked, bytes hashed)."""
    from schemas import storage

    problems: list[Problem] = []
    checked = hashed = 0
    for i, shard in enumerate(index.get("shards") or []):
        entry = stored_file(shard) if isinstance(shard, dict) else None
        if not entry or "basename" not in entry:
            problems.append(Problem(INDEX_NAME, f"shard {i} has no file entry (raw_data/zip_data)"))
            continue
        name, want_size = entry["basename"], entry.get("bytes")
        checked += 1
        if name not in listing:
            problems.append(Problem(name, f"missing (listed in {INDEX_NAME} as shard {i})"))
            continue
        if want_size is not None and listing[name] != int(want_size):
            problems.append(Problem(name, f"size {listing[name]} bytes, {INDEX_NAME} records {want_size} "
                                          "(truncated or replaced)"))
            continue
        if not hashes:
            continue
        recorded = entry.get("hashes") or {}
        algo = supported_hash(recorded)
        if algo is None:
            problems.append(Problem(name, f"{INDEX_NAME} records no hash for it (cannot verify its content; "
                                          "skip hashing to check sizes only)"))
            continue
        data = storage.read_bytes(storage.join(uri, name))
        hashed += len(data)
        if hash_bytes(algo, data) != recorded[algo]:
            problems.append(Problem(name, f"content differs from {INDEX_NAME} ({algo} {hash_bytes(algo, data)}, "
                                          f"recorded {recorded[algo]}): corrupt"))
    return problems, checked, hashed


def check_parts(index: dict, manifest: Optional[Manifest], listing: dict[str, int]) -> list[Problem]:
    """Part folders: each one a shard lives in keeps its index.json; their number is counts.units."""
    problems = []
    referenced = set()
    for shard in index.get("shards") or []:
        entry = stored_file(shard) if isinstance(shard, dict) else None
        parts = (entry or {}).get("basename", "").split("/")
        if len(parts) == 3 and parts[0] == PARTS_DIR:
            referenced.add(parts[1])
    published = {p.split("/")[1] for p in listing if p.startswith(PARTS_DIR + "/") and p.endswith("/" + INDEX_NAME)
                 and p.count("/") == 2}
    for unit in sorted(referenced - published):
        problems.append(Problem(f"{PARTS_DIR}/{unit}/{INDEX_NAME}", "missing (the part folder's commit marker)"))
    if manifest is not None and (referenced or published):
        have = len(published | referenced)
        if have != manifest.counts.units:
            problems.append(Problem(PARTS_DIR, f"{have} part folders, {MANIFEST_NAME} counts {manifest.counts.units} units"))
    return problems


def verify_dataset(uri: str, *, hashes: bool = True) -> Verification:
    """Check a dataset for wholeness; never raises for a broken dataset (see `Verification.problems`)."""
    from schemas import storage

    v = Verification(uri=uri, hashed=hashes)
    listing = list_files(uri)
    if not listing:
        v.problems.append(Problem(".", "no such dataset (nothing stored under this URI)"))
        return v
    for name in (INDEX_NAME, MANIFEST_NAME):
        if name not in listing:
            v.problems.append(Problem(name, "missing: the dataset is incomplete (the pipeline writes the root "
                                            f"{INDEX_NAME}, then {MANIFEST_NAME} last)"))
    if MANIFEST_NAME in listing:
        text = storage.read_bytes(storage.join(uri, MANIFEST_NAME))
        try:
            v.manifest = Manifest.from_json(text.decode("utf-8"), where=MANIFEST_NAME)
        except UnicodeDecodeError as e:
            v.problems.append(Problem(MANIFEST_NAME, f"not valid JSON ({e})"))
        except ManifestError as e:
            v.problems.append(Problem(MANIFEST_NAME, str(e).removeprefix(f"{MANIFEST_NAME}: ")))
    if INDEX_NAME in listing:
        index = _read_json(uri, INDEX_NAME, v.problems)
        if index is not None and not (isinstance(index, dict) and isinstance(index.get("shards"), list)):
            v.problems.append(Problem(INDEX_NAME, "has no list of shards"))
            index = None
        v.index = index
    if v.index is not None:
        problems, v.shards_checked, v.bytes_checked = check_shards(uri, v.index, listing, hashes=hashes)
        v.problems += problems
        v.problems += check_parts(v.index, v.manifest, listing)
    if v.manifest is not None:
        c = v.manifest.counts
        if not c.reconciles():
            v.problems.append(Problem(MANIFEST_NAME, f"counts do not reconcile: documents {c.documents} != packed "
                                                     f"{c.packed_documents} + dead letters {c.dead_letters}"))
        if v.index is not None:
            in_index = sum(int(s.get("samples", 0)) for s in v.index["shards"] if isinstance(s, dict))
            if in_index != c.sequences:
                v.problems.append(Problem(INDEX_NAME, f"lists {in_index} sequences, {MANIFEST_NAME} counts {c.sequences}"))
    return v
