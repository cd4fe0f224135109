"""Truncation of teacher logits to the kept set (top-k, top-p, top-p-k) and sampled selection.

The paper (Peng et al. 2025) truncates raw logits first and applies the temperature after, so
truncation here is always at temperature 1.  What comes out is a `schemas.kept.KeptEntries`
record: per position the number of kept ids, the kept ids and their log-probabilities under the
*full* softmax, and the log of the mass that truncation dropped.

Rules (deterministic, ties broken by the lower id):
  * candidates are ordered by logit descending, then id ascending;
  * top-p keeps the smallest prefix whose cumulative probability is >= p;
  * top-k then caps that prefix at k entries.

"No tail" has one definition, applied in `truncate_candidates` for both entry points: the dropped
mass is exactly zero (log_tail = -inf) when every vocabulary id is kept, or when the dropped mass
is below `TAIL_FLOOR` (2^-30), where two float64 normalisers summed in different orders (numpy's
and the accelerator's) disagree by rounding noise and float32 storage could not resolve it anyway.

Two entry points share `truncate_candidates`: `truncate` (numpy, the reference) and
`truncate_tensor` (any torch-like tensor, on its own device, by duck typing so that this package
never imports torch).  Both pick the same candidate set with the same tie rule and compute the
log-normaliser in float64, so their ids agree bit for bit.
"""

from __future__ import annotations

import numpy as np

from schemas.errors import CodecError
from schemas.kept import KeptEntries

# Dropped mass below this is "no tail" (log_tail = -inf): rounding noise of 1 - sum(kept), not mass.
TAIL_FLOOR = 2.0**-30


def validate_params(top_p: float, top_k: int, vocab_size: int | None = None) -> None:
    """Raise CodecError naming the setting when (top_p, top_k) cannot be applied."""
    if not isinstance(top_p, (int, float)) or not (0.0 < float(top_p) <= 1.0):
        raise CodecError(f"top_p must be in (0, 1], got {top_p!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise CodecError(f"top_k must be a positive integer, got {top_k!r}")
    if vocab_size is not None and top_k > vocab_size:
        raise CodecError(f"top_k={top_k} is larger than the vocabulary ({vocab_size} ids)")


def _check_logits(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise CodecError(f"logits must be 2-D [positions, vocab], got shape {logits.shape}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise CodecError(f"logits are empty (shape {logits.shape})")
    if not np.isfinite(logits).all():
        bad = np.argwhere(~np.isfinite(logits))[0]
        raise CodecError(f"non-finite teacher logit at position {bad[0]}, id {bad[1]}: {logits[bad[0], bad[1]]}")
    return logits.astype(np.float32, copy=False)


def log_normalizer(logits: np.ndarray) -> np.ndarray:
    """[T] float64 logsumexp over the vocabulary."""
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def top_candidates(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits per row ([T, k] values, ids), ties at the boundary to the lower id.

    Returned unordered; `truncate_candidates` orders them.
    """
    t, v = logits.shape
    if k >= v:
        ids = np.broadcast_to(np.arange(v, dtype=np.int64), (t, v)).copy()
        return logits.copy(), ids
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(logits, part, axis=1)
    kth = vals.min(axis=1)
    # Rows where the boundary value is tied with ids outside the chosen set: redo them exactly.
    n_eq_total = (logits == kth[:, None]).sum(axis=1)
    n_eq_chosen = (vals == kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(n_eq_total != n_eq_chosen):
        order = np.lexsort((np.arange(v), -logits[r]))[:k]
        part[r] = order
        vals[r] = logits[r, order]
    return vals, part.astype(np.int64)


def truncate_candidates(
    cand_logits: np.ndarray,
    cand_ids: np.ndarray,
    lse: np.ndarray,
    top_p: float,
    top_k: int,
    vocab_size: int,
) -> KeptEntries:
    """Finish a truncation from the top-k candidates of each row and the row's log-normaliser.

    cand_logits/cand_ids: [T, C] with C >= min(top_k, V); lse: [T] float64 logsumexp of the row;
    vocab_size: V, so that "every id kept" is known exactly rather than from rounded mass.
    """
    cand_logits = np.asarray(cand_logits, dtype=np.float32)
    cand_ids = np.asarray(cand_ids, dtype=np.int64)
    t, c = cand_logits.shape
    # Order by logit descending, id ascending (lexsort: last key is primary).
    order = np.lexsort((cand_ids, -cand_logits), axis=1)
    z = np.take_along_axis(cand_logits, order, axis=1).astype(np.float64)
    ids = np.take_along_axis(cand_ids, order, axis=1)
    logp = z - np.asarray(lse, dtype=np.float64)[:, None]
    cum = np.cumsum(np.exp(logp), axis=1)
    # smallest n with cum[n-1] >= p; when p is never reached (rounding) keep all candidates
    reached = cum >= top_p
    n_p = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, c)
    counts = np.minimum(n_p, min(top_k, c)).astype(np.int64)
    keep = np.arange(c)[None, :] < counts[:, None]
    kept_mass = np.where(keep, np.exp(logp), 0.0).sum(axis=1)
    kept_mass = np.minimum(kept_mass, 1.0)
    no_tail = (counts >= vocab_size) | (1.0 - kept_mass < TAIL_FLOOR)
    with np.errstate(divide="ignore"):
        log_tail = np.where(no_tail, -np.inf, np.log1p(-np.where(no_tail, 0.0, kept_mass)))
    return KeptEntries(
        counts=counts,
        ids=ids[keep],
        logp=logp[keep].astype(np.float32),
        log_tail=log_tail.astype(np.float32),
    )


def truncate(logits: np.ndarray, top_p: float = 1.0, top_k: int = 100) -> KeptEntries:
    """Reference top-p-k truncation of [T, V] logits (numpy). top_p = 1 gives plain top-k."""
    logits = _check_logits(logits)
    validate_params(top_p, top_k, logits.shape[1])
    vals, ids = top_candidates(logits, top_k)
    return truncate_candidates(vals, ids, log_normalizer(logits), top_p, top_k, logits.shape[1])


def truncate_tensor(logits, top_p: float = 1.0, top_k: int = 100, row_chunk: int = 256) -> KeptEntries:
    """Top-p-k truncation of a [T, V] torch tensor on its own device (duck-typed, no torch import).

    Only [T, k] candidates and [T] normalisers leave the device. Matches `truncate` bit for bit
    on ids: same candidate set (ties at the boundary to the lower id), float64 normaliser.
    """
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise CodecError(f"logits must be non-empty 2-D [positions, vocab], got {tuple(logits.shape)}")
    validate_params(top_p, top_k, int(logits.shape[1]))
    z = logits.detach().float()
    if not bool(z.isfinite().all()):
        bad = (~z.isfinite()).nonzero()[0].tolist()
        raise CodecError(f"non-finite teacher logit at position {bad[0]}, id {bad[1]}")
    k = min(top_k, int(z.shape[1]))
    vals_out, ids_out, lse_out = [], [], []
    for s in range(0, int(z.shape[0]), row_chunk):
        zc = z[s : s + row_chunk]
        lse_out.append(zc.double().logsumexp(-1).cpu().numpy())
        vals, ids = zc.topk(k, dim=-1, sorted=False)
        kth = vals.min(-1).values
        n_eq_total = (zc == kth[:, None]).sum(-1)
        n_eq_chosen = (vals == kth[:, None]).sum(-1)
        amb = (n_eq_total != n_eq_chosen).nonzero()[:, 0]
        if int(amb.numel()) > 0:
            za, ka = zc[amb], kth[amb][:, None]
            gt, eq = za > ka, za == ka
            need = k - gt.sum(-1, keepdim=True)
            sel = gt | (eq & (eq.cumsum(-1) <= need))
            cols = sel.nonzero()[:, 1].reshape(-1, k)  # row-major: k per row, ids ascending
            ids[amb] = cols
            vals[amb] = za.gather(1, cols)
        vals_out.append(vals.cpu().numpy())
        ids_out.append(ids.cpu().numpy())
    return truncate_candidates(
        np.concatenate(vals_out),
        np.concatenate(ids_out),
        np.concatenate(lse_out),
        top_p,
        top_k,
        int(z.shape[1]),
    )


def sample_select(logits: np.ndarray, num_draws: int, seed: int) -> KeptEntries:
    """Sampled teacher signal ("Sparse Logit Sampling", Anshumann et al. 2025; Gemma 3).

    Draws `num_draws` ids per position from the full teacher softmax with a seeded generator and
    keeps the distinct ids with weights count/num_draws as their probabilities. Unlike top-k this
    estimate is unbiased in expectation. There is no tail: the weights sum to 1 (log_tail = -inf).
    """
    logits = _check_logits(logits)
    if isinstance(num_draws, bool) or not isinstance(num_draws, (int, np.integer)) or num_draws < 1:
        raise CodecError(f"num_draws must be a positive integer, got {num_draws!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    lse = log_normalizer(logits)
    t, v = logits.shape
    counts, ids, logp = [], [], []
    for r in range(t):
        cdf = np.cumsum(np.exp(logits[r].astype(np.float64) - lse[r]))
        draws = np.searchsorted(cdf, rng.random(num_draws) * cdf[-1], side="right")
        uniq, cnt = np.unique(np.minimum(draws, v - 1), return_counts=True)
        counts.append(len(uniq))
        ids.append(uniq)
        logp.append(np.log(cnt / num_draws))
    return KeptEntries(
        counts=np.asarray(counts, dtype=np.int64),
        ids=np.concatenate(ids).astype(np.int64),
        logp=np.concatenate(logp).astype(np.float32),
        log_tail=np.full(t, -np.inf, dtype=np.float32),
    )
