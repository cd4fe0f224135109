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
decompression pass (`pipelines.streams`), on a local copy (remote files are spooled to disk once). A plain
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

import json
from collections.abc import Iterator
from dataclasses import dataclass

from pipelines.streams import StreamError, decompressed_chunks, lines_of, local_copy, open_unit, readline_capped
from schemas.redact import redact_text, redact_uri

EXCERPT_CHARS = 160
MAX_RECORD_BYTES = 64 << 20  # a longer line or text file (junk without newlines?) is a dead letter, never loaded


@dataclass(frozen=True)
class Doc:
    text: str
    position: dict


def _printable(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (JSON "\\ud800", an undecodable file name) is
    spelled out as \\udXXXX."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def letter_file(uri: str) -> str:
    """How a dead letter names its file: redacted, and printable whatever the name's bytes."""
    return _printable(redact_uri(uri))


def dead_letter(
    unit,
    position: dict,
    kind: str,
    reason: str,
    raw: bytes | str | None = None,
    documents: int = 1,
    incomplete: bool = False,
) -> dict:
    if isinstance(raw, bytes):
        raw = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return {
        "file": letter_file(unit.uri),
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
        return (
            None,
            "invalid_unicode",
            (f"text holds a lone surrogate U+{ord(value[e.start]):04X} at character {e.start}: not valid Unicode text"),
        )
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


def _too_large(unit, position: dict, size: int) -> dict:
    return dead_letter(
        unit,
        position,
        "record_too_large",
        f"record of {size} bytes is larger than the {MAX_RECORD_BYTES >> 20} MiB limit per document",
    )


# -- readers --------------------------------------------------------------------------------------


def _read_jsonl_range(unit, column: str) -> Iterator[Doc | dict]:
    with open_unit(unit) as f:
        pos = unit.start
        if pos > 0:
            f.seek(pos - 1)
            if f.read(1) != b"\n":
                pos += readline_capped(f, 0)[1]  # the line in progress belongs to the previous unit
        end = unit.end
        while pos < end:
            raw, size = readline_capped(f, MAX_RECORD_BYTES)
            if raw is None:
                yield _too_large(unit, {"byte": pos}, size)
                pos += size
                continue
            if not raw:
                yield dead_letter(
                    unit,
                    {"byte": pos},
                    "truncated_file",
                    f"the file ends at byte {pos}, before the end of its planned range ({end}): it "
                    "shrank since the job was planned",
                    documents=0,
                    incomplete=True,
                )
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
        return dead_letter(
            unit,
            position,
            "truncated_file",
            f"the file ends inside this record ({reason}, no final newline): it looks truncated",
            body,
            incomplete=True,
        )
    return dead_letter(unit, position, kind, reason, body)


def count_lines(path: str, compression: str | None) -> int:
    """Non-empty lines of a whole compressed file (raises StreamError, with `.lines` set)."""
    n = 0
    with open(path, "rb") as f:
        try:
            for _, raw, _size in lines_of(decompressed_chunks(f, compression), MAX_RECORD_BYTES):
                n += raw is None or bool(raw.strip())
        except StreamError as e:
            e.lines = n
            raise
    return n


def _broken_stream(unit, e: StreamError, documents: int, what: str) -> dict:
    return dead_letter(
        unit,
        {"compressed_byte": e.offset, "decoded_bytes": e.decoded},
        e.kind,
        f"{e}; {what}",
        documents=documents,
        incomplete=True,
    )


def _read_jsonl_stream(unit, column: str) -> Iterator[Doc | dict]:
    with local_copy(unit) as path:
        try:
            count_lines(path, unit.compression)
        except StreamError as e:
            yield _broken_stream(
                unit,
                e,
                e.lines,
                f"the {e.lines} lines read before the break are counted here "
                "and not packed (a partial file is not used)",
            )
            return
        with open(path, "rb") as f:
            line_no = 0
            for here, raw, size in lines_of(decompressed_chunks(f, unit.compression), MAX_RECORD_BYTES):
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
    with local_copy(unit) as path, open(path, "rb") as f:
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
    import pyarrow.parquet as pq  # noqa: PLC0415 (late: pyarrow is heavy; only Parquet inputs need it)

    with open_unit(unit) as f:
        pf = pq.ParquetFile(f)
        end = pf.metadata.num_row_groups if unit.end < 0 else unit.end
        first = unit.first_row
        if column not in pf.schema_arrow.names:
            rows = sum(pf.metadata.row_group(g).num_rows for g in range(unit.start, end))
            yield dead_letter(
                unit,
                {"rows": [first, first + rows]},
                "missing_text",
                f"text column '{column}' is not in the file (columns: {', '.join(pf.schema_arrow.names)}); "
                f"{rows} rows not used",
                documents=rows,
            )
            return
        row = first
        for g in range(unit.start, end):
            n = pf.metadata.row_group(g).num_rows
            try:
                # on this thread: arrow's pool threads can outlive the interpreter and abort it at
                # exit (apache/arrow#34314; 3-6 of 20 runs here) after the work is done
                values = pf.read_row_group(g, columns=[column], use_threads=False).column(0).to_pylist()
            except Exception as e:
                yield dead_letter(
                    unit,
                    {"row_group": g, "rows": [row, row + n]},
                    "unreadable_row_group",
                    f"cannot read row group {g} ({n} rows): {type(e).__name__}: {e}",
                    documents=n,
                )
                row += n
                continue
            for v in values:
                text, kind, reason = check_text(v, column)
                yield (
                    Doc(text, {"row": row})
                    if text is not None
                    else dead_letter(unit, {"row": row}, kind, reason, v if isinstance(v, (str, bytes)) else repr(v))
                )
                row += 1


def read_unit(unit, column: str) -> Iterator[Doc | dict]:
    """The unit's documents in file order, and a dead letter for each one that cannot be used."""
    if unit.problem:  # found unreadable while listing (a FIFO, an unlistable folder): never opened
        kind = "unreadable_folder" if unit.fmt == "folder" else "unreadable_file"
        yield dead_letter(
            unit,
            {"range": [unit.start, unit.end]},
            kind,
            f"{unit.problem}; its documents are not counted",
            documents=0,
            incomplete=True,
        )
        return
    if unit.fmt == "parquet":
        reader = _read_parquet(unit, column)
    elif unit.fmt == "jsonl":
        reader = (
            _read_jsonl_stream(unit, column) if unit.compression or unit.end < 0 else _read_jsonl_range(unit, column)
        )
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
        yield dead_letter(
            unit,
            {"range": [unit.start, unit.end]},
            "unreadable_file",
            f"cannot read the file{after}: {type(e).__name__}: {e}; {rest}",
            documents=int(whole),
            incomplete=True,
        )
