"""Cross-tokenizer losses from the student's hidden state: the student-side primitives and ALM.

The student has its own tokenizer; the teacher's stored pass is aligned to it at common byte
boundaries (`trainer.retokenize`): aligned pairs (teacher position i, student position a whose
next tokens start at the same byte) and per-position chunk ids (chunk c: the text between aligned
boundaries c and c + 1). As in `trainer.fused_head`, nothing here holds the student's [N, V]
logits: rows are walked in chunks of ``rows`` and only one [rows, V] block (plus its scratch) is
alive at a time.

  token_logprobs     log q(target) per row, an autograd Function (forward: logsumexp + gather per
                     chunk; backward: each chunk's softmax recomputed, g (onehot - q) applied to
                     hidden, weight and bias). Exact, and cheaper than checkpointing.
  rows_logits_loss   a per-row loss of the full logits at selected rows (the aligned ones), chunk
                     by chunk under torch.utils.checkpoint (GOLD, next-byte:
                     `trainer.cross_tokenizer_pairs`).
  alm_loss           approximate likelihood matching (Minixhofer, Vulic, Ponti, NeurIPS 2025,
                     arXiv 2503.20083), see its docstring.

Every loss returns a sum and a count (`CrossLoss`), so the caller takes the mean over the whole
batch (all ranks) like the other terms (`trainer.model.BatchCounts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


class CrossLoss(NamedTuple):
    """sum: scalar, graph-attached (sum of the per-unit losses); count: int64 scalar, the units summed
    (chunks for ALM, aligned positions for the others)."""

    sum: torch.Tensor
    count: torch.Tensor


def matmul_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the student's own head would produce its logits in: autocast's where it applies."""
    dev = hidden.device.type
    if hidden.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return hidden.dtype


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is evaluated in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_head(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, what: str = "hidden") -> None:
    """One-line errors for a projection that does not fit the hidden rows."""
    if not hidden.is_floating_point():
        raise ValueError(f"{what} must be floating point, got {hidden.dtype}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must have shape [V, {hidden.shape[-1]}], got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


# --------------------------------------------------------------------------------------------
# log q(target) per row


def _chunk_logits(h, w, b, acc):
    x = torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())
    return x if x.dtype == acc else x.to(acc)


class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows: int):  # type: ignore[override]
        mm = matmul_dtype(hidden)
        acc = accumulate_dtype(mm)
        n = hidden.shape[0]
        h, w = hidden.detach().to(mm), weight.detach().to(mm)
        b = bias.detach().to(mm) if bias is not None else None
        ignored = targets == IGNORE_INDEX
        tgt = torch.where(ignored, 0, targets)[:, None]
        out = torch.zeros(n, dtype=acc, device=hidden.device)
        lse = torch.zeros(n, dtype=acc, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, n, rows):
                e = min(s + rows, n)
                x = _chunk_logits(h[s:e], w, b, acc)
                lse[s:e] = torch.logsumexp(x, -1)
                out[s:e] = x.gather(1, tgt[s:e])[:, 0] - lse[s:e]
        out = torch.where(ignored, 0.0, out)
        ctx.save_for_backward(hidden, weight, bias, lse)
        ctx.tgt, ctx.ignored, ctx.rows, ctx.mm = tgt, ignored, rows, mm
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out):  # type: ignore[override]
        hidden, weight, bias, lse = ctx.saved_tensors
        mm, rows, tgt = ctx.mm, ctx.rows, ctx.tgt
        acc = lse.dtype
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        h, w = hidden.detach().to(mm), weight.detach().to(mm)
        b = bias.detach().to(mm) if bias is not None else None
        g = torch.where(ctx.ignored, 0.0, g_out.to(acc))
        g_h = torch.empty_like(h) if need_h else None
        g_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
        g_b = torch.zeros(w.shape[0], dtype=acc, device=w.device) if need_b else None
        n = hidden.shape[0]
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, n, rows):
                e = min(s + rows, n)
                x = _chunk_logits(h[s:e], w, b, acc)
                # d log q_t / dx = onehot(t) - q, times the upstream g: written over the logits
                grad = x.sub_(lse[s:e, None]).exp_().mul_(-g[s:e, None])
                grad.scatter_add_(1, tgt[s:e], g[s:e, None])
                gm = grad if grad.dtype == mm else grad.to(mm)
                if g_h is not None:
                    torch.mm(gm, w, out=g_h[s:e])
                if g_w is not None:
                    g_w.add_(torch.mm(gm.t(), h[s:e]).to(acc))
                if g_b is not None:
                    g_b.add_(grad.sum(0))
        return (
            None if g_h is None else g_h.to(hidden.dtype),
            None if g_w is None else g_w.to(weight.dtype),
            None if g_b is None else g_b.to(bias.dtype),
            None,
            None,
        )


def token_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, rows: int
) -> torch.Tensor:
    """log softmax(hidden @ weight.T + bias)[target] per row, [N] (float32; float64 for float64
    inputs), 0 where target is -100; differentiable w.r.t. hidden [N, H], weight [V, H] and bias [V]
    without an [N, V] tensor (chunks of ``rows`` rows)."""
    check_head(hidden, weight, bias)
    if hidden.dim() != 2 or tuple(targets.shape) != (hidden.shape[0],):
        raise ValueError(f"hidden must be [N, H] and targets [N], got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    targets = targets.to(device=hidden.device, dtype=torch.int64)  # out of [0, V): gather refuses it
    return _TokenLogprobs.apply(hidden, weight, bias, targets, max(1, int(rows)))


# --------------------------------------------------------------------------------------------
# a per-row loss of the full logits, one checkpointed chunk at a time


def _rows_chunk(h, weight, bias, sl: slice, fn):
    x = torch.nn.functional.linear(h, weight, bias)
    acc = accumulate_dtype(x.dtype)
    return fn(x if x.dtype == acc else x.to(acc), sl)


def rows_logits_loss(
    hidden_rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rows: int,
    fn: Callable[[torch.Tensor, slice], torch.Tensor],
) -> torch.Tensor:
    """torch.cat over chunks of ``fn(logits_chunk [m, V], row_slice)`` ([m] or [m, k] each), with
    logits_chunk = hidden_rows[row_slice] @ weight.T + bias in float32 (float64 for float64 inputs).
    With gradients each chunk runs under torch.utils.checkpoint: its [m, V] intermediates are freed
    after forward and recomputed in backward, so one chunk's are alive at a time."""
    check_head(hidden_rows, weight, bias, "hidden_rows")
    m, rows = hidden_rows.shape[0], max(1, int(rows))
    grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden_rows, weight, bias))
    outs = []
    for s in range(0, max(m, 1), rows):
        sl = slice(s, min(s + rows, m))
        if grads:
            outs.append(checkpoint(_rows_chunk, hidden_rows[sl], weight, bias, sl, fn, use_reentrant=False))
        else:
            outs.append(_rows_chunk(hidden_rows[sl], weight, bias, sl, fn))
    return torch.cat(outs)


# --------------------------------------------------------------------------------------------
# ALM

_LOG_HALF = -math.log(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler's two branches, each on inputs that
    keep the other branch's gradient finite)."""
    small = torch.log1p(-torch.exp(x.clamp(max=_LOG_HALF)))
    near0 = torch.log(-torch.expm1(x.clamp(min=_LOG_HALF, max=-1e-30)))
    return torch.where(x < _LOG_HALF, small, near0)


def binary_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(p) || Bernoulli(q)) = p log(p/q) + (1-p) log((1-p)/(1-q)) from log p, log q < 0."""
    l1p, l1q = log1mexp(log_p), log1mexp(log_q)
    return log_p.exp() * (log_p - log_q) + l1p.exp() * (l1p - l1q)


def _chunk_sums(chunk: torch.Tensor, n_buckets: int, *values: torch.Tensor) -> list[torch.Tensor]:
    """Per (sequence, chunk) sums of each value [B, L]; bucket b * C + c, positions of no chunk (-1)
    go to one extra bucket (dropped by the caller)."""
    bsz, length = chunk.shape
    per_seq = n_buckets
    seq = torch.arange(bsz, device=chunk.device)[:, None] * per_seq
    idx = torch.where(chunk >= 0, seq + chunk, bsz * per_seq).reshape(-1)
    out = []
    for v in values:
        out.append(v.new_zeros(bsz * per_seq + 1).index_add(0, idx, v.reshape(-1)))
    return out


def alm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    student_chunk: torch.Tensor,
    teacher_next_logp: torch.Tensor,
    teacher_chunk: torch.Tensor,
    *,
    tau: float = 100.0,
    eps: float = 1e-6,
    rows: int = 1024,
) -> CrossLoss:
    """Approximate likelihood matching over aligned chunks; (sum over chunks, number of chunks).

    Shapes: hidden [B, S, H] (the student's last hidden state), weight [V, H], bias [V] or None,
    labels [B, S] (the student's next token, -100 none), student_chunk [B, S] and teacher_chunk
    [B, T] int64 (-1: no chunk), teacher_next_logp [B, T] (the teacher's log p of its actual next
    token, NaN where none).

    Per chunk c: L_T = sum of teacher_next_logp over its teacher positions, L_S = sum of the
    student's log q(label) over its student positions (`token_logprobs`): the log-likelihood each
    model gives the same text. With log p = min(L_T, 0) / tau - eps and log q = min(L_S, 0) / tau - eps,
    the chunk's loss is the binarised KL
        p log(p / q) + (1 - p) log((1 - p) / (1 - q))       (`binary_kl`, in log space).
    A chunk counts when both sides have positions in it, no teacher position is NaN and no student
    label is -100; the others are skipped (not in the count).

    Follows the reference implementation (tokenkit, `compute_alm_loss` with its defaults
    alm_diff_fn="binary_ce", binarization_temp=100, numerator/denominator "chunk_count"): the
    temperature divides the chunk log-likelihood (p = P_T(chunk)^(1/tau)), both log-likelihoods are
    clipped at 0 and shifted by -eps (keeps 1 - q > 0), one term per chunk, mean over chunks.
    Differences: binary KL instead of binary cross-entropy (they differ by the teacher's binary
    entropy, a constant: same gradient, but 0 when the student equals the teacher); no outcome-chunk
    debiasing ("space" chunk merging / appended space probability) and no hidden-state term.
    """
    check_head(hidden, weight, bias)
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, S, H], got {tuple(hidden.shape)}")
    bsz, s_len, _ = hidden.shape
    for name, t in (("labels", labels), ("student_chunk", student_chunk)):
        if tuple(t.shape) != (bsz, s_len):
            raise ValueError(f"{name} must have shape {(bsz, s_len)}, got {tuple(t.shape)}")
    if teacher_chunk.dim() != 2 or teacher_chunk.shape[0] != bsz or teacher_next_logp.shape != teacher_chunk.shape:
        raise ValueError(
            f"teacher_chunk and teacher_next_logp must both be [{bsz}, T], got "
            f"{tuple(teacher_chunk.shape)} and {tuple(teacher_next_logp.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"ALM tau must be > 0, got {tau}")
    dev = hidden.device
    labels = labels.to(device=dev, dtype=torch.int64)
    s_chunk = student_chunk.to(device=dev, dtype=torch.int64)
    t_chunk = teacher_chunk.to(device=dev, dtype=torch.int64)
    n_buckets = max(s_len, t_chunk.shape[1])  # pairs ascend on both sides: chunk c <= its positions
    lp = token_logprobs(hidden.reshape(bsz * s_len, -1), weight, bias, labels.reshape(-1), rows)
    acc = lp.dtype
    s_in = (s_chunk >= 0).to(acc)
    s_bad = ((labels == IGNORE_INDEX) & (s_chunk >= 0)).to(acc)
    l_s, n_s, bad_s = _chunk_sums(s_chunk, n_buckets, lp.reshape(bsz, s_len), s_in, s_bad)
    nxt = teacher_next_logp.to(device=dev, dtype=acc)
    nan = torch.isnan(nxt)
    t_in = (t_chunk >= 0).to(acc)
    l_t, n_t, bad_t = _chunk_sums(t_chunk, n_buckets, torch.where(nan, 0.0, nxt), t_in, (nan & (t_chunk >= 0)).to(acc))
    valid = ((n_s > 0) & (n_t > 0) & (bad_s == 0) & (bad_t == 0))[:-1]
    log_p = torch.where(valid, l_t[:-1].clamp(max=0.0) / tau - eps, -1.0)
    log_q = torch.where(valid, l_s[:-1].clamp(max=0.0) / tau - eps, -1.0)
    per_chunk = torch.where(valid, binary_kl(log_p, log_q), 0.0)
    return CrossLoss(per_chunk.sum(), valid.sum())
