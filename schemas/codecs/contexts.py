"""Symbols under a model per context, the models written once: the 2-D use of the entropy coder.

Where a symbol's best model depends on something the decoder already knows (a predictor's kind,
a slot's rank, the level above a drop), one histogram per context is written into the block's
header as a table and every symbol is coded under its context's row, in one coder call for all
contexts. A context that is never used costs a zero; a rare context no longer pays a whole
stream's overhead.
"""

from __future__ import annotations

import numpy as np

from schemas.codecs import entropy
from schemas.errors import CodecError


def rows_table(hists: list[np.ndarray]) -> np.ndarray:
    """[contexts, widest alphabet (at least 2: constriction's minimum)] histograms as rows."""
    table = np.zeros((len(hists), max([h.shape[0] for h in hists] + [2])), dtype=np.int64)
    for c, h in enumerate(hists):
        table[c, : h.shape[0]] = h
    return table


def context_streams(sym: np.ndarray, ctx: np.ndarray, n_ctx: int) -> list:
    """Symbols under a model per context, in their own order: each context's histogram as a
    header table, then one stream of per-symbol rows (one decoder call for all contexts)."""
    hists = [np.bincount(sym[ctx == c]) for c in range(n_ctx)]
    return [(entropy.TABLE, h) for h in hists] + [(sym, rows_table(hists)[ctx])]


def decode_context_streams(dec: entropy.Decoder, ctx: np.ndarray, n_ctx: int, what: str) -> np.ndarray:
    """The symbols `context_streams` wrote, given each one's context."""
    hists = [dec.table() for _ in range(n_ctx)]
    if [int(h.sum()) for h in hists] != np.bincount(ctx, minlength=n_ctx).tolist():
        raise CodecError(f"compact4 codec: {what} do not match the predictors: corrupt sample")
    return dec.next(rows_table(hists).astype(np.float64)[ctx], ctx.shape[0])
