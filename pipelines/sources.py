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

Every document read is either yielded as a `Doc` or as a dead letter (a dict with `file`,
`position`, `kind`, `reason`, `excerpt`); nothing is dropped silently. A failure that loses a
whole file or range (unreadable file, Parquet file without the text column, corrupt row
group or compressed stream) is one dead letter standing for what could not be read, and counts
as one document.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from schemas import fingerprint_of, storage

EXTENSIONS = {
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".txt": "text", ".text": "text", ".md": "text",
}
COMPRESSIONS = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
GLOB_CHARS = "*?["
EXCERPT_CHARS = 160
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


@dataclass(frozen=True)
class Doc:
    text: str
    position: dict


# -- expanding inputs -----------------------------------------------------------------------------

def _full_uri(fs, path: str, pattern: str) -> str:
    return path if storage.is_local(pattern) else fs.unstrip_protocol(path)


def _version(info: dict) -> str:
    for key in ("md5Hash", "crc32c", "ETag", "etag", "checksum", "md5"):
        if info.get(key):
            return f"{key}={str(info[key]).strip(chr(34))}"
    for key in ("mtime", "LastModified", "updated", "last_modified", "created"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return "unversioned"


def detect_format(uri: str, forced: str = "auto") -> tuple[str, str | None]:
    name = posixpath.basename(uri).lower()
    compression = None
    for ext, comp in COMPRESSIONS.items():
        if name.endswith(ext):
            compression, name = comp, name[: -len(ext)]
            break
    fmt = forced if forced != "auto" else EXTENSIONS.get(posixpath.splitext(name)[1])
    if fmt is None:
        raise InputError(
            f"input file {uri}: unknown format (extension not one of {sorted(EXTENSIONS)}, "
            "optionally .gz/.zst); set `format` to parquet, jsonl or text"
        )
    if fmt == "parquet" and compression:
        raise InputError(f"input file {uri}: a Parquet file cannot be .gz/.zst compressed as a whole")
    return fmt, compression


def _pattern_root(path: str, pattern: str, is_dir: bool) -> str:
    """The folder that names are taken relative to: before the first glob char, the folder, or the parent."""
    cut = [path.find(c) for c in GLOB_CHARS if c in path]
    if cut and any(c in pattern for c in GLOB_CHARS):
        return path[: min(cut)].rsplit("/", 1)[0]
    return path.rstrip("/") if is_dir else posixpath.dirname(path.rstrip("/"))


def content_hash(fs, path: str, size: int) -> str:
    """sha256 over the size, the first and the last SAMPLE_BYTES (the whole file if small)."""
    h = hashlib.sha256(str(size).encode() + b"\x00")
    if size <= 2 * SAMPLE_BYTES:
        h.update(fs.cat_file(path) if size else b"")
    else:
        h.update(fs.cat_file(path, start=0, end=SAMPLE_BYTES))
        h.update(fs.cat_file(path, start=size - SAMPLE_BYTES, end=size))
    return "sha256:" + h.hexdigest()


def expand_inputs(patterns: list[str], forced_format: str = "auto") -> list[SourceFile]:
    """All files matched by the input URIs/globs/folders, in pattern order then by relative name;
    fail fast on no match. A file matched by two patterns is taken once, where first matched."""
    if not patterns:
        raise InputError("no input given (--input URI_OR_GLOB)")
    seen: set[str] = set()
    jobs = []  # (fs, path, uri, size, version, fmt, comp, name, order)
    for pi, pattern in enumerate(patterns):
        fs, path = storage.fs_and_path(pattern)
        is_dir = False
        try:
            fs.invalidate_cache()  # listings cached by an earlier call (or another process's writes) go stale
            if any(c in pattern for c in GLOB_CHARS):
                paths = [p for p in fs.glob(path) if not fs.isdir(p)]
            elif fs.isdir(path):
                is_dir = True
                paths = [p for p in fs.find(path) if not posixpath.basename(p).startswith((".", "_"))]
            elif fs.exists(path):
                paths = [path]
            else:
                paths = []
        except (OSError, ValueError) as e:
            raise InputError(f"input {pattern}: cannot list ({type(e).__name__}: {e})") from None
        if not paths:
            raise InputError(f"input {pattern}: no such file, or the glob matches no files")
        root = _pattern_root(path, pattern, is_dir)
        for p in sorted(paths):
            uri = _full_uri(fs, p, pattern)
            if uri in seen:
                continue
            seen.add(uri)
            info = fs.info(p)
            fmt, comp = detect_format(uri, forced_format)
            name = posixpath.relpath(p, root) if root else p
            jobs.append((fs, p, uri, int(info.get("size") or 0), _version(info), fmt, comp, name, (pi, name)))

    def one(job):
        fs, p, uri, size, version, fmt, comp, name, _ = job
        try:
            content = content_hash(fs, p, size)
        except (OSError, ValueError) as e:  # unreadable: the unit's reader dead-letters it; identity by version
            content = f"unreadable:{type(e).__name__}:{version}"
        return SourceFile(uri, size, version, fmt, comp, name, content)

    with ThreadPoolExecutor(max_workers=min(FINGERPRINT_THREADS, max(1, len(jobs)))) as pool:
        files = list(pool.map(one, jobs))
    order = {f.uri: j[8] for f, j in zip(files, jobs)}
    return sorted(files, key=lambda f: order[f.uri])


def source_fingerprint(files: list[SourceFile]) -> str:
    """One location-independent fingerprint over every input file's (relative name, size, content)."""
    return fingerprint_of([f.fingerprint for f in files])


def source_versions(files: list[SourceFile]) -> dict[str, str]:
    """uri -> the store's version (ETag / md5Hash / mtime): what a resumed run checks for in-place edits."""
    return {f.uri: f"{f.size}:{f.version}" for f in files}


# -- planning --------------------------------------------------------------------------------------

def _parquet_row_groups(uri: str) -> list[int] | None:
    import pyarrow.parquet as pq

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
            groups = _parquet_row_groups(f.uri)
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
            units.append(Unit(f"u{fi:0{width}d}-{pi:0{pw}d}", f.uri, f.fmt, f.compression, start, end, first))
    return units


# -- reading ---------------------------------------------------------------------------------------

def dead_letter(unit: Unit, position: dict, kind: str, reason: str, raw: bytes | str | None = None) -> dict:
    if isinstance(raw, bytes):
        raw = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return {
        "file": unit.uri,
        "unit": unit.name,
        "position": position,
        "kind": kind,
        "reason": reason,
        "excerpt": (raw or "")[:EXCERPT_CHARS],
    }


def _check_text(value, column: str) -> tuple[str | None, str, str]:
    """(text, kind, reason): text is None when the value is not a usable document."""
    if value is None:
        return None, "missing_text", f"text column '{column}' is missing or null"
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            return None, "not_utf8", f"text is not UTF-8 (invalid byte at {e.start})"
    if not isinstance(value, str):
        return None, "wrong_type", f"text column '{column}' is {type(value).__name__}, not a string"
    if not value.strip():
        return None, "empty_text", f"text column '{column}' is empty"
    return value, "", ""


def parse_json_line(raw: bytes, column: str) -> tuple[str | None, str, str]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "not_utf8", f"line is not UTF-8 (invalid byte at {e.start})"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return None, "malformed_json", f"malformed JSON: {e.msg} (column {e.colno})"
    if not isinstance(obj, dict):
        return None, "malformed_json", f"JSON value is a {type(obj).__name__}, not an object"
    if column not in obj:
        return None, "missing_text", f"text column '{column}' is missing"
    return _check_text(obj[column], column)


def _open(unit: Unit):
    fs, path = storage.fs_and_path(unit.uri)
    return fs.open(path, "rb")


def _decompressed(f, compression: str | None):
    if compression == "gz":
        return gzip.GzipFile(fileobj=f, mode="rb")
    if compression == "zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True))
    return f


def _read_jsonl_range(unit: Unit, column: str) -> Iterator[Doc | dict]:
    with _open(unit) as f:
        pos = unit.start
        if pos > 0:
            f.seek(pos - 1)
            if f.read(1) != b"\n":
                pos += len(f.readline())  # the line in progress belongs to the previous unit
        end = unit.end
        while pos < end:
            raw = f.readline()
            if not raw:
                break
            here, pos = pos, pos + len(raw)
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            text, kind, reason = parse_json_line(body, column)
            yield Doc(text, {"byte": here}) if text is not None else dead_letter(unit, {"byte": here}, kind, reason, body)


def _read_jsonl_stream(unit: Unit, column: str) -> Iterator[Doc | dict]:
    line_no, offset = 0, 0
    with _open(unit) as raw_f:
        f = _decompressed(raw_f, unit.compression)
        while True:
            try:
                raw = f.readline()
            except Exception as e:  # corrupt/truncated stream: what was read stays, the rest is one dead letter
                yield dead_letter(unit, {"line": line_no + 1, "byte": offset}, "unreadable_file",
                                  f"cannot decompress after line {line_no}: {type(e).__name__}: {e}")
                return
            if not raw:
                return
            line_no += 1
            here, offset = offset, offset + len(raw)
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            position = {"line": line_no, "byte": here}
            text, kind, reason = parse_json_line(body, column)
            yield Doc(text, position) if text is not None else dead_letter(unit, position, kind, reason, body)


def _read_text_file(unit: Unit) -> Iterator[Doc | dict]:
    with _open(unit) as raw_f:
        data = _decompressed(raw_f, unit.compression).read()
    text, kind, reason = _check_text(data, "file")
    if text is None:
        reason = reason.replace("text column 'file'", "file")
        yield dead_letter(unit, {"byte": 0}, kind, reason, data)
    else:
        yield Doc(text, {"byte": 0})


def _read_parquet(unit: Unit, column: str) -> Iterator[Doc | dict]:
    import pyarrow.parquet as pq

    with _open(unit) as f:
        pf = pq.ParquetFile(f)
        end = pf.metadata.num_row_groups if unit.end < 0 else unit.end
        first = unit.first_row
        if column not in pf.schema_arrow.names:
            rows = sum(pf.metadata.row_group(g).num_rows for g in range(unit.start, end))
            yield dead_letter(unit, {"rows": [first, first + rows]}, "missing_text",
                              f"text column '{column}' is not in the file (columns: {', '.join(pf.schema_arrow.names)}); "
                              f"{rows} rows skipped")
            return
        row = first
        for g in range(unit.start, end):
            n = pf.metadata.row_group(g).num_rows
            try:
                values = pf.read_row_group(g, columns=[column]).column(0).to_pylist()
            except Exception as e:
                yield dead_letter(unit, {"row_group": g, "rows": [row, row + n]}, "unreadable_file",
                                  f"cannot read row group {g}: {type(e).__name__}: {e}")
                row += n
                continue
            for v in values:
                text, kind, reason = _check_text(v, column)
                yield Doc(text, {"row": row}) if text is not None else dead_letter(
                    unit, {"row": row}, kind, reason, v if isinstance(v, (str, bytes)) else repr(v))
                row += 1


def read_unit(unit: Unit, column: str) -> Iterator[Doc | dict]:
    """The unit's documents in file order, and a dead letter for each one that cannot be used."""
    if unit.fmt == "parquet":
        reader = _read_parquet(unit, column)
    elif unit.fmt == "jsonl":
        reader = _read_jsonl_stream(unit, column) if unit.compression or unit.end < 0 else _read_jsonl_range(unit, column)
    else:
        reader = _read_text_file(unit)
    produced = False
    try:
        for item in reader:
            produced = True
            yield item
    except Exception as e:  # the file vanished, permissions, a corrupt footer...
        where = {"range": [unit.start, unit.end], "partial": produced}
        yield dead_letter(unit, where, "unreadable_file", f"cannot read file: {type(e).__name__}: {e}")
