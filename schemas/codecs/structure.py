"""The level / rank structure of a sample: what both sides know from the counts and the levels.

Within a position the entries are taken by level, descending; their *rank* is their place in
that order and their *level groups* are the runs of equal levels. Everything here is computed
from the counts and the levels alone, before any id is decoded, so the id coders may use it as
context for free: the top of a distribution keeps rarer ids than its tail (models per *rank
bucket*), entries tied at one level are a set whose order costs nothing, and the group an id
sits in says how probable it is without coding it again.
"""

from __future__ import annotations

import numpy as np

from schemas.errors import CodecError

# Rank buckets: 0 (the top level itself), then the drops at rank 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+.
RANK_EDGES = np.array([1, 2, 4, 8, 16, 32, 64])
N_RANK_BUCKETS = len(RANK_EDGES) + 1


def rank_bucket(rank: np.ndarray) -> np.ndarray:
    """Each rank's bucket: 0, 1, 2-3, 4-7, ... 64+."""
    return np.searchsorted(RANK_EDGES, rank, side="right")


def entry_order(pos: np.ndarray, lvl: np.ndarray, x: np.ndarray, t: int, d: int) -> np.ndarray:
    """Entries by position, level descending, dictionary index: one argsort of a packed int64 key
    (10x faster than lexsort), lexsort when the key would not fit."""
    n_lvl = int(lvl.max()) + 1 if lvl.size else 1
    if t * n_lvl * max(d, 1) < 1 << 62:
        return np.argsort((pos * n_lvl + (n_lvl - 1 - lvl)) * max(d, 1) + x, kind="stable")
    return np.lexsort((x, -lvl, pos))


def drops(lvl: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Level drop from the previous entry of the same position (0 for each position's first)."""
    drop = np.zeros(lvl.shape[0], dtype=np.int64)
    drop[1:] = lvl[:-1] - lvl[1:]
    starts = (np.cumsum(counts) - counts)[counts > 0]
    drop[starts] = 0
    return drop


def structure(counts: np.ndarray, drop: np.ndarray):
    """(first entry of its position, tied with its predecessor, rank bucket) per entry."""
    starts = np.cumsum(counts) - counts
    rank = np.arange(drop.shape[0]) - np.repeat(starts, counts)
    first = rank == 0
    return first, ~first & (drop == 0), rank_bucket(rank)


def groups(pos: np.ndarray, lvl: np.ndarray) -> np.ndarray:
    """True where an entry starts a level group: a new position or a new level (entries sorted
    by position, then level descending)."""
    new = np.ones(pos.shape[0], dtype=bool)
    new[1:] = (pos[1:] != pos[:-1]) | (lvl[1:] != lvl[:-1])
    return new


def group_start_rank(new: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per entry of the full (sorted) position: the rank at which its level group starts."""
    gnum = np.cumsum(new) - 1
    start = np.flatnonzero(new)[gnum]
    return start - np.repeat(np.cumsum(counts) - counts, counts)


class Layout:
    """The levels' structure, from the counts and the (descending) levels alone: what both sides
    know before any id."""

    def __init__(self, counts: np.ndarray, lvl: np.ndarray):
        self.counts = counts
        self.t, self.n = counts.shape[0], lvl.shape[0]
        self.starts = np.cumsum(counts) - counts
        self.pos = np.repeat(np.arange(self.t), counts)
        self.lvl = lvl
        self.new = groups(self.pos, lvl)
        self.gnum = np.cumsum(self.new) - 1  # global group number of each entry
        self.gstart = np.flatnonzero(self.new)  # entry index where each group starts
        self.gsize = np.diff(np.append(self.gstart, self.n))
        self.glvl = lvl[self.gstart] if self.n else lvl[:0]
        self.gpos = self.pos[self.gstart] if self.n else self.pos[:0]
        self.first_group = np.zeros(self.t, dtype=np.int64)
        if self.n:
            self.first_group = self.gnum[np.minimum(self.starts, self.n - 1)]
        self.n_groups = np.bincount(self.gpos, minlength=self.t) if self.n else np.zeros(self.t, dtype=np.int64)
        self.start_rank = group_start_rank(self.new, counts)


def checked_entries(name: str, tr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, ids, each entry's position) of a `KeptEntries` record, ids checked to fit 32 bits."""
    counts = np.asarray(tr.counts, dtype=np.int64)
    ids = np.asarray(tr.ids, dtype=np.int64)
    if ids.shape[0] and (ids.min() < 0 or ids.max() >= 1 << 32):
        raise CodecError(f"{name} codec: ids must be in [0, 2^32)")
    return counts, ids, np.repeat(np.arange(counts.shape[0]), counts)
