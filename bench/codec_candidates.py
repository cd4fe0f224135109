"""Codec layouts measured against compact3 in bench/codec, each a step of the way from compact (v1).

Each returns the three payload columns of one sample, like a codec's `encode` (size only: they
have no decoder); the bench writes them through the real MDSWriter (zstd shards), so every size
is "after shard compression". Context: `kept_ids` (the run's kept-id counts) and `corpus` (token
ids of held-out text), for the id priors.

* v1-ids + sqrt levels: compact's varint id gaps, values as one byte per entry of compact2's
  sqrt(p) level (zstd entropy-codes both): what the value quantiser alone buys.
* dictionary + sqrt levels, zstd: compact2's layout (per-sample dictionary, level drops, tied
  ids as gaps) but every stream as raw varints for zstd instead of constriction's ANS: what the
  entropy coder buys over zstd.
* id priors (issue 13's second step; compact2's layout, ANS, with a global order of the
  vocabulary: the dictionary coded as gaps in that order, classes per order bucket, and ordered
  by (count class, global rank) instead of (count class, id)):
  - Zipf prior (no table): the order is the id itself (BPE ids are roughly in frequency order);
  - corpus unigram: token frequencies of held-out text (what a launcher could count cheaply);
  - teacher kept-id unigram, leave-one-sample-out (an oracle for a side table of the teacher's
    kept-id frequencies from a first part of the run).
* compact3 + repeats (issue 13's third step, `AFTER_COMPACT3`): compact4's id block (the kept
  set at the last earlier position with the same tokens) with compact3's levels block: what the
  repeats alone buy before compact4's drops under the level above them.
"""

from __future__ import annotations

import numpy as np

from schemas.codecs import Compact2Codec, Compact3Codec, Compact4Codec, entropy, varint
from schemas.codecs.dictionary import dictionary_order, fresh_streams
from schemas.codecs.numbers import classes, count_classes, encode_numbers
from schemas.codecs.segments import sorted_by_id
from schemas.codecs.structure import drops, entry_order, structure
from schemas.kept import KeptEntries


def _levels(codec: Compact2Codec, tr: KeptEntries) -> np.ndarray:
    h = codec.sqrt_step(tr.counts)
    return np.floor(np.sqrt(np.exp(tr.logp.astype(np.float64))) / h).astype(np.int64)


def v1_ids_sqrt_levels(tr: KeptEntries, codec: Compact2Codec, tokens=None, **_) -> dict[str, bytes]:
    counts = np.asarray(tr.counts, dtype=np.int64)
    ids, logp = sorted_by_id(tr)
    starts = (np.cumsum(counts) - counts)[counts > 0]
    gaps = np.empty_like(ids)
    if ids.shape[0]:
        gaps[0] = ids[0]
        gaps[1:] = ids[1:] - ids[:-1] - 1
        gaps[starts] = ids[starts]
    lv = _levels(codec, KeptEntries(counts, ids, logp, tr.log_tail))
    return {
        "teacher_ids": varint.encode(gaps.astype(np.uint64)),
        "teacher_values": varint.encode(lv.astype(np.uint64)),
        "teacher_tail": tr.log_tail.astype("<f2").tobytes(),
    }


def dictionary_zstd(tr: KeptEntries, codec: Compact2Codec, tokens=None, **_) -> dict[str, bytes]:
    counts = np.asarray(tr.counts, dtype=np.int64)
    pos = np.repeat(np.arange(counts.shape[0]), counts)
    lvl = _levels(codec, tr)
    uniq, inv, dcnt = np.unique(tr.ids, return_inverse=True, return_counts=True)
    cls = count_classes(dcnt)
    by_freq, _ = dictionary_order(uniq, cls)
    rank_of = np.empty(uniq.shape[0], dtype=np.int64)
    rank_of[by_freq] = np.arange(uniq.shape[0])
    x = rank_of[inv.reshape(-1)]
    o = np.lexsort((x, -lvl, pos))
    lvl, x = lvl[o], x[o]
    drop = drops(lvl, counts)
    first, tied, _ = structure(counts, drop)
    gap = np.zeros_like(x)
    gap[1:] = x[1:] - x[:-1] - 1
    vals = np.where(first, lvl, drop)
    id_sym = np.where(tied, gap, x)
    head = np.concatenate([np.diff(uniq, prepend=-1) - 1, cls])
    return {
        "teacher_ids": varint.encode(np.concatenate([head, id_sym]).astype(np.uint64)),
        "teacher_values": varint.encode(vals.astype(np.uint64)),
        "teacher_tail": tr.log_tail.astype("<f2").tobytes(),
    }


def _with_global_order(tr: KeptEntries, codec: Compact2Codec, score: np.ndarray) -> dict[str, bytes]:
    """compact2's streams with the vocabulary ordered by `score` (higher first, then id)."""
    cols = codec.encode(tr)  # values and tail blocks are compact2's
    counts = np.asarray(tr.counts, dtype=np.int64)
    t, n = counts.shape[0], tr.ids.shape[0]
    v = max(score.shape[0], int(tr.ids.max()) + 1 if n else 1)
    score = np.concatenate([score, np.zeros(v - score.shape[0])])
    grank = np.empty(v, dtype=np.int64)
    grank[np.lexsort((np.arange(v), -score))] = np.arange(v)
    lvl = _levels(codec, tr)
    pos = np.repeat(np.arange(t), counts)
    uniq, inv, dcnt = np.unique(tr.ids, return_inverse=True, return_counts=True)
    cls = count_classes(dcnt)
    gr = grank[uniq]
    by = np.lexsort((gr, -cls))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cls, minlength=int(cls.max()) + 1 if cls.size else 0)[::-1])])
    rank_of = np.empty(uniq.shape[0], dtype=np.int64)
    rank_of[by] = np.arange(uniq.shape[0])
    x = rank_of[inv.reshape(-1)]
    o = entry_order(pos, lvl, x, t, uniq.shape[0])
    lvl, x = lvl[o], x[o]
    first, tied, rb = structure(counts, drops(lvl, counts))
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = x[1:] - x[:-1] - 1
    # the dictionary as gaps in global order: gap classes and count classes per global-rank octave
    sg = np.sort(gr)
    octave = np.searchsorted(1 << np.arange(33), np.concatenate([[0], sg[:-1]]), side="right")
    g_cls, g_extra = classes(np.diff(sg, prepend=-1) - 1)
    cls_by_rank = cls[np.argsort(gr)]
    dict_streams = [(g_cls[octave == b], None) for b in range(34)] + g_extra
    dict_streams += [(cls_by_rank[octave == b], None) for b in range(34)]
    id_streams = dict_streams + fresh_streams(x[~tied], rb[~tied], bounds) + encode_numbers(gap[tied])
    return {**cols, "teacher_ids": entropy.encode(id_streams)}


def zipf_prior(tr, codec, tokens=None, **_):
    v = int(tr.ids.max()) + 1 if tr.ids.size else 1
    return _with_global_order(tr, codec, -np.arange(v, dtype=np.float64))


def corpus_unigram(tr, codec, tokens=None, corpus=None, **_):
    return _with_global_order(tr, codec, np.bincount(np.asarray(corpus, dtype=np.int64)).astype(np.float64))


def kept_unigram_held_out(tr, codec, tokens=None, kept_ids=None, **_):
    own = np.bincount(tr.ids, minlength=kept_ids.shape[0])
    return _with_global_order(tr, codec, (kept_ids - own[: kept_ids.shape[0]]).astype(np.float64))


def compact3_plus_repeats(tr, codec, tokens=None, **_):
    params = codec.params()
    return {
        **Compact4Codec(**params).encode(tr, tokens=tokens),
        "teacher_values": Compact3Codec(**params).encode(tr, tokens=tokens)["teacher_values"],
    }


AFTER_COMPACT3 = {"compact3 + repeats (compact3's levels)": compact3_plus_repeats}

CANDIDATES = {
    "v1 id gaps + sqrt levels (zstd)": v1_ids_sqrt_levels,
    "dictionary + sqrt levels (zstd)": dictionary_zstd,
    "compact2 + Zipf id prior (no table)": zipf_prior,
    "compact2 + corpus unigram table (held out)": corpus_unigram,
    "compact2 + teacher kept-id table (held out)": kept_unigram_held_out,
}
