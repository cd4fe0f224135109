"""Entropy coding of integer symbol streams with per-sample static models (constriction's ANS).

A *stream* is a 1-D array of small non-negative integers (level deltas, dictionary indices,
gap classes...). Each stream is coded under its own categorical model: the stream's exact
histogram, written in front of the coded words, so that every sample stays self-contained
(random access by StreamingDataset needs no side table) and the rate is the stream's empirical
entropy plus the histogram's few bytes.

The arithmetic itself is `constriction` (Rust; `AnsCoder` with `Categorical(perfect=False)`),
fed numpy arrays in and out: no hand-written bit coder. Determinism: the model is built from
integer counts only, so the encoder and the decoder build the same table on any machine, and
the same input gives the same bytes. The fixed-point table is constriction's, so the version is
pinned (a golden-bytes test catches a change).

Layout of one coded block: uint32 header length, then the header as LEB128 varints (stream count;
per stream coded under its own histogram: alphabet size A and A counts, zero runs as (0, run);
the ANS word count), then the ANS words as little-endian uint32.
"""

from __future__ import annotations

import constriction
import numpy as np

from schemas.codecs import varint
from schemas.errors import CodecError

MAX_ALPHABET = 1 << 20  # the largest histogram a block may carry (a corrupt header cannot ask more)


def _model(counts: np.ndarray):
    if counts.sum() == 0:  # an unused model: any valid table will do
        counts = np.ones_like(counts)
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def pack_histogram(counts: np.ndarray) -> np.ndarray:
    """Counts with every run of zeros written as (0, run length): dictionary histograms are sparse."""
    out = [len(counts)]
    i, a = 0, len(counts)
    while i < a:
        c = int(counts[i])
        if c:
            out.append(c)
            i += 1
        else:
            j = i
            while j < a and counts[j] == 0:
                j += 1
            out += [0, j - i]
            i = j
    return np.asarray(out, dtype=np.uint64)


def unpack_histogram(vals, at: int, max_size: int) -> tuple[np.ndarray, int]:
    """One histogram from `vals` (a list of ints: a Python loop over numpy scalars is ~5x slower)
    starting at `at`; returns it and where the next value is."""
    a = int(vals[at])
    at += 1
    if a > max(max_size + 1, MAX_ALPHABET):
        raise CodecError(f"entropy block: an alphabet of {a} symbols: corrupt sample")
    out: list[int] = []
    while len(out) < a:
        c = vals[at]
        at += 1
        if c:
            out.append(c)
        else:
            run = vals[at]
            at += 1
            if run < 1 or len(out) + run > a:
                raise CodecError("entropy block: bad zero run in a histogram: corrupt sample")
            out.extend([0] * run)
    if sum(out) > max_size:
        raise CodecError(f"entropy block: a stream of {sum(out)} symbols, more than {max_size}: corrupt sample")
    return np.array(out, dtype=np.int64), at


def uniform(n: int) -> np.ndarray:
    """The uniform model over n symbols (all counts 1). For the few sizes that recur in every
    sample (powers of two up to 2^16, and up to 64) one array per size, whose constriction model
    is built once per process instead of once per stream; other sizes get a fresh array."""
    got = _UNIFORM.get(n)
    if got is None:
        got = np.ones(n, dtype=np.int64)
        if 2 <= n <= 64 or (n <= 1 << 16 and n & (n - 1) == 0 and n >= 2):
            _UNIFORM[n] = got
            _UNIFORM_MODELS[id(got)] = _model(got)
    return got


_UNIFORM: dict[int, np.ndarray] = {}
_UNIFORM_MODELS: dict[int, object] = {}  # id of a `uniform` array (kept alive in _UNIFORM) -> its model


TABLE = "table"  # (TABLE, counts) among a block's streams: a histogram in the header, no symbols


def _family():
    global _FAMILY
    if _FAMILY is None:
        _FAMILY = constriction.stream.model.Categorical(perfect=False)
    return _FAMILY


_FAMILY = None  # constriction's categorical model family (per-symbol rows), built once


def encode(streams: list[tuple[np.ndarray, np.ndarray | None]]) -> bytes:
    """Code (symbols, model) pairs into one block. A model of None means: the stream's own
    histogram, written into the block; a given model (counts the decoder can rebuild, e.g. from
    a dictionary) is not written, nor is the stream's length: the decoder must know both. A
    given 2-D model is one row of counts per symbol (symbols whose context the decoder learns
    only as it goes, e.g. from the symbol before, or many small contexts in one call). An entry
    (TABLE, counts) writes a histogram into the header for the decoder to read back
    (`Decoder.table`) and codes nothing: the histograms of such contexts."""
    header: list[np.ndarray] = [np.asarray([len(streams)], dtype=np.uint64)]
    coder = constriction.stream.stack.AnsCoder()
    models = []
    for s, given in streams:
        if isinstance(s, str) and s == TABLE:  # a histogram for later streams, in the header only
            header.append(pack_histogram(np.asarray(given, dtype=np.int64)))
            models.append(np.zeros(0, dtype=np.int64))
            continue
        s = np.asarray(s, dtype=np.int64)
        if s.size and s.min() < 0:
            raise CodecError("entropy block: negative symbol")
        if given is None:
            counts = np.bincount(s) if s.size else np.zeros(0, dtype=np.int64)
            if counts.shape[0] > MAX_ALPHABET:
                raise CodecError(
                    f"entropy block: symbol {counts.shape[0] - 1} above the largest alphabet ({MAX_ALPHABET})"
                )
            header.append(pack_histogram(counts))
        else:
            counts = np.asarray(given, dtype=np.int64)
            if counts.ndim == 2:
                rows = counts[np.arange(s.shape[0]), s] if s.size and s.max() < counts.shape[1] else None
                if counts.shape[0] != s.shape[0] or (s.size and (rows is None or (rows <= 0).any())):
                    raise CodecError("entropy block: symbol outside its model's alphabet")
            elif s.size and s.max() >= counts.shape[0]:
                raise CodecError("entropy block: symbol outside its model's alphabet")
        models.append(counts)
    # a stack coder: encode the last stream first so that decoding runs in stream order
    built: dict = {}  # one model per given array (many streams may share one)
    for (s, given), counts in zip(reversed(streams), reversed(models)):
        if isinstance(s, str):  # a TABLE: nothing to code
            continue
        if counts.ndim == 2:
            if len(s):
                coder.encode_reverse(np.asarray(s, dtype=np.int32), _family(), counts.astype(np.float64))
            continue
        if counts.shape[0] > 1 and len(s):
            key = id(given) if given is not None else None
            if key in _UNIFORM_MODELS:
                model = _UNIFORM_MODELS[key]
            elif key is None or key not in built:
                model = _model(counts)
                if key is not None:
                    built[key] = (model, given)  # hold `given`: its id stays unique while cached
            else:
                model = built[key][0]
            coder.encode_reverse(np.asarray(s, dtype=np.int32), model)
    words = coder.get_compressed().astype("<u4")
    header.append(np.asarray([words.shape[0]], dtype=np.uint64))
    head = varint.encode(np.concatenate(header))
    return np.uint32(len(head)).astype("<u4").tobytes() + head + words.tobytes()


class Decoder:
    """Reads the streams of a block written by `encode` one at a time, in order: a stream's
    model may depend on streams decoded before it (pass it as `given`)."""

    def __init__(self, buf: bytes, max_size: int):
        """max_size: the most symbols any stream of this block may have; with MAX_ALPHABET, a
        corrupt header cannot make the decoder allocate more."""
        self._max_size = int(max_size)
        if len(buf) < 4:
            raise CodecError("entropy block: shorter than its header: corrupt sample")
        hlen = int(np.frombuffer(buf[:4], dtype="<u4")[0])
        head = np.frombuffer(buf[4 : 4 + hlen], dtype=np.uint8)
        if head.shape[0] != hlen or hlen == 0:
            raise CodecError("entropy block: truncated header: corrupt sample")
        self._vals = varint.decode(head.tobytes(), int((head < 0x80).sum())).tolist()  # Python ints: read one by one
        self._n_vals = len(self._vals)
        self._n_streams, self._read, self._at = int(self._vals[0]), 0, 1
        n_words = int(self._vals[-1])
        body = buf[4 + hlen :]
        if len(body) != 4 * n_words:
            raise CodecError(f"entropy block: {len(body)} payload bytes, header says {4 * n_words}: corrupt sample")
        self._coder = constriction.stream.stack.AnsCoder(np.frombuffer(body, dtype="<u4").astype(np.uint32))
        self._built: dict = {}  # one model per given array (many streams may share one)

    def next(self, given: np.ndarray | None = None, size: int | None = None) -> np.ndarray:
        """The next stream: under its written histogram (given None), or under the given model
        with the given length (a 2-D model: one row of counts per symbol)."""
        if self._read >= self._n_streams:
            raise CodecError("entropy block: fewer streams than expected: corrupt sample")
        uniform_model = _UNIFORM_MODELS.get(id(given)) if given is not None else None
        if uniform_model is not None:  # the common case, checked first: a `uniform` model
            if size is None or size < 0 or size > self._max_size:
                raise CodecError("entropy block: a stream with a given model needs its length")
            if self._at >= self._n_vals:
                raise CodecError("entropy block: truncated header: corrupt sample")
            self._read += 1
            return self._decoded(uniform_model, size) if size else np.zeros(0, dtype=np.int64)
        if given is not None and np.ndim(given) == 2:
            return self._next_rows(np.asarray(given, dtype=np.float64), size)
        try:
            if given is None:
                counts, self._at = unpack_histogram(self._vals, self._at, self._max_size)
                size = int(counts.sum())
            else:
                counts = np.asarray(given, dtype=np.int64)
                if size is None or size < 0 or size > self._max_size:
                    raise CodecError("entropy block: a stream with a given model needs its length")
        except IndexError:
            raise CodecError("entropy block: truncated header: corrupt sample") from None
        if self._at >= self._n_vals:
            raise CodecError("entropy block: truncated header: corrupt sample")
        self._read += 1
        if counts.shape[0] <= 1 or size == 0:
            return np.zeros(size, dtype=np.int64)
        if given is not None:
            model = _UNIFORM_MODELS.get(id(given))
            if model is None:
                if id(given) not in self._built:
                    self._built[id(given)] = (_model(counts), given)
                model = self._built[id(given)][0]
        else:
            model = _model(counts)
        return self._decoded(model, size)

    def _decoded(self, model, arg) -> np.ndarray:
        """constriction's decode (`arg`: a length, or the rows of a 2-D model), as int64; its
        errors (it raises on exhausted or invalid data, or a row without counts) as CodecError."""
        try:
            return np.asarray(self._coder.decode(model, arg), dtype=np.int64)
        except Exception as e:
            raise CodecError(f"entropy block: undecodable payload ({e}): corrupt sample") from None

    def table(self) -> np.ndarray:
        """The next entry, written as (TABLE, counts): the counts (for 2-D models built from them)."""
        if self._read >= self._n_streams:
            raise CodecError("entropy block: fewer streams than expected: corrupt sample")
        try:
            counts, self._at = unpack_histogram(self._vals, self._at, self._max_size)
        except IndexError:
            raise CodecError("entropy block: truncated header: corrupt sample") from None
        if self._at >= self._n_vals:
            raise CodecError("entropy block: truncated header: corrupt sample")
        self._read += 1
        return counts

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The next stream, given as a float64 C-contiguous 2-D model (one row of counts per
        symbol): `next` without its checks on the model's type, for codecs that call it in a loop."""
        if self._read >= self._n_streams or self._at >= self._n_vals or rows.shape[0] > self._max_size:
            raise CodecError("entropy block: fewer streams than expected: corrupt sample")
        self._read += 1
        return self._decoded(_family(), rows) if rows.shape[0] else np.zeros(0, dtype=np.int64)

    def _next_rows(self, rows: np.ndarray, size: int | None) -> np.ndarray:
        if size is None or rows.shape[0] != size or size > self._max_size:
            raise CodecError("entropy block: a stream with a given model needs its length")
        if self._at >= self._n_vals:
            raise CodecError("entropy block: truncated header: corrupt sample")
        self._read += 1
        return self._decoded(_family(), rows) if size else np.zeros(0, dtype=np.int64)

    def finish(self) -> None:
        """Refuse a block with streams or words left over."""
        if self._read != self._n_streams or self._at != self._n_vals - 1 or not self._coder.is_empty():
            raise CodecError("entropy block: data left over after the last stream: corrupt sample")


def decode(buf: bytes, n_streams: int, max_size: int) -> list[np.ndarray]:
    """All streams of a block coded under their own histograms."""
    d = Decoder(buf, max_size)
    out = [d.next() for _ in range(n_streams)]
    d.finish()
    return out
