"""Fidelity metrics of stored teacher signal (nats per token, entries and bytes per token).

* codec KL: KL(truncated-renormalised teacher || decoded), the error the codec alone adds.
* storage_report: bytes per kept entry, the codec's guaranteed KL bound and its design KL, for any codec.
* total KL: KL(full teacher || decoded with tail bucket), where the decoded distribution gives
  each kept id (1 - tail) * q_i and spreads the tail mass uniformly over the V - n other ids.
  That is the error of truncation and codec together, finite whenever the tail is stored.
"""

from __future__ import annotations

import numpy as np

from schemas.codecs import lossless_decoded
from schemas.kept import KeptEntries
from schemas.truncation import log_normalizer


def codec_kl(truncated: KeptEntries, decoded: KeptEntries) -> float:
    """Mean over positions with signal of KL(truncated || decoded), both over the kept set."""
    ref = lossless_decoded(truncated)
    ids_t, lp_t = ref.ids, ref.logp
    pos = np.repeat(np.arange(decoded.counts.shape[0]), decoded.counts)
    order = np.lexsort((decoded.ids, pos))  # codecs decode ids ascending; do not rely on it
    ids_d, lp_d = decoded.ids[order], decoded.logp[order]
    if not np.array_equal(ids_t, ids_d):
        return float("inf")
    p = np.exp(lp_t.astype(np.float64))
    n = max(int((truncated.counts > 0).sum()), 1)
    return float((p * (lp_t.astype(np.float64) - lp_d.astype(np.float64))).sum() / n)


def total_kl(logits: np.ndarray, decoded: KeptEntries) -> float:
    """Mean over positions with signal of KL(full teacher softmax || decoded-with-tail)."""
    logits = np.asarray(logits, dtype=np.float32)
    t, v = logits.shape
    lse = log_normalizer(logits)
    total, n_pos = 0.0, 0
    offs = decoded.offsets()
    for r in range(t):
        c = int(decoded.counts[r])
        if c == 0:
            continue
        n_pos += 1
        lp_full = logits[r].astype(np.float64) - lse[r]
        p = np.exp(lp_full)
        tail = float(np.exp(decoded.log_tail[r]))
        ids = decoded.ids[offs[r] : offs[r + 1]]
        kept = np.zeros(v, dtype=bool)
        kept[ids] = True
        log_q = np.empty(v)
        log_q[ids] = (
            np.log1p(-min(tail, 1.0)) + decoded.logp[offs[r] : offs[r + 1]].astype(np.float64) if tail < 1 else -np.inf
        )
        rest = v - c
        log_q[~kept] = (np.log(tail) - np.log(rest)) if (rest > 0 and tail > 0) else -np.inf
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = np.where(p > 0, p * (lp_full - log_q), 0.0)
        total += float(terms.sum())
    return total / max(n_pos, 1)


def kept_per_token(counts: np.ndarray) -> float:
    counts = np.asarray(counts)
    nz = counts[counts > 0]
    return float(nz.mean()) if nz.size else 0.0


def bytes_per_token(num_bytes: int, num_tokens: int) -> float:
    return num_bytes / max(num_tokens, 1)


def storage_report(codec, stored_bytes_per_token: float, kept_per_token: float, max_kept: int | None = None) -> dict:
    """What `pdistill inspect` prints about any codec: stored bytes per kept entry (every shard
    byte, tokens included, over the kept entries), the codec KL it guarantees for every sample
    (`codec_kl_bound`, with at most `max_kept` entries per position: the manifest's top_k) and,
    where it differs, the KL the codec is designed for (`codec_kl_design`)."""
    out = {
        "stored_bytes_per_kept_entry": stored_bytes_per_token / kept_per_token if kept_per_token else float("nan"),
        "codec_kl_bound": float(codec.kl_bound(max_kept)),
    }
    if codec.kl_design() != out["codec_kl_bound"]:
        out["codec_kl_design"] = float(codec.kl_design())
    return out
