"""Codec layouts measured against compact2 in bench/codec, each a step of the way from compact (v1).

Each returns the three payload columns of one sample, like a codec's `encode`; the bench writes
them through the real MDSWriter (zstd shards), so every size is "after shard compression".

* v1-ids + sqrt levels: compact's varint id gaps, values as one byte per entry of compact2's
  sqrt(p) level (zstd entropy-codes both): what the value quantiser alone buys.
* dictionary + sqrt levels, zstd: compact2's layout (per-sample dictionary, level drops, tied
  ids as gaps) but every stream as raw varints for zstd instead of constriction's ANS: what the
  entropy coder buys over zstd.
"""
from __future__ import annotations

import numpy as np

from schemas import varint
from schemas.codec import _sorted_by_id
from schemas.codec_compact2 import Compact2Codec, _count_classes, _dictionary_order, _drops, _structure
from schemas.truncation import Truncated


def _levels(codec: Compact2Codec, tr: Truncated) -> np.ndarray:
    h = codec.sqrt_step(tr.counts)
    return np.floor(np.sqrt(np.exp(tr.logp.astype(np.float64))) / h).astype(np.int64)


def v1_ids_sqrt_levels(tr: Truncated, codec: Compact2Codec) -> dict[str, bytes]:
    counts = np.asarray(tr.counts, dtype=np.int64)
    ids, logp = _sorted_by_id(tr)
    starts = (np.cumsum(counts) - counts)[counts > 0]
    gaps = np.empty_like(ids)
    if ids.shape[0]:
        gaps[0] = ids[0]
        gaps[1:] = ids[1:] - ids[:-1] - 1
        gaps[starts] = ids[starts]
    lv = _levels(codec, Truncated(counts, ids, logp, tr.log_tail))
    return {"teacher_ids": varint.encode(gaps.astype(np.uint64)),
            "teacher_values": varint.encode(lv.astype(np.uint64)),
            "teacher_tail": tr.log_tail.astype("<f2").tobytes()}


def dictionary_zstd(tr: Truncated, codec: Compact2Codec) -> dict[str, bytes]:
    counts = np.asarray(tr.counts, dtype=np.int64)
    pos = np.repeat(np.arange(counts.shape[0]), counts)
    lvl = _levels(codec, tr)
    uniq, inv, dcnt = np.unique(tr.ids, return_inverse=True, return_counts=True)
    cls = _count_classes(dcnt)
    by_freq, _ = _dictionary_order(uniq, cls)
    rank_of = np.empty(uniq.shape[0], dtype=np.int64)
    rank_of[by_freq] = np.arange(uniq.shape[0])
    x = rank_of[inv.reshape(-1)]
    o = np.lexsort((x, -lvl, pos))
    lvl, x = lvl[o], x[o]
    drop = _drops(lvl, counts)
    first, tied, _ = _structure(counts, drop)
    gap = np.zeros_like(x)
    gap[1:] = x[1:] - x[:-1] - 1
    vals = np.where(first, lvl, drop)
    id_sym = np.where(tied, gap, x)
    head = np.concatenate([np.diff(uniq, prepend=-1) - 1, cls])
    return {"teacher_ids": varint.encode(np.concatenate([head, id_sym]).astype(np.uint64)),
            "teacher_values": varint.encode(vals.astype(np.uint64)),
            "teacher_tail": tr.log_tail.astype("<f2").tobytes()}


CANDIDATES = {
    "v1 id gaps + sqrt levels (zstd)": v1_ids_sqrt_levels,
    "dictionary + sqrt levels (zstd)": dictionary_zstd,
}
