"""The per-sample id dictionary: ids coded as indices into the sample's own distinct kept ids.

A sample keeps each of a few thousand distinct ids many times. The dictionary lists them once,
each with how often it is kept to within a factor of two (its *class*, `numbers.count_classes`),
ordered most often kept first; an entry then codes an index, not a 16-bit id. An entry that
starts a level group (*fresh*) is coded as its class (one model per rank bucket: the top of a
distribution keeps rarer ids than its tail) and its index within the class (uniform); the other
entries of a group are tied at one level, so they are a set: coded as gaps between ascending
dictionary indices, their order costs nothing.

How the dictionary itself is written is the format's choice: as id gaps here (`plain_streams`,
compact2), or against ids the decoder already knows (`schemas.codecs.dictionary_basis`).
`decoded_entries` is the decode ending every dictionary format shares: indices to ids, entries
sorted by id, levels to log-probs.
"""

from __future__ import annotations

import numpy as np

from schemas.codecs import entropy, quantiser
from schemas.codecs.numbers import count_classes, decode_numbers, encode_numbers
from schemas.codecs.segments import segment_cumsum
from schemas.codecs.structure import N_RANK_BUCKETS
from schemas.errors import CodecError
from schemas.kept import KeptEntries


def dictionary_order(uniq: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary order (most often kept first, then by id) and where each class starts in it."""
    by_freq = np.lexsort((uniq, -cls))
    n_cls = int(cls.max()) + 1 if cls.size else 0
    sizes = np.bincount(cls, minlength=n_cls)[::-1]  # classes in dictionary order: highest first
    return by_freq, np.concatenate([[0], np.cumsum(sizes)])


def dictionary(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sample's dictionary of distinct ids: (ids ascending, count classes, class starts in
    dictionary order, each entry's index in dictionary order)."""
    uniq, inv, dcnt = np.unique(ids, return_inverse=True, return_counts=True)
    cls = count_classes(dcnt)
    by_freq, bounds = dictionary_order(uniq, cls)
    rank_of = np.empty(uniq.shape[0], dtype=np.int64)
    rank_of[by_freq] = np.arange(uniq.shape[0])
    return uniq, cls, bounds, rank_of[inv.reshape(-1)]


def fresh_streams(x: np.ndarray, rb: np.ndarray, bounds: np.ndarray):
    """A fresh entry = (class in dictionary order, under a model per rank bucket) + its index
    within the class (uniform): the top of a distribution keeps rarer ids than its tail."""
    k = np.searchsorted(bounds, x, side="right") - 1
    streams = [(k[rb == b], None) for b in range(N_RANK_BUCKETS)]
    for c in range(bounds.shape[0] - 1):
        size = int(bounds[c + 1] - bounds[c])
        streams.append((x[k == c] - bounds[c], entropy.uniform(max(size, 1))))
    return streams


def decode_fresh(dec: entropy.Decoder, rb: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The fresh entries' dictionary indices, given their rank buckets."""
    k = np.zeros(rb.shape[0], dtype=np.int64)
    for b in range(N_RANK_BUCKETS):
        sel = rb == b
        got = dec.next()
        if got.shape[0] != int(sel.sum()):
            raise CodecError("compact2 codec: id class stream of the wrong length: corrupt sample")
        k[sel] = got
    if k.size and k.max() >= bounds.shape[0] - 1:
        raise CodecError("compact2 codec: id class out of range: corrupt sample")
    x = np.zeros(rb.shape[0], dtype=np.int64)
    for c in range(bounds.shape[0] - 1):
        sel = k == c
        size = int(bounds[c + 1] - bounds[c])
        x[sel] = dec.next(entropy.uniform(max(size, 1)), int(sel.sum())) + bounds[c]
    return x


def index_streams(x: np.ndarray, fresh: np.ndarray, rb_fresh: np.ndarray, bounds: np.ndarray) -> list:
    """Entries' dictionary indices (sorted by position, level descending, index): the fresh ones
    by class and index, the tied ones as gaps from the entry before."""
    gap = np.zeros(x.shape[0], dtype=np.int64)
    gap[1:] = x[1:] - x[:-1] - 1
    return fresh_streams(x[fresh], rb_fresh, bounds) + encode_numbers(gap[~fresh])


def decode_indexed_ids(
    dec: entropy.Decoder, fresh: np.ndarray, rb_fresh: np.ndarray, uniq: np.ndarray, cls: np.ndarray, name: str
) -> np.ndarray:
    """The ids `index_streams` wrote (the block's last streams: the block is finished here)."""
    by_freq, bounds = dictionary_order(uniq, cls)
    fx = decode_fresh(dec, rb_fresh, bounds)
    gaps = decode_numbers(dec, int((~fresh).sum())).astype(np.int64)
    dec.finish()
    inc = np.zeros(fresh.shape[0], dtype=np.int64)
    inc[fresh] = fx
    inc[~fresh] = gaps + 1
    x = segment_cumsum(inc, fresh)
    if x.size and (uniq.shape[0] == 0 or x.max() >= uniq.shape[0]):
        raise CodecError(f"{name} codec: dictionary index out of range: corrupt sample")
    return uniq[by_freq][x] if x.size else x


def plain_streams(uniq: np.ndarray, cls: np.ndarray) -> list:
    """The dictionary as gaps between its ascending ids, then its count classes (compact2)."""
    return encode_numbers(np.diff(uniq, prepend=-1) - 1) + [(cls, None)]


def decode_plain(dec: entropy.Decoder, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids ascending, count classes) of a `plain_streams` dictionary, for n entries."""
    uniq = np.cumsum(decode_numbers(dec).astype(np.int64) + 1) - 1
    d = uniq.shape[0]
    if (n and d == 0) or d > n or (d and uniq[-1] >= 1 << 32):
        raise CodecError("compact2 codec: dictionary does not match the counts: corrupt sample")
    cls = dec.next()
    if cls.shape[0] != d or (d and cls.max() > 32):
        raise CodecError("compact2 codec: dictionary classes of the wrong length: corrupt sample")
    return uniq, cls


def decoded_entries(
    counts: np.ndarray,
    pos: np.ndarray,
    ids: np.ndarray,
    lvl: np.ndarray,
    h: float,
    tail,
    name: str,
    check_twice: bool = True,
) -> KeptEntries:
    """The decode ending: entries sorted by id within each position, (L + 1/2) h renormalised, and
    `tail(levels)`: the tail log-masses (check_twice: refuse an id kept twice at one position)."""
    n = ids.shape[0]
    o = np.argsort(pos * (1 << 32) + ids, kind="stable")
    ids, lvl = ids[o], lvl[o]
    if check_twice and n > 1 and ((ids[1:] == ids[:-1]) & (pos[1:] == pos[:-1])).any():
        raise CodecError(f"{name} codec: an id kept twice at one position: corrupt sample")
    return KeptEntries(counts, ids, quantiser.decoded_logp(lvl, counts, h), tail(lvl))
