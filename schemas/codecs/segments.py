"""Per-position arithmetic on flat (CSR) entries, and what every codec decodes to.

A sequence's kept entries are stored flat, grouped by position (`schemas.kept.KeptEntries`); the
codecs work on them with one vectorised call per operation instead of a loop over positions:
a maximum, a logsumexp or a running sum restarted at each position. `lossless_decoded` is the
reference every codec is measured against: ids ascending per position, log-probs renormalised
over the kept set.
"""

from __future__ import annotations

import numpy as np

from schemas.kept import KeptEntries


def segment_logsumexp(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[T] logsumexp of each position's entries (-inf for positions with no entries)."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.full(counts.shape[0], -np.inf, dtype=np.float64)
    nz = counts > 0
    if not nz.any():
        return out
    starts = (np.cumsum(counts) - counts)[nz]
    v = values.astype(np.float64)
    m = np.maximum.reduceat(v, starts)
    rep = np.repeat(m, counts[nz])
    out[nz] = m + np.log(np.add.reduceat(np.exp(v - rep), starts))
    return out


def renormalise(logp: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Log-probs renormalised over each position's kept set."""
    lse = segment_logsumexp(logp, counts)
    return (logp.astype(np.float64) - np.repeat(lse, counts)).astype(np.float32)


def segment_max(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[T] each position's largest entry (-inf for positions with no entries)."""
    out = np.full(counts.shape[0], -np.inf)
    nz = counts > 0
    if nz.any():
        out[nz] = np.maximum.reduceat(values.astype(np.float64), (np.cumsum(counts) - counts)[nz])
    return out


def segment_cumsum(inc: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Running sum of inc restarted wherever start is True (start[0] must be True if inc is non-empty)."""
    if inc.shape[0] == 0:
        return inc.copy()
    c = np.cumsum(inc)
    seg = np.cumsum(start) - 1
    base = (c - inc)[start]
    return c - base[seg]


def sorted_by_id(tr: KeptEntries) -> tuple[np.ndarray, np.ndarray]:
    """(ids, log-probs) with each position's entries in ascending id order."""
    pos = np.repeat(np.arange(tr.counts.shape[0]), tr.counts)
    order = np.lexsort((tr.ids, pos))
    return tr.ids[order], tr.logp[order]


def lossless_decoded(tr: KeptEntries) -> KeptEntries:
    """What a lossless codec would decode: ids ascending per position, log-probs renormalised
    over the kept set. The reference for codec error, and the live teacher's layout."""
    ids, logp = sorted_by_id(tr)
    return KeptEntries(np.asarray(tr.counts), ids, renormalise(logp, tr.counts), tr.log_tail)
