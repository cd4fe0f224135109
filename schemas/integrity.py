"""Is a dataset whole? Every check of what a dataset holds on storage, without changing it.

`verify(dataset)` is the dataset-level verdict (`pdistill inspect`, a finished run's re-run):
manifest and root index parse and agree, every part folder keeps its index.json, the codec prime
and the stored tokenizer files are the ones the manifest names, the counts reconcile with the
parts' stats.json and the dead-letter records. Underneath, an MDS index lists every shard with the file it is stored as (`zip_data` when
compressed, else `raw_data`), that file's size in bytes and its hashes (our writer records xxh3_64);
`check_shards` checks that every listed shard file exists, has the recorded size and (unless
`hashes=False`, for huge datasets) the recorded hash. `part_stats` and `check_dead_letters` are the
checks a re-publish (`pipelines.sink.finalize`) runs before it sums counts. Each finding is a
`Problem` naming the file (relative to the dataset root) and what is wrong.

Where the files are is `schemas.dataset_dir.DatasetDir`'s (names: `schemas.layout`); the checks
take a `DatasetDir` and never import its module, which delegates `verify` and `check_shards` here.
Imports the standard library and `schemas` only; xxhash (streaming's) is imported inside `hash_bytes`.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas import storage
from schemas.codecs import CODECS, Prime
from schemas.dead_letters import Tally, against_manifest, against_stats, tally
from schemas.errors import CodecError, CorruptDataset, IncompleteDataset, ManifestError
from schemas.layout import (
    DEAD_LETTER_DIR,
    INDEX_NAME,
    MANIFEST_NAME,
    PARTS_DIR,
    PRIME_NAME,
    SETTINGS_NAME,
    STATS_NAME,
    dead_letter_path,
    stats_path,
    tokenizer_path,
)
from schemas.manifest import Manifest
from schemas.problem import Problem
from schemas.shard_names import name_problems

if TYPE_CHECKING:  # a type only: schemas.dataset_dir imports this module
    from schemas.dataset_dir import DatasetDir

PREFERRED_HASHES = ("xxh3_64", "xxh3_128", "xxh64", "xxh128", "sha256", "sha1", "md5", "xxh32")


@dataclass
class Verification:
    uri: str
    manifest: Manifest | None = None
    index: dict | None = None
    problems: list[Problem] = field(default_factory=list)
    shards_checked: int = 0
    bytes_checked: int = 0  # bytes hashed (0 when hashes were skipped)
    hashed: bool = True

    @property
    def whole(self) -> bool:
        return not self.problems


def hash_bytes(algo: str, data: bytes) -> str:
    """Hex digest as streaming's MDSWriter records it (`streaming.base.hashing.get_hash`)."""
    import xxhash  # noqa: PLC0415 (late: streaming's dependency)

    if algo in xxhash.algorithms_available:
        return getattr(xxhash, algo)(data).hexdigest()
    return hashlib.new(algo, data).hexdigest()


def supported_hash(recorded: dict) -> str | None:
    for algo in PREFERRED_HASHES:
        if algo in recorded:
            return algo
    return None


def stored_file(shard: dict) -> dict | None:
    """The entry of the file a shard is stored as: zip_data when compressed, else raw_data."""
    return shard.get("zip_data") or shard.get("raw_data")


def list_files(uri: str) -> dict[str, int]:
    """{path relative to the dataset root: size} for every file under it (one recursive listing)."""
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


def check_shards(
    uri: str, index: dict, listing: dict[str, int], *, index_name: str, hashes: bool = True
) -> tuple[list[Problem], int, int]:
    """Every shard the index (stored as `index_name`) lists against storage: (problems, shards
    checked, bytes hashed)."""
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
            problems.append(
                Problem(name, f"size {listing[name]} bytes, {index_name} records {want_size} (truncated or replaced)")
            )
            continue
        if not hashes:
            continue
        recorded = entry.get("hashes") or {}
        algo = supported_hash(recorded)
        if algo is None:
            problems.append(
                Problem(
                    name,
                    f"{index_name} records no hash for it (cannot verify its content; "
                    "skip hashing to check sizes only)",
                )
            )
            continue
        data = storage.read_bytes(storage.join(uri, name))
        hashed += len(data)
        if hash_bytes(algo, data) != recorded[algo]:
            problems.append(
                Problem(
                    name,
                    f"content differs from {index_name} ({algo} {hash_bytes(algo, data)}, "
                    f"recorded {recorded[algo]}): corrupt",
                )
            )
    return problems, checked, hashed


def require_whole_shards(dataset: DatasetDir, index: dict) -> None:
    """Every shard the index lists exists with its recorded size and hash; raises
    IncompleteDataset / CorruptDataset naming the first bad shard (`DatasetDir.check_shards`)."""
    problems, _, _ = check_shards(dataset.uri, index, list_files(dataset.uri), index_name=INDEX_NAME, hashes=True)
    for p in problems:
        if p.what.startswith("missing"):
            raise IncompleteDataset(f"dataset {dataset.uri}: shard {p.file} is listed in {INDEX_NAME} but missing")
        raise CorruptDataset(f"dataset {dataset.uri}: shard {p.file} is corrupt ({p.what})")


def verify(dataset: DatasetDir, hashes: bool = True) -> Verification:
    """Is the dataset whole? Never raises for a broken dataset (see `Verification.problems`):
    manifest and root index exist and parse; every listed shard exists with its size and
    (unless `hashes=False`) hash; every part folder a shard lives in keeps its index and their
    number is the manifest's `counts.units`; the index's sample total is `counts.sequences`
    and the counts reconcile (documents = packed + dead letters), also with the dead-letter
    records on storage (`_check_records`; read only with `hashes`, else from the listing)."""
    v = Verification(uri=dataset.uri, hashed=hashes)
    listing = list_files(dataset.uri)
    if not listing:
        v.problems.append(Problem(".", "no such dataset (nothing stored under this URI)"))
        return v
    for name in (INDEX_NAME, MANIFEST_NAME):
        if name not in listing:
            v.problems.append(
                Problem(
                    name,
                    "missing: the dataset is incomplete (the pipeline writes the root "
                    f"{INDEX_NAME}, then {MANIFEST_NAME} last)",
                )
            )
    if MANIFEST_NAME in listing:
        try:
            v.manifest = Manifest.from_json(
                storage.read_bytes(dataset.manifest_uri).decode("utf-8"), where=MANIFEST_NAME
            )
        except UnicodeDecodeError as e:
            v.problems.append(Problem(MANIFEST_NAME, f"not valid JSON ({e})"))
        except ManifestError as e:
            v.problems.append(Problem(MANIFEST_NAME, str(e).removeprefix(f"{MANIFEST_NAME}: ")))
    if INDEX_NAME in listing:
        try:
            v.index = dataset.read_index()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            v.problems.append(Problem(INDEX_NAME, f"not valid JSON ({e})"))
        if v.index is not None and not (isinstance(v.index, dict) and isinstance(v.index.get("shards"), list)):
            v.problems.append(Problem(INDEX_NAME, "has no list of shards"))
            v.index = None
        if v.index is not None and name_problems(v.index, PARTS_DIR):  # nothing is read by such names
            v.problems += [Problem(INDEX_NAME, p) for p in name_problems(v.index, PARTS_DIR)]
            v.index = None
    if v.index is not None:
        problems, v.shards_checked, v.bytes_checked = check_shards(
            dataset.uri, v.index, listing, index_name=INDEX_NAME, hashes=hashes
        )
        v.problems += problems + _check_parts(v.index, v.manifest, listing)
        if hashes:  # deep check: also the files a re-publish reads (one small read per part)
            v.problems += _check_part_files(dataset, v.index, listing)
    if v.manifest is not None:
        c = v.manifest.counts
        if not c.reconciles():
            v.problems.append(
                Problem(
                    MANIFEST_NAME,
                    f"counts do not reconcile: documents {c.documents} != packed "
                    f"{c.packed_documents} + dead letters {c.dead_letters}",
                )
            )
        if v.index is not None:
            in_index = sum(int(s.get("samples", 0)) for s in v.index["shards"] if isinstance(s, dict))
            if in_index != c.sequences:
                v.problems.append(
                    Problem(INDEX_NAME, f"lists {in_index} sequences, {MANIFEST_NAME} counts {c.sequences}")
                )
        v.problems += _check_prime(dataset, v.manifest, listing)
        v.problems += _check_tokenizer_files(dataset, v.manifest, listing, deep=hashes)
    v.problems += _check_records(dataset, listing, v.manifest, deep=hashes)
    return v


def _check_prime(dataset: DatasetDir, manifest: Manifest, listing: dict[str, int]) -> list[Problem]:
    """A codec with a prime (`needs_prime`: compact5): the prime is there, well-formed, and the one the
    manifest names (samples coded against another prime decode to garbage)."""
    fmt = CODECS.get(manifest.codec.name)
    if fmt is None or not fmt.needs_prime:  # no prime to check
        return []
    expected = manifest.codec.params.get("prime_sha256")
    if PRIME_NAME not in listing:
        return [Problem(PRIME_NAME, f"missing: codec {manifest.codec.name} cannot decode a sample without it")]
    try:
        prime = Prime.from_bytes(storage.read_bytes(dataset.prime_uri), where=PRIME_NAME)
    except CodecError as e:
        return [Problem(PRIME_NAME, str(e).removeprefix(f"{PRIME_NAME}: "))]
    if prime.digest != expected:
        return [Problem(PRIME_NAME, f"SHA-256 {prime.digest} is not the {expected} {MANIFEST_NAME} names")]
    return []


def _check_tokenizer_files(dataset: DatasetDir, manifest: Manifest, listing: dict, deep: bool) -> list[Problem]:
    """The tokenizer files the manifest lists are stored (`deep`: with their SHA-256s)."""
    problems = []
    for name, expected in sorted((manifest.tokenizer.files or {}).items()):
        if (rel := tokenizer_path(name)) not in listing:
            problems.append(Problem(rel, f"missing: {MANIFEST_NAME} lists it (tokenizer.files)"))
        elif (
            deep and (got := hashlib.sha256(storage.read_bytes(storage.join(dataset.uri, rel))).hexdigest()) != expected
        ):
            problems.append(Problem(rel, f"SHA-256 {got} is not the {expected} {MANIFEST_NAME} names"))
    return problems


def _shards_per_part(index: dict) -> dict[str, int]:
    """Part folder (unit) -> how many of the root index's shards live in it."""
    out: dict[str, int] = {}
    for shard in index.get("shards") or []:
        entry = stored_file(shard) if isinstance(shard, dict) else None
        parts = (entry or {}).get("basename", "").split("/")
        if len(parts) == 3 and parts[0] == PARTS_DIR:
            out[parts[1]] = out.get(parts[1], 0) + 1
    return out


def _published_parts(listing: dict[str, int]) -> set[str]:
    """Units whose part folder holds its index.json (the part's commit marker)."""
    return {
        p.split("/")[1]
        for p in listing
        if p.startswith(PARTS_DIR + "/") and p.endswith("/" + INDEX_NAME) and p.count("/") == 2
    }


def _check_parts(index: dict, manifest: Manifest | None, listing: dict[str, int]) -> list[Problem]:
    """Part folders: each one a shard lives in keeps its index.json; their number is counts.units."""
    problems = []
    referenced = set(_shards_per_part(index))
    published = _published_parts(listing)
    for unit in sorted(referenced - published):
        problems.append(Problem(f"{PARTS_DIR}/{unit}/{INDEX_NAME}", "missing (the part folder's commit marker)"))
    if manifest is not None and (referenced or published):
        have = len(published | referenced)
        if have != manifest.counts.units:
            problems.append(
                Problem(PARTS_DIR, f"{have} part folders, {MANIFEST_NAME} counts {manifest.counts.units} units")
            )
    return problems


def _check_part_files(dataset: DatasetDir, index: dict, listing: dict[str, int]) -> list[Problem]:
    """Each published part's index.json parses and lists the shards the root index takes from
    it (its stats.json: `_check_records`)."""
    problems = []
    for unit, n in sorted(_shards_per_part(index).items()):
        where = f"{PARTS_DIR}/{unit}"
        if f"{where}/{INDEX_NAME}" not in listing:
            continue  # reported by _check_parts
        try:
            part = json.loads(storage.read_text(storage.join(dataset.part_uri(unit), INDEX_NAME)))
            listed = len(part["shards"]) if isinstance(part, dict) and isinstance(part.get("shards"), list) else None
            problems += [Problem(f"{where}/{INDEX_NAME}", p) for p in name_problems(part, None)]
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problems.append(Problem(f"{where}/{INDEX_NAME}", f"not valid JSON ({e})"))
            listed = n
        if listed is None:
            problems.append(Problem(f"{where}/{INDEX_NAME}", "has no list of shards"))
        elif listed != n:
            problems.append(Problem(f"{where}/{INDEX_NAME}", f"lists {listed} shards, {INDEX_NAME} takes {n} from it"))
    return problems


# -- the counts a re-publish sums and the records behind them -------------------------------
def _check_records(
    dataset: DatasetDir, listing: dict[str, int], manifest: Manifest | None, deep: bool
) -> list[Problem]:
    """The counts a re-publish sums and the dead letters they count (`schemas.dead_letters`).
    From the listing: every published part of a pipeline output (one with our claim, or whose
    manifest accounts per source) keeps its stats.json (other tools' datasets, like the test
    fixtures, have none; reading and training never need it), and a manifest that counts dead
    letters has dead_letter/ records. `deep` (one small read per part and per dead-letter
    file): each stats.json parses, each unit's records reconcile with it, all with the manifest."""
    published = sorted(_published_parts(listing))
    ours = SETTINGS_NAME in listing or (manifest is not None and any(s.documents is not None for s in manifest.sources))
    stats, problems = part_stats(
        dataset, [u for u in published if ours or stats_path(u) in listing], listing, read=deep
    )
    letter_files = sorted(p for p in listing if p.startswith(DEAD_LETTER_DIR + "/"))
    if not deep:
        if manifest is not None and not letter_files:
            problems += against_manifest(Tally(), manifest.counts, DEAD_LETTER_DIR, MANIFEST_NAME)
        return problems
    total, bad = check_dead_letters(dataset, stats, listing, units=published)
    problems += bad
    for name in sorted(set(letter_files) - {dead_letter_path(u) for u in published}):
        found, bad = tally(
            storage.read_bytes(storage.join(dataset.uri, *name.split("/"))), name
        )  # a unit without its part
        total, problems = total + found, problems + bad
    if manifest is not None:
        problems += against_manifest(total, manifest.counts, DEAD_LETTER_DIR, MANIFEST_NAME)
    return problems


def part_stats(
    dataset: DatasetDir, units: list[str], listing: dict[str, int] | None = None, read: bool = True
) -> tuple[dict[str, dict], list[Problem]]:
    """The units' stats.json (the counts a publish sums), each checked: missing, not JSON or
    not an object is a `Problem` naming it. `listing`: `list_files` of the dataset, if at hand."""
    listing = list_files(dataset.uri) if listing is None else listing
    stats, problems = {}, []
    for unit in units:
        where = stats_path(unit)
        if where not in listing:
            problems.append(
                Problem(where, "missing: the part's counts, which the manifest sums (a re-publish reads it)")
            )
            continue
        if not read:
            continue
        try:
            stats[unit] = json.loads(storage.read_text(storage.join(dataset.part_uri(unit), STATS_NAME)))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problems.append(Problem(where, f"not valid JSON ({e})"))
            continue
        if not isinstance(stats[unit], dict):
            problems.append(Problem(where, "is not a JSON object"))
            del stats[unit]
    return stats, problems


def check_dead_letters(
    dataset: DatasetDir, stats: dict[str, dict], listing: dict[str, int] | None = None, units: list[str] | None = None
) -> tuple[Tally, list[Problem]]:
    """(`schemas.dead_letters.Tally` of the records read, problems): each unit's dead-letter
    records (of `units`, default those of `stats`) parse and reconcile with its stats.json,
    where `stats` holds it. `listing`: `list_files` of the dataset, if at hand."""
    if listing is None:
        letters = list_files(storage.join(dataset.uri, DEAD_LETTER_DIR))
        listing = {f"{DEAD_LETTER_DIR}/{n}": size for n, size in letters.items()}
    total, problems = Tally(), []
    for unit in sorted(stats) if units is None else units:
        where, found, bad = dead_letter_path(unit), None, []
        if where in listing:
            found, bad = tally(storage.read_bytes(dataset.dead_letter_uri(unit)), where)
            total += found
        problems += bad
        if unit in stats and not bad:
            problems += against_stats(found, stats[unit], where, stats_path(unit))
    return total, problems
