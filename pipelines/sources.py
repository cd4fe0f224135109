"""Reading the data lake: expand URIs, plan deterministic work units, read documents out of them.

Formats (by extension unless `format` is forced):
  * Parquet (`.parquet`, `.pq`): the text column is configurable; units are ranges of whole
    row groups holding about `rows_per_unit` rows; positions are absolute row indexes.
  * JSONL (`.jsonl`, `.json`, `.ndjson`): one JSON object per line. Uncompressed files are split
    into byte ranges of `bytes_per_unit`; a line belongs to the unit holding its first byte, so
    the ranges partition the lines whatever their lengths. `.gz` / `.zst` files are one unit
    each (a compressed stream cannot be entered in the middle). Positions are byte offsets
    (uncompressed files) or line number + uncompressed byte offset (compressed files).
    Empty lines (nothing but whitespace) are not documents and are skipped.
  * Plain text (`.txt`, `.text`, `.md`, optionally `.gz`/`.zst`): one document per file (a text
    file has no reliable record separator; a file is what its author meant as a unit).

Hidden names are not input, the same for a folder and a glob: a file whose name, or a folder's
below the input's root, starts with `.` or `_` (Spark's `_SUCCESS` and `_temporary/`, `.crc`
files; Hadoop's and `pyarrow.dataset`'s rule) is skipped and counted (`Listing.hidden`; the run's
report says how many), unless the input names such a component itself (`lake/_part.jsonl`,
`lake/_*.jsonl`).

What is listed but cannot be read is a source like any other, flagged, never dropped: a local
sub-folder that cannot be listed (permissions), a dangling symlink or a symlink loop, and anything
that is not a regular file (a FIFO would block `open()` forever; it is never opened) become a
`SourceFile` with a `problem`, one unit that reads as one dead letter (`unreadable_folder` /
`unreadable_file`, 0 documents, incomplete), so the manifest flags it. An input folder or a glob's
folder that cannot be listed at all is refused.

Units are named `u<file>-<part>` with zero padding, so sorted names are the intended global
order. Files are ordered by input pattern, then by their name relative to the pattern's root
(the folder before the first glob character, the folder itself, or a file's parent folder).

Identity is location-independent, so a copy of the corpus on another store (local disk, s3://,
gs://) is the same input and yields the same sample ids: a file's fingerprint is its relative
name, its size and a sha256 of its content, sampled as the first and last `SAMPLE_BYTES` (the
whole file when it is no larger than twice that; two ranged reads per file, in parallel, at
planning time). The store's own version (ETag, md5Hash / crc32c, or mtime on local disks) is
kept beside it (`SourceFile.version`): the job records them and refuses to resume an output
whose inputs changed in place, which catches the edits a sampled hash cannot see.

Reading the documents out of a unit (and accounting for every one of them) is
`pipelines.readers`; `read_unit`, `Doc` and `dead_letter` are re-exported here.

URIs are redacted (`schemas.redact`) in every message and record. Identities use them whole,
except the secret query parameters of a signed URL: its signature rotates, the file stays the same.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pipelines.readers import Doc, dead_letter, read_unit  # noqa: F401  (re-exported)
from pipelines.streams import irregular_kind
from schemas import fingerprint_of, storage
from schemas.identity import hasher, tagged
from schemas.redact import redact_query, redact_text, redact_uri
from schemas.storage import object_version

EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
}
COMPRESSIONS = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
GLOB_CHARS = "*?["
HIDDEN_PREFIXES = (".", "_")  # hidden names: never input unless the input names them (module docstring)
SAMPLE_BYTES = 64 << 10  # content fingerprint: this many bytes from each end of a file
FINGERPRINT_THREADS = 16


class InputError(FileNotFoundError):
    """An input URI that matches nothing or names a file we cannot read; raised before any work."""


@dataclass(frozen=True)
class SourceFile:
    uri: str  # absolute path (local) or protocol-qualified URI
    size: int
    version: str  # the store's checksum / etag when it has one, else mtime (location-dependent)
    fmt: str  # parquet | jsonl | text
    compression: str | None  # gz | zst | None
    name: str = ""  # path relative to its input pattern's root (location-independent)
    content: str = ""  # sha256 of the sampled content (see the module docstring)
    problem: str = ""  # why it cannot be read, found while listing (then fmt is "unreadable" or "folder")

    @property
    def fingerprint(self) -> str:
        """Location-independent identity: relative name, size, sampled content hash."""
        return fingerprint_of([self.name or posixpath.basename(self.uri), str(self.size), self.content or self.version])


@dataclass(frozen=True)
class Unit:
    name: str
    uri: str
    fmt: str
    compression: str | None
    start: int  # parquet: first row group; jsonl: first byte; 0 for whole files
    end: int  # exclusive; -1 = to the end of the file
    first_row: int = 0  # parquet: absolute index of the first row of the range
    source: int = 0  # index of the unit's file in the planned (manifest) source list
    problem: str = ""  # its file's listing problem: read as one dead letter, storage never touched


@dataclass(frozen=True)
class Listing:
    files: list[SourceFile]  # what the inputs name, in order; unreadable ones flagged with a `problem`
    hidden: list[str]  # files skipped for a hidden name (redacted URIs)


# -- expanding inputs -----------------------------------------------------------------------------


def _full_uri(fs, path: str, pattern: str) -> str:
    return path if storage.is_local(pattern) else fs.unstrip_protocol(path)


def detect_format(uri: str, forced: str = "auto") -> tuple[str, str | None]:
    web = uri.lower().startswith(("http://", "https://"))  # a URL's query (a signature, a token) is not its name
    name = posixpath.basename(uri.split("?", 1)[0] if web else uri).lower()
    compression = None
    for ext, comp in COMPRESSIONS.items():
        if name.endswith(ext):
            compression, name = comp, name[: -len(ext)]
            break
    fmt = forced if forced != "auto" else EXTENSIONS.get(posixpath.splitext(name)[1])
    if fmt is None:
        raise InputError(
            f"input file {redact_uri(uri)}: unknown format (extension not one of {sorted(EXTENSIONS)}, "
            "optionally .gz/.zst); set `format` to parquet, jsonl or text"
        )
    if fmt == "parquet" and compression:
        raise InputError(f"input file {redact_uri(uri)}: a Parquet file cannot be .gz/.zst compressed as a whole")
    return fmt, compression


def _pattern_root(path: str, pattern: str, is_dir: bool) -> str:
    """The folder that names are taken relative to: before the first glob char, the folder, or the parent."""
    cut = [path.find(c) for c in GLOB_CHARS if c in path]
    if cut and any(c in pattern for c in GLOB_CHARS):
        return path[: min(cut)].rsplit("/", 1)[0]
    return path.rstrip("/") if is_dir else posixpath.dirname(path.rstrip("/"))


def content_hash(fs, path: str, size: int) -> str:
    """sha256 over the size, the first and the last SAMPLE_BYTES (the whole file if small)."""
    h = hasher(str(size).encode() + b"\x00")
    if size <= 2 * SAMPLE_BYTES:
        h.update(fs.cat_file(path) if size else b"")
    else:
        h.update(fs.cat_file(path, start=0, end=SAMPLE_BYTES))
        h.update(fs.cat_file(path, start=size - SAMPLE_BYTES, end=size))
    return tagged(h)


def _hidden(name: str, pattern_below_root: str) -> bool:
    """A name with a component starting with `.` or `_`, unless the pattern spells such a component."""
    if any(part.startswith(HIDDEN_PREFIXES) for part in pattern_below_root.split("/")):
        return False
    return any(part.startswith(HIDDEN_PREFIXES) for part in name.split("/"))


def _could_hold(folder: str, pattern_below_root: str) -> bool:
    """Whether files the pattern matches could lie in `folder` (relative to the pattern's root)."""
    if not pattern_below_root:  # a folder input: everything below it
        return True
    parts = pattern_below_root.split("/")
    for i, name in enumerate(folder.split("/")):
        if "**" in parts[min(i, len(parts) - 1)]:  # any depth from here
            return True
        if i >= len(parts) - 1:  # the pattern's last component names files, not folders
            return False
        if not fnmatch.fnmatchcase(name, parts[i]):
            return False
    return True


def _unlistable_folders(root: str, below: str) -> list[OSError]:
    """The errors of local folders under `root` that cannot be listed and could hold matches:
    fsspec's walk omits them silently (and does not pass its `on_error` down to sub-folders)."""
    errors: list[OSError] = []

    def unlisted(e: OSError) -> None:
        if not isinstance(e, FileNotFoundError):  # gone (or never there): no files lost; "no such file" follows
            errors.append(e)

    for folder, dirs, _ in os.walk(root or ".", onerror=unlisted):
        rel = os.path.relpath(folder, root or ".")
        dirs[:] = [
            d for d in dirs if not _hidden(d, below) and _could_hold(d if rel == "." else posixpath.join(rel, d), below)
        ]
    return errors


def _stat_problem(p: str, local: bool, e: Exception) -> str:
    """Why a listed name cannot be looked at: a dangling symlink, a symlink loop, or the error."""
    if local and os.path.islink(p):
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        what = "a symlink loop" if isinstance(e, OSError) and e.errno == errno.ELOOP else "a dangling symlink"
        return redact_text(f"{what} (to {target}): {type(e).__name__}: {e.strerror or e}")
    return redact_text(f"cannot look at it ({type(e).__name__}: {e})")


def list_inputs(patterns: list[str], forced_format: str = "auto") -> Listing:
    """All files matched by the input URIs/globs/folders, in pattern order then by relative name;
    fail fast on no match. A file matched by two patterns is taken once, where first matched. What
    cannot be read is listed with a `problem`; hidden names are skipped and counted (module docstring)."""
    if not patterns:
        raise InputError("no input given (--input URI_OR_GLOB)")
    seen: set[str] = set()
    hidden: list[str] = []
    jobs = []  # (fs, path, uri, size, version, fmt, comp, name, order, problem)
    for pi, pattern in enumerate(patterns):
        fs, path = storage.fs_and_path(pattern)
        local = storage.is_local(pattern)
        globbed = any(c in pattern for c in GLOB_CHARS)
        is_dir = False
        try:
            fs.invalidate_cache()  # listings cached by an earlier call (or another process's writes) go stale
            if globbed:
                paths = [p for p in fs.glob(path) if not fs.isdir(p)]
            elif fs.isdir(path):
                is_dir = True
                paths = fs.find(path)
            elif fs.exists(path) or (local and fs.lexists(path)):  # a dangling symlink: listed, flagged
                paths = [path]
            else:
                paths = []
        except (OSError, ValueError) + storage.refusals() as e:  # no credentials is not an OSError
            raise InputError(redact_text(f"input {pattern}: cannot list ({type(e).__name__}: {e})")) from None
        root = _pattern_root(path, pattern, is_dir)
        below = path[len(root) :].strip("/") if globbed else ""  # the pattern below its root
        unlisted = _unlistable_folders(root, below) if local and (globbed or is_dir) else []
        unlisted_problem: dict[str, str] = {}  # folder -> why it could not be listed
        for e in unlisted:
            folder = e.filename.rstrip("/") if isinstance(e.filename, str) else ""
            if not folder or folder in (root.rstrip("/"), path.rstrip("/")):  # the input itself
                raise InputError(redact_text(f"input {pattern}: cannot list ({type(e).__name__}: {e})")) from None
            name = posixpath.relpath(folder, root)
            if name.startswith("..") or _hidden(name, below) or not _could_hold(name, below):
                continue
            paths.append(folder)
            unlisted_problem[folder] = redact_text(
                f"cannot list the folder ({type(e).__name__}: {e.strerror or e}): the files in it are not read"
            )
        if not paths:
            raise InputError(f"input {redact_uri(pattern)}: no such file, or the glob matches no files")
        for p in sorted(paths):
            uri = _full_uri(fs, p, pattern)
            name = posixpath.relpath(p, root) if root else p
            if (globbed or is_dir) and _hidden(name, below):
                hidden.append(redact_uri(uri))
                continue
            if uri in seen:
                continue
            seen.add(uri)
            name = redact_query(name) if "://" in uri else name  # a rotated signature is the same input
            order = (pi, name)
            if p in unlisted_problem:
                jobs.append((fs, p, uri, 0, "unlisted", "folder", None, name, order, unlisted_problem[p]))
                continue
            try:
                info = fs.info(p)
                kind = irregular_kind(p) if local else ("not a file" if info.get("type") == "other" else "")
            except (OSError, ValueError) + storage.refusals() as e:  # a dangling symlink, a loop, vanished
                jobs.append((fs, p, uri, 0, "unreadable", "unreadable", None, name, order, _stat_problem(p, local, e)))
                continue
            if kind:
                problem = f"not a regular file ({kind}): never opened, it could block or never end"
                jobs.append((fs, p, uri, 0, object_version(info), "unreadable", None, name, order, problem))
                continue
            fmt, comp = detect_format(uri, forced_format)
            jobs.append((fs, p, uri, int(info.get("size") or 0), object_version(info), fmt, comp, name, order, ""))

    def one(job):
        fs, p, uri, size, version, fmt, comp, name, _, problem = job
        if problem:
            return SourceFile(uri, size, version, fmt, comp, name, f"unreadable:{version}", problem)
        try:
            content = content_hash(fs, p, size)
        except (
            OSError,
            ValueError,
        ) + storage.refusals() as e:  # unreadable: dead-lettered on read; identity by version
            content = f"unreadable:{type(e).__name__}:{version}"
        return SourceFile(uri, size, version, fmt, comp, name, content)

    with ThreadPoolExecutor(max_workers=min(FINGERPRINT_THREADS, max(1, len(jobs)))) as pool:
        files = list(pool.map(one, jobs))
    order = {f.uri: j[8] for f, j in zip(files, jobs)}
    return Listing(sorted(files, key=lambda f: order[f.uri]), sorted(set(hidden)))


def expand_inputs(patterns: list[str], forced_format: str = "auto") -> list[SourceFile]:
    """`list_inputs(...).files`."""
    return list_inputs(patterns, forced_format).files


def source_fingerprint(files: list[SourceFile]) -> str:
    """One location-independent fingerprint over every input file's (relative name, size, content)."""
    return fingerprint_of([f.fingerprint for f in files])


def source_versions(files: list[SourceFile]) -> dict[str, str]:
    """uri (redacted: it is persisted) -> the store's version (ETag / md5Hash / mtime): what a resumed
    run checks for in-place edits."""
    return {redact_uri(f.uri): f"{f.size}:{f.version}" for f in files}


# -- planning --------------------------------------------------------------------------------------


def parquet_row_groups(uri: str) -> list[int] | None:
    import pyarrow.parquet as pq  # noqa: PLC0415 (late: pyarrow is heavy; only Parquet inputs need it)

    fs, path = storage.fs_and_path(uri)
    try:
        with fs.open(path, "rb") as f:
            md = pq.ParquetFile(f).metadata
            return [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    except Exception:  # an unreadable footer: the whole file becomes one unit, dead-lettered on read
        return None


def plan_units(files: list[SourceFile], rows_per_unit: int, bytes_per_unit: int) -> list[Unit]:
    """Deterministic work units over the sorted files; names sort in the intended order."""
    width = max(5, len(str(len(files))))
    units: list[Unit] = []
    for fi, f in enumerate(files):
        ranges: list[tuple[int, int, int]] = []  # (start, end, first_row)
        if f.fmt == "parquet":
            groups = parquet_row_groups(f.uri)
            if groups is None:
                ranges = [(0, -1, 0)]
            else:
                start, rows, first = 0, 0, 0
                for g, n in enumerate(groups):
                    rows += n
                    if rows >= rows_per_unit or g == len(groups) - 1:
                        ranges.append((start, g + 1, first))
                        start, first, rows = g + 1, first + rows, 0
                ranges = ranges or [(0, 0, 0)]
        elif f.fmt == "jsonl" and f.compression is None:
            ranges = [(s, min(s + bytes_per_unit, f.size), 0) for s in range(0, f.size, bytes_per_unit)] or [(0, 0, 0)]
        else:
            ranges = [(0, -1, 0)]
        pw = max(5, len(str(len(ranges))))
        for pi, (start, end, first) in enumerate(ranges):
            units.append(
                Unit(f"u{fi:0{width}d}-{pi:0{pw}d}", f.uri, f.fmt, f.compression, start, end, first, fi, f.problem)
            )
    return units
