"""Bytes of input files: whole-stream integrity for compressed files, lines with a size cap.

`decompressed_chunks` reads concatenated gzip members / zstd frames with `decompressobj` and
raises `StreamError` unless the end of every member/frame is seen: a truncated file is an
error, not an early end of file (`zstandard`'s `stream_reader` and `gzip.GzipFile` hand out what
they decoded first). `lines_of` and `readline_capped` never hold a line longer than their limit
(junk without newlines would otherwise be loaded whole); fsspec's remote files take no size in
`readline` and are read 64 KiB at a time from their block cache.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import zlib
from collections.abc import Iterator

import zstandard

from schemas import storage

CHUNK_BYTES = 1 << 20  # compressed bytes per read while decompressing
LINE_READ_BYTES = 64 << 10  # per read while looking for a newline in a remote file


class StreamError(Exception):
    """A compressed stream that is corrupt or ends early; `offset` = compressed bytes read."""

    def __init__(self, kind: str, message: str, offset: int, decoded: int):
        super().__init__(message)
        self.kind, self.offset, self.decoded = kind, offset, decoded


IRREGULAR = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def irregular_kind(path: str) -> str:
    """What a local path is when not a regular file ("a FIFO"; symlinks followed), else "": opening a
    FIFO blocks until a writer comes, a device may never end; neither is input."""
    mode = os.stat(path).st_mode
    return next((what for test, what in IRREGULAR if test(mode)), "" if stat.S_ISREG(mode) else "not a file")


def refuse_irregular(path: str) -> None:
    kind = irregular_kind(path)
    if kind:
        raise OSError(f"not a regular file ({kind}): not opened")


def open_unit(unit):
    fs, path = storage.fs_and_path(unit.uri)
    if storage.is_local(unit.uri):
        refuse_irregular(storage.local_path(unit.uri))  # replaced by a FIFO since planning: fail, never block
    return fs.open(path, "rb")


@contextlib.contextmanager
def local_copy(unit) -> Iterator[str]:
    """A local path holding the unit's file: the file itself, or a spooled copy of a remote one."""
    if storage.is_local(unit.uri):
        refuse_irregular(storage.local_path(unit.uri))
        yield storage.local_path(unit.uri)
        return
    with tempfile.TemporaryDirectory(prefix="pdistill-read-") as tmp:
        path = os.path.join(tmp, "input")
        with open_unit(unit) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK_BYTES)
        yield path


def _new_decoder(compression: str):
    if compression == "gz":
        return zlib.decompressobj(wbits=31), zlib.error, "gzip member"
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
                raise StreamError(
                    "corrupt_file",
                    f"the {what} does not decode ({e}); read {read} compressed bytes, decoded {decoded} bytes",
                    read,
                    decoded,
                ) from None
            fed = True
            decoded += len(out)
            if out:
                yield out
            if not d.eof:
                break
            members += 1
            data, (d, errors, what), fed = d.unused_data, _new_decoder(compression), False
    if fed:
        raise StreamError(
            "truncated_file",
            f"the file ends at compressed byte {read} inside a {what}, after "
            f"{decoded} decoded bytes: the file is truncated",
            read,
            decoded,
        )


def lines_of(chunks: Iterator[bytes], limit: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(offset, line with its newline, length) over a chunked byte stream; the last line may lack
    the newline. A line whose content is longer than `limit` is not held in memory: its bytes are skipped and it is
    yielded as (offset, None, length)."""
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


def readline_capped(f, limit: int) -> tuple[bytes | None, int]:
    """One line of a file object (None when longer than `limit`: skipped, never held) and its length.
    fsspec's remote files take no size in `readline` (and would load a line of any length): they
    are read block by block from their cache, as fsspec's own `readuntil` does."""
    from fsspec.spec import AbstractBufferedFile  # noqa: PLC0415 (late: start-up cost, ~0.1 s)

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
