"""Reading documents out of a work unit; every document is accounted for.

Every document read is yielded as a `Doc` or as a dead letter (a dict with `file`, `unit`,
`position`, `kind`, `reason`, `excerpt`, `documents`, `incomplete`); nothing is dropped silently.
`documents` says how many input documents the record stands for: 1 for a bad record, the row
count of a Parquet row group or file that cannot be used (known from the Parquet metadata), the
lines decoded before a compressed stream broke off; 0 for a part of a file whose documents
cannot be counted (an unreadable file). So the sum of `documents` over the dead letters plus
the packed documents is the number of documents read, and `incomplete` marks the records that
mean "this file was not read to its end": the manifest flags such a file.

A compressed file (`.gz`, `.zst`) is one unit and is checked whole before any of it is used: a
stream that ends inside a gzip member or a zstd frame (a truncated upload), or that does not
decode (corruption), is one dead letter of kind `truncated_file` / `corrupt_file` naming the
compressed byte offset reached; the lines decoded before the break are counted as documents
of that record and are not packed (a partial file is never taken for a whole one, and a
re-run with the repaired file does not mix with a half of it). Checking costs one extra
decompression pass, run on a local copy (remote files are spooled to local disk once). A plain
JSONL file whose last line is cut inside a record (no final newline, not valid JSON) is flagged
the same way (`truncated_file`, the record dead-lettered); its whole lines are used, as byte-range
units are read independently and each line is a record on its own.

Poison pills: a record longer than `MAX_RECORD_BYTES` (a JSON line, a text file; typically junk
without newlines) is skipped without being held in memory and dead-lettered as
`record_too_large`; text that is not valid Unicode (a lone surrogate from a JSON `\ud800` escape,
which makes the tokenizer raise) is `invalid_unicode`; null / non-string text is `missing_text` /
`wrong_type`. What the tokenizer still refuses is dead-lettered by the packer (`tokenizer_error`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from typing import Iterator

from schemas import storage
from schemas.redact import redact_text, redact_uri

EXCERPT_CHARS = 160
CHUNK_BYTES = 1 << 20  # compressed bytes per read while decompressing
LINE_READ_BYTES = 64 << 10  # per read while looking for a newline in a remote file
MAX_RECORD_BYTES = 64 << 20  # a longer line or text file (junk without newlines?) is a dead letter, never loaded


@dataclass(frozen=True)
class Doc:
    text: str
    position: dict


class StreamError(Exception):
    """A compressed stream that is corrupt or ends early; `offset` = compressed bytes read."""

    def __init__(self, kind: str, message: str, offset: int, decoded: int):
        super().__init__(message)
        self.kind, self.offset, self.decoded = kind, offset, decoded


def _printable(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (JSON "\\ud800", an undecodable file name) is
    spelled out as \\udXXXX."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def dead_letter(unit, position: dict, kind: str, reason: str, raw: bytes | str | None = None,
                documents: int = 1, incomplete: bool = False) -> dict:
    if isinstance(raw, bytes):
        raw = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return {
        "file": _printable(redact_uri(unit.uri)),
        "unit": unit.name,
        "position": position,
        "kind": kind,
        "reason": _printable(redact_text(reason)),
        "excerpt": _printable((raw or "")[:EXCERPT_CHARS]),
        "documents": documents,
        "incomplete": incomplete,
    }


# -- one document's text --------------------------------------------------------------------------

def check_text(value, column: str) -> tuple[str | None, str, str]:
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
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate (JSON "\ud800"): no tokenizer can take it
        return None, "invalid_unicode", (f"text holds a lone surrogate U+{ord(value[e.start]):04X} at character "
                                         f"{e.start}: not valid Unicode text")
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
    except RecursionError:
        return None, "malformed_json", "malformed JSON: nested too deeply"
    if not isinstance(obj, dict):
        return None, "malformed_json", f"JSON value is a {type(obj).__name__}, not an object"
    if column not in obj:
        return None, "missing_text", f"text column '{column}' is missing"
    return check_text(obj[column], column)


# -- byte streams ---------------------------------------------------------------------------------

def _open(unit):
    fs, path = storage.fs_and_path(unit.uri)
    return fs.open(path, "rb")


@contextlib.contextmanager
def _local_copy(unit) -> Iterator[str]:
    """A local path holding the unit's file: the file itself, or a spooled copy of a remote one."""
    if storage.is_local(unit.uri):
        yield storage.local_path(unit.uri)
        return
    with tempfile.TemporaryDirectory(prefix="pdistill-read-") as tmp:
        path = os.path.join(tmp, "input")
        with _open(unit) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK_BYTES)
        yield path


def _new_decoder(compression: str):
    if compression == "gz":
        return zlib.decompressobj(wbits=31), zlib.error, "gzip member"
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj(), zstandard.ZstdError, "zstd frame"


def decompressed_chunks(f, compression: str | None) -> Iterator[bytes]:
    """The decompressed bytes of a file object, in chunks. Concatenated gzip members / zstd frames
    are read in turn (trailing zero padding is ignored, as gzip does). Raises `StreamError` when
    the data does not decode or ends inside a member/frame: the end of a compressed stream must be
    seen, not assumed at the end of the file."""
    if compression is None:
        yield from iter(lambda: f.read(CHUNK_BYTES), b"")
        return
    d, errors, what = _new_decoder(compression)
    read = decoded = members = 0
    fed = False  # the current decoder has been given bytes
    while True:
        block = f.read(CHUNK_BYTES)
        if not block:
            break
        read += len(block)
        data = block
        while data:
            if members and not fed and not data.strip(b"\x00"):
                break  # zero padding after the last member
            try:
                out = d.decompress(data)
            except errors as e:
                raise StreamError("corrupt_file", f"the {what} does not decode ({e}); read {read} compressed bytes, "
                                  f"decoded {decoded} bytes", read, decoded) from None
            fed = True
            decoded += len(out)
            if out:
                yield out
            if not d.eof:
                break
            members += 1
            data, (d, errors, what), fed = d.unused_data, _new_decoder(compression), False
    if fed:
        raise StreamError("truncated_file", f"the file ends at compressed byte {read} inside a {what}, after "
                          f"{decoded} decoded bytes: the file is truncated", read, decoded)


def lines_of(chunks: Iterator[bytes], limit: int | None = None) -> Iterator[tuple[int, bytes | None, int]]:
    """(offset, line with its newline, length) over a chunked byte stream; the last line may lack
    the newline. A line whose content is longer than `limit` is not held in memory: its bytes are skipped and it is
    yielded as (offset, None, length)."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    pending, start, skip, off = bytearray(), 0, None, 0  # skip: offset of an oversized line being skipped
    for chunk in chunks:
        pos = 0
        while pos < len(chunk):
            i = chunk.find(b"\n", pos)
            end = len(chunk) if i < 0 else i + 1
            if skip is None:
                if not pending:
                    start = off + pos
                pending += chunk[pos:end]
                if len(pending) - (pending[-1:] == b"\n") > limit:  # the content, without its newline
                    skip, pending = start, bytearray()
            if i >= 0:
                if skip is not None:
                    yield skip, None, off + end - skip
                    skip = None
                else:
                    yield start, bytes(pending), len(pending)
                    pending = bytearray()
            pos = end
        off += len(chunk)
    if skip is not None:
        yield skip, None, off - skip
    elif pending:
        yield start, bytes(pending), len(pending)


def readline_capped(f, limit: int | None = None) -> tuple[bytes | None, int]:
    """One line of a file object (None when longer than `limit`: skipped, never held) and its length.
    fsspec's remote files take no size in `readline` (and would load a line of any length): they
    are read block by block from their cache, as fsspec's own `readuntil` does."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    from fsspec.spec import AbstractBufferedFile

    if not isinstance(f, AbstractBufferedFile):
        raw = f.readline(limit + 1)
        if len(raw) <= limit or raw.endswith(b"\n"):
            return raw, len(raw)
        n = len(raw)
        while True:
            more = f.readline(CHUNK_BYTES)
            n += len(more)
            if not more or more.endswith(b"\n"):
                return None, n
    start, parts, n, ended = f.tell(), [], 0, False
    while True:
        block = f.read(LINE_READ_BYTES)  # served from the file's block cache; not blocksize (s3fs: 50 MB a line)
        if not block:
            break
        i = block.find(b"\n")
        if i >= 0:
            n, ended = n + i + 1, True
            if parts is not None:
                parts.append(block[: i + 1])
            f.seek(start + n)
            break
        n += len(block)
        if parts is not None:
            parts.append(block)
            if n > limit:
                parts = None
    if parts is None or n - ended > limit:
        return None, n
    return b"".join(parts), n


def _too_large(unit, position: dict, size: int) -> dict:
    return dead_letter(unit, position, "record_too_large",
                       f"record of {size} bytes is larger than the {MAX_RECORD_BYTES >> 20} MiB limit per document")


# -- readers --------------------------------------------------------------------------------------

def _read_jsonl_range(unit, column: str) -> Iterator[Doc | dict]:
    with _open(unit) as f:
        pos = unit.start
        if pos > 0:
            f.seek(pos - 1)
            if f.read(1) != b"\n":
                pos += readline_capped(f, 0)[1]  # the line in progress belongs to the previous unit
        end = unit.end
        while pos < end:
            raw, size = readline_capped(f)
            if raw is None:
                yield _too_large(unit, {"byte": pos}, size)
                pos += size
                continue
            if not raw:
                yield dead_letter(unit, {"byte": pos}, "truncated_file",
                                  f"the file ends at byte {pos}, before the end of its planned range ({end}): it "
                                  "shrank since the job was planned", documents=0, incomplete=True)
                return
            here, pos = pos, pos + len(raw)
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            yield _json_record(unit, {"byte": here}, raw, body, column)


def _json_record(unit, position: dict, raw: bytes, body: bytes, column: str) -> Doc | dict:
    text, kind, reason = parse_json_line(body, column)
    if text is not None:
        return Doc(text, position)
    if kind == "malformed_json" and not raw.endswith(b"\n"):  # the file's last line, cut inside a record
        return dead_letter(unit, position, "truncated_file", f"the file ends inside this record ({reason}, no final "
                           f"newline): it looks truncated", body, incomplete=True)
    return dead_letter(unit, position, kind, reason, body)


def _count_lines(path: str, compression: str | None) -> int:
    """Non-empty lines of a whole compressed file (raises StreamError, with `.lines` set)."""
    n = 0
    with open(path, "rb") as f:
        try:
            for _, raw, _size in lines_of(decompressed_chunks(f, compression)):
                n += raw is None or bool(raw.strip())
        except StreamError as e:
            e.lines = n
            raise
    return n


def _broken_stream(unit, e: StreamError, documents: int, what: str) -> dict:
    return dead_letter(unit, {"compressed_byte": e.offset, "decoded_bytes": e.decoded}, e.kind,
                       f"{e}; {what}", documents=documents, incomplete=True)


def _read_jsonl_stream(unit, column: str) -> Iterator[Doc | dict]:
    with _local_copy(unit) as path:
        try:
            _count_lines(path, unit.compression)
        except StreamError as e:
            yield _broken_stream(unit, e, e.lines, f"the {e.lines} lines read before the break are counted here "
                                 "and not packed (a partial file is not used)")
            return
        with open(path, "rb") as f:
            line_no = 0
            for here, raw, size in lines_of(decompressed_chunks(f, unit.compression)):
                line_no += 1
                position = {"line": line_no, "byte": here}
                if raw is None:
                    yield _too_large(unit, position, size)
                    continue
                body = raw.rstrip(b"\r\n")
                if not body.strip():
                    continue
                yield _json_record(unit, position, raw, body, column)


def _read_text_file(unit) -> Iterator[Doc | dict]:
    with _local_copy(unit) as path, open(path, "rb") as f:
        parts, size = [], 0
        try:
            for chunk in decompressed_chunks(f, unit.compression):
                size += len(chunk)
                if size <= MAX_RECORD_BYTES:
                    parts.append(chunk)
                else:
                    parts.clear()  # keep reading: a broken stream is reported as such
        except StreamError as e:
            yield _broken_stream(unit, e, 1, "the file's one document is not used")
            return
    if size > MAX_RECORD_BYTES:
        yield _too_large(unit, {"byte": 0}, size)
        return
    data = b"".join(parts)
    text, kind, reason = check_text(data, "file")
    if text is None:
        reason = reason.replace("text column 'file'", "file")
        yield dead_letter(unit, {"byte": 0}, kind, reason, data)
    else:
        yield Doc(text, {"byte": 0})


def _read_parquet(unit, column: str) -> Iterator[Doc | dict]:
    import pyarrow.parquet as pq

    with _open(unit) as f:
        pf = pq.ParquetFile(f)
        end = pf.metadata.num_row_groups if unit.end < 0 else unit.end
        first = unit.first_row
        if column not in pf.schema_arrow.names:
            rows = sum(pf.metadata.row_group(g).num_rows for g in range(unit.start, end))
            yield dead_letter(unit, {"rows": [first, first + rows]}, "missing_text",
                              f"text column '{column}' is not in the file (columns: {', '.join(pf.schema_arrow.names)}); "
                              f"{rows} rows not used", documents=rows)
            return
        row = first
        for g in range(unit.start, end):
            n = pf.metadata.row_group(g).num_rows
            try:
                values = pf.read_row_group(g, columns=[column]).column(0).to_pylist()
            except Exception as e:
                yield dead_letter(unit, {"row_group": g, "rows": [row, row + n]}, "unreadable_row_group",
                                  f"cannot read row group {g} ({n} rows): {type(e).__name__}: {e}", documents=n)
                row += n
                continue
            for v in values:
                text, kind, reason = check_text(v, column)
                yield Doc(text, {"row": row}) if text is not None else dead_letter(
                    unit, {"row": row}, kind, reason, v if isinstance(v, (str, bytes)) else repr(v))
                row += 1


def read_unit(unit, column: str) -> Iterator[Doc | dict]:
    """The unit's documents in file order, and a dead letter for each one that cannot be used."""
    if unit.fmt == "parquet":
        reader = _read_parquet(unit, column)
    elif unit.fmt == "jsonl":
        reader = _read_jsonl_stream(unit, column) if unit.compression or unit.end < 0 else _read_jsonl_range(unit, column)
    else:
        reader = _read_text_file(unit)
    produced = 0
    try:
        for item in reader:
            produced += item["documents"] if isinstance(item, dict) else 1
            yield item
    except Exception as e:  # the file vanished, permissions, a corrupt footer...
        whole = unit.fmt == "text" and not produced  # a text file is one document, counted here
        rest = "its one document is not used" if whole else "the rest of it is not counted"
        after = f" after {produced} documents" if produced else ""
        yield dead_letter(unit, {"range": [unit.start, unit.end]}, "unreadable_file",
                          f"cannot read the file{after}: {type(e).__name__}: {e}; {rest}",
                          documents=int(whole), incomplete=True)
