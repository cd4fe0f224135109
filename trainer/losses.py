"""Losses for pre-training distillation (pure torch).

Shapes: B sequences, T positions, V vocabulary, K kept teacher entries per position (dense,
padded; see `schemas.decode_dense`).

Alignment: everything here is *already aligned*: ``logits[b, t]`` is scored against
``labels[b, t]`` and against the teacher distribution at ``[b, t]``. No shifting happens in this
module (the collator shifts labels / teacher signal by one so that position t predicts token t+1).

Normalisation (all losses): **per token over the whole batch**: the sum of per-position losses
divided by the number of contributing positions in the batch (not a per-sequence mean averaged
over sequences). A batch with no contributing position gives a loss of exactly 0 (still attached
to the graph, zero gradient).

Temperature: the student's logits are divided by tau before its softmax over the full vocabulary,
the teacher's stored log-probs are divided by tau before a softmax over the kept set. Since the
stored log-probs differ from the teacher's raw logits by a per-position constant, that equals the
paper's F(z) = softmax(Truncate(z) / tau). The KD loss is *not* multiplied by tau^2 unless
``tau_squared=True`` (the paper does not say; the default keeps the loss equal to the literal
divergence, so its value is comparable across tau; with tau_squared the gradient magnitude is
roughly tau-independent, as in Hinton et al.).

Memory: the student side is computed in chunks of rows (positions) by a custom autograd function
that, during the forward pass, evaluates each chunk's loss with autograd on a float32 (float64
for float64 inputs) copy of that chunk only, and writes the chunk's gradient into one
``[B, T, V]`` gradient buffer. Peak extra memory is therefore one ``[B, T, V]`` tensor (the
gradient that backward needs anyway) plus O(chunk_size * V) scratch; no ``[B, T, V]``
log-softmax is ever kept. Only rows that contribute are computed (padding costs nothing).
Gradients flow to ``student_logits`` only; teacher tensors are data (live-teacher mode computes
them under ``torch.no_grad``). Double backward is not supported.
Cost: forward_kl/soft_ce need one full-vocabulary log-softmax per row at tau (shared with the LM
term when tau == 1); reverse_kl/mse without tail touch only the K kept logits; tail=True adds
a masked logsumexp over the vocabulary (the slowest option).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

__all__ = ["KD_KINDS", "KDResult", "DistillResult", "lm_loss", "kd_loss", "distill_loss", "total_loss"]

KD_KINDS = ("forward_kl", "reverse_kl", "soft_ce", "mse")
IGNORE_INDEX = -100
# Floor for log-masses that may be exactly zero where a log is needed (reverse KL against a
# teacher tail bucket of zero mass): finite so the loss stays finite; the penalty is large.
_LOG_FLOOR = -80.0


class KDResult(NamedTuple):
    """loss: scalar KD loss (graph-attached). agreement: scalar (no grad), fraction of valid
    positions where the student's argmax over the full vocabulary equals the teacher's top-1 id
    (0 when there is no valid position). num_positions: int64 scalar, the number of valid
    positions the mean was taken over (for cross-rank weighting)."""

    loss: torch.Tensor
    agreement: torch.Tensor
    num_positions: torch.Tensor


class DistillResult(NamedTuple):
    """loss: (1 - alpha) * lm + alpha * kd (graph-attached); lm, kd, agreement: detached scalars
    for logging; num_tokens / num_positions: LM tokens and KD positions counted."""

    loss: torch.Tensor
    lm: torch.Tensor
    kd: torch.Tensor
    agreement: torch.Tensor
    num_tokens: torch.Tensor
    num_positions: torch.Tensor


def total_loss(lm: torch.Tensor, kd: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) * lm + alpha * kd; alpha weights the KD term (paper Eq. 1)."""
    return (1.0 - alpha) * lm + alpha * kd


# --------------------------------------------------------------------------------------------
# per-chunk math (x: [c, V] student logits of the chunk's rows, in the compute dtype)


def _kd_rows(
    x: torch.Tensor,
    ids: torch.Tensor,
    logp: torch.Tensor,
    mask: torch.Tensor,
    log_tail: torch.Tensor,
    kind: str,
    tau: float,
    tail: bool,
    logq_full: torch.Tensor | None = None,
) -> torch.Tensor:
    """[c] per-position KD loss; every row has at least one kept entry.

    logq_full: log_softmax(x / tau) over the full vocabulary when the caller already has it.
    """
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    need_full = tail or kind in ("forward_kl", "soft_ce")
    if need_full:
        if logq_full is None:
            logq_full = torch.log_softmax(x / tau if tau != 1.0 else x, dim=-1)
        logq = logq_full.gather(-1, ids)  # student full-vocab log-probs at kept ids (NOT renormalised)
    else:
        sk = x.gather(-1, ids)  # only the kept ids are needed: no pass over the vocabulary
        sk = sk / tau if tau != 1.0 else sk

    t_logits = torch.where(mask, logp / tau, neg_inf)
    log_f = torch.where(mask, torch.log_softmax(t_logits, dim=-1), zero)  # teacher F over kept
    f = torch.where(mask, log_f.exp(), zero)

    if not tail:
        if kind == "forward_kl":
            return torch.where(mask, f * (log_f - logq), zero).sum(-1)
        if kind == "soft_ce":
            return -torch.where(mask, f * logq, zero).sum(-1)
        # reverse_kl / mse: the student renormalised over the kept ids
        log_qr = torch.where(mask, torch.log_softmax(torch.where(mask, sk, neg_inf), dim=-1), zero)
        qr = torch.where(mask, log_qr.exp(), zero)
        if kind == "reverse_kl":
            return torch.where(mask, qr * (log_qr - log_f), zero).sum(-1)
        return torch.where(mask, (qr - f) ** 2, zero).sum(-1)  # mse

    # ---- tail-aware: K kept buckets + one bucket for everything else -------------------------
    # Teacher: kept entries F * (1 - t), bucket t = exp(log_tail) as stored (tau not applied).
    lt = torch.clamp(log_tail.to(x.dtype), max=0.0)
    t = lt.exp()
    log_keep = torch.log(-torch.expm1(lt)).clamp_min(_LOG_FLOOR)  # log(1 - t), stable
    log_p = torch.where(mask, log_f + log_keep[:, None], zero)
    p = torch.where(mask, log_p.exp(), zero)
    # Student: its mass outside the kept ids, as an exact logsumexp over its non-kept log-probs.
    rows, cols = mask.nonzero(as_tuple=True)
    kept = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    kept[rows, ids[rows, cols]] = True
    all_kept = kept.all(-1)  # no vocabulary left outside the kept set (tiny vocabularies only)
    q_out = torch.where(all_kept[:, None], zero, logq_full.masked_fill(kept, float("-inf")))
    log_qo = torch.where(all_kept, neg_inf, torch.logsumexp(q_out, dim=-1))
    log_qo_safe = torch.where(all_kept, zero, log_qo)
    qo = torch.where(all_kept, zero, log_qo_safe.exp())
    has_t = t > 0
    lt_safe = torch.where(has_t, lt, zero)

    if kind == "forward_kl":
        kept_term = torch.where(mask, p * (log_p - logq), zero).sum(-1)
        return kept_term + torch.where(has_t & ~all_kept, t * (lt_safe - log_qo_safe), zero)
    if kind == "soft_ce":
        kept_term = -torch.where(mask, p * logq, zero).sum(-1)
        return kept_term - torch.where(has_t & ~all_kept, t * log_qo_safe, zero)
    q = torch.where(mask, logq.exp(), zero)
    if kind == "reverse_kl":
        kept_term = torch.where(mask, q * (logq - log_p), zero).sum(-1)
        lt_floor = torch.where(has_t, lt, torch.full_like(lt, _LOG_FLOOR)).clamp_min(_LOG_FLOOR)
        return kept_term + torch.where(all_kept, zero, qo * (log_qo_safe - lt_floor))
    return torch.where(mask, (q - p) ** 2, zero).sum(-1) + (qo - t) ** 2  # mse


# --------------------------------------------------------------------------------------------
# chunked runner


@dataclass
class _Plan:
    v: int
    n_rows: int  # B * T flat rows, processed as contiguous ranges of `chunk` rows
    chunk: int
    # per-chunk: (x [c, V], start, end) -> (lm_sum, kd_sum, agree_count) in x.dtype, or None
    # when no row of the range contributes
    fn: Callable[[torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]
    w_lm: float
    w_kd: float


class _Chunked(torch.autograd.Function):
    """Runs `plan.fn` over contiguous chunks of rows; returns (objective, lm_sum, kd_sum, agree_count).

    objective = w_lm * lm_sum + w_kd * kd_sum carries the gradient; the gradient buffer is
    filled during forward, chunk by chunk (each chunk's math is differentiated by autograd on a
    leaf view of that chunk only).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, plan: _Plan):  # type: ignore[override]
        cdtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        flat = logits.detach().reshape(-1, plan.v)
        need = bool(ctx.needs_input_grad[0])
        grad = torch.empty_like(flat) if need else None
        acc = torch.zeros(3, dtype=torch.float64, device=logits.device)
        objective = torch.zeros((), dtype=torch.float64, device=logits.device)
        for start in range(0, plan.n_rows, plan.chunk):
            end = min(start + plan.chunk, plan.n_rows)
            x = flat[start:end].detach()
            if x.dtype != cdtype:
                x = x.to(cdtype)
            with torch.enable_grad() if need else torch.no_grad():
                x.requires_grad_(need)
                out = plan.fn(x, start, end)
                if out is not None:
                    lm_s, kd_s, agree = out
                    obj = plan.w_lm * lm_s + plan.w_kd * kd_s
            if out is None:
                if need:
                    grad[start:end].zero_()
                continue
            if need:
                (g,) = torch.autograd.grad(obj, x)
                grad[start:end].copy_(g)
            acc += torch.stack([lm_s.detach(), kd_s.detach(), agree.detach()]).to(torch.float64)
            objective += obj.detach().to(torch.float64)
        ctx.grad_buf = grad
        ctx.shape = logits.shape
        outs = (objective.to(cdtype), acc[0].to(cdtype).clone(), acc[1].to(cdtype).clone(), acc[2].to(cdtype).clone())
        ctx.mark_non_differentiable(*outs[1:])
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_obj, *_unused):  # type: ignore[override]
        grad = ctx.grad_buf
        if grad is None:
            return None, None
        # Out of place: the graph may be retained (gradcheck, retain_graph=True), so the buffer
        # must stay intact; the product is the single [B, T, V] gradient handed back.
        return (grad * g_obj.to(grad.dtype)).reshape(ctx.shape), None


def _check_logits(logits: torch.Tensor) -> int:
    if logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"student_logits must be floating point, got {logits.dtype}")
    return int(logits.shape[-1])


def _chunk(chunk_size: int | None, n: int) -> int:
    if chunk_size is None:
        return max(n, 1)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def _check_kd_args(kind: str, tau: float) -> None:
    if kind not in KD_KINDS:
        raise ValueError(f"kind must be one of {KD_KINDS}, got {kind!r}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (tau > 0) or math.isinf(tau):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")


def _teacher_inputs(student_logits, teacher_ids, teacher_logp, teacher_mask, teacher_log_tail, position_mask):
    b, t, _ = student_logits.shape
    k = teacher_ids.shape[-1]
    for name, tens, shape in (
        ("teacher_ids", teacher_ids, (b, t, k)),
        ("teacher_logp", teacher_logp, (b, t, k)),
        ("teacher_mask", teacher_mask, (b, t, k)),
        ("teacher_log_tail", teacher_log_tail, (b, t)),
    ):
        if tuple(tens.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tens.shape)}")
    mask = teacher_mask.to(torch.bool).reshape(-1, k)
    valid = mask.any(-1)
    if position_mask is not None:
        if tuple(position_mask.shape) != (b, t):
            raise ValueError(f"position_mask must have shape {(b, t)}, got {tuple(position_mask.shape)}")
        valid = valid & position_mask.to(torch.bool).reshape(-1)
    ids = teacher_ids.to(torch.int64).reshape(-1, k)
    logp = teacher_logp.reshape(-1, k)
    tail = teacher_log_tail.reshape(-1)
    # teacher top-1 id per position (ids are stored sorted by id, not by probability)
    top1 = ids.gather(-1, torch.where(mask, logp, float("-inf")).argmax(-1, keepdim=True)).squeeze(-1)
    return ids, logp, mask, tail, valid, top1


def _distill(
    student_logits, labels, teacher, *, alpha, kind, tau, tail, tau_squared, chunk_size
):
    """Shared implementation: LM rows where labels != -100, KD rows where valid."""
    v = _check_logits(student_logits)
    dev = student_logits.device
    n_flat = student_logits.shape[0] * student_logits.shape[1]
    lm_rows = torch.zeros(n_flat, dtype=torch.bool, device=dev)
    if labels is not None:
        if tuple(labels.shape) != tuple(student_logits.shape[:2]):
            raise ValueError(f"labels must have shape {tuple(student_logits.shape[:2])}, got {tuple(labels.shape)}")
        flat_labels = labels.reshape(-1).to(torch.int64)
        lm_rows = flat_labels != IGNORE_INDEX
    kd_rows = torch.zeros(n_flat, dtype=torch.bool, device=dev)
    if teacher is not None:
        ids, logp, mask, ltail, kd_rows, top1 = teacher
    n_lm = int(lm_rows.sum())
    n_kd = int(kd_rows.sum())
    scale = tau * tau if tau_squared else 1.0
    w_lm = (1.0 - alpha) / n_lm if n_lm else 0.0
    w_kd = alpha * scale / n_kd if n_kd else 0.0

    def fn(x, start, end):
        lm_w = lm_rows[start:end]
        kd_w = kd_rows[start:end]
        has_lm = bool(n_lm) and bool(lm_w.any())
        has_kd = bool(n_kd) and bool(kd_w.any())
        if not (has_lm or has_kd):
            return None
        zero = x.new_zeros(())
        lm_s, kd_s, agree = zero, zero, zero
        logq1 = None
        if has_lm:
            logq1 = torch.log_softmax(x, dim=-1)
            lab = flat_labels[start:end].clamp_min(0)[:, None]
            lm_s = -torch.where(lm_w, logq1.gather(-1, lab).squeeze(-1), zero).sum()
        if has_kd:
            # Rows that do not contribute get a harmless stand-in teacher (one entry, finite
            # values) so every intermediate stays finite, then weight 0 (zero gradient).
            real = mask[start:end] & kd_w[:, None]
            stand_in = torch.zeros_like(real)
            stand_in[:, 0] = True
            m = torch.where(kd_w[:, None], real, stand_in)
            lp = torch.where(real, logp[start:end].to(x.dtype), zero)
            lt = torch.where(kd_w, ltail[start:end].to(x.dtype), float("-inf"))
            per = _kd_rows(x, ids[start:end], lp, m, lt, kind, tau, tail,
                           logq_full=logq1 if tau == 1.0 else None)
            kd_s = torch.where(kd_w, per, zero).sum()
            with torch.no_grad():
                agree = ((x.argmax(-1) == top1[start:end]) & kd_w).sum().to(x.dtype)
        return lm_s, kd_s, agree

    plan = _Plan(v=v, n_rows=n_flat, chunk=_chunk(chunk_size, n_flat), fn=fn, w_lm=w_lm, w_kd=w_kd)
    obj, lm_s, kd_s, agree = _Chunked.apply(student_logits, plan)
    lm = lm_s / n_lm if n_lm else lm_s
    kd = kd_s * scale / n_kd if n_kd else kd_s
    agreement = agree / n_kd if n_kd else agree
    return obj, lm, kd, agreement, torch.tensor(n_lm, device=dev), torch.tensor(n_kd, device=dev)


# --------------------------------------------------------------------------------------------
# public API


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Next-token cross-entropy: mean over non-ignored tokens of -log softmax(logits[b,t])[labels[b,t]].

    labels are aligned with logits (no shift here); -100 is ignored. Normalisation: per token
    over the whole batch (sum / number of non-ignored labels); 0 when every label is ignored.
    No temperature. Same chunked, memory-bounded evaluation as `kd_loss`.
    """
    obj, *_ = _distill(logits, labels, None, alpha=0.0, kind="soft_ce", tau=1.0, tail=False,
                       tau_squared=False, chunk_size=chunk_size)
    return obj


def kd_loss(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logp: torch.Tensor,
    teacher_mask: torch.Tensor,
    teacher_log_tail: torch.Tensor,
    position_mask: torch.Tensor | None,
    *,
    kind: str,
    tau: float,
    tail: bool = False,
    tau_squared: bool = False,
    chunk_size: int | None = None,
) -> KDResult:
    """Distillation loss against the truncated teacher, per position then averaged.

    Notation at one position: s = student_logits / tau over the full vocabulary V;
    log q_i = log_softmax(s)_i (full-vocabulary student log-prob, gathered at the kept ids i);
    log q~_i = log_softmax(s restricted to the kept ids)_i (student renormalised over the kept set);
    F = softmax(teacher_logp / tau) over the kept entries (mask) -- the paper's
    F(z) = softmax(Truncate(z) / tau), since stored log-probs differ from logits by a constant.

    Without tail (``tail=False``), sums over the kept entries:
      forward_kl: sum_i F_i (log F_i - log q_i)   student NOT renormalised: mass it puts outside the
                  kept set lowers every q_i and is penalised (equals KL(F || q) over the full vocab
                  with F zero outside the kept set; always >= 0).
      soft_ce:    -sum_i F_i log q_i              (the paper's "NLL"; student NOT renormalised;
                  = forward_kl + H(F), same gradient).
      reverse_kl: sum_i q~_i (log q~_i - log F_i) student renormalised over the kept set.
      mse:        sum_i (q~_i - F_i)^2            on probabilities, student renormalised over the
                  kept set; a sum over the kept entries (squared L2 distance), not a mean over K.
    With tail (``tail=True``), one extra bucket ("everything not kept") on both sides:
      teacher: P_i = (1 - t) F_i on kept entries, bucket t = exp(teacher_log_tail) as stored
               (tau applies to the kept part only; the bucket's mass is not tempered);
      student: q_i (full vocabulary, as above) on kept ids, bucket q_o = 1 - sum_i q_i computed
               exactly as logsumexp of s over the non-kept ids minus logsumexp(s);
      then forward_kl = sum P (log P - log q), soft_ce = -sum P log q, reverse_kl = sum q (log q -
      log P), mse = sum (q - P)^2, over the K + 1 buckets (no renormalisation: the buckets
      partition the vocabulary). Terms with zero teacher mass contribute 0 to forward_kl/soft_ce;
      for reverse_kl a zero teacher bucket is floored at log-mass -80 (finite, large penalty).

    Normalisation: mean over *valid positions of the whole batch* (per token, not per sequence):
    valid = position_mask & (at least one kept entry). Scaled by tau**2 only when
    ``tau_squared=True`` (default False). Computed in float32 (float64 for float64 logits) in
    chunks of ``chunk_size`` valid positions (None: one chunk); results do not depend on it.
    Gradients flow to ``student_logits`` only.

    Returns KDResult(loss, agreement, num_positions).
    """
    _check_kd_args(kind, tau)
    _check_logits(student_logits)
    teacher = _teacher_inputs(student_logits, teacher_ids, teacher_logp, teacher_mask, teacher_log_tail, position_mask)
    obj, _lm, _kd, agreement, _n_lm, n_kd = _distill(
        student_logits, None, teacher, alpha=1.0, kind=kind, tau=float(tau), tail=bool(tail),
        tau_squared=bool(tau_squared), chunk_size=chunk_size,
    )
    return KDResult(obj, agreement, n_kd)


def distill_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logp: torch.Tensor,
    teacher_mask: torch.Tensor,
    teacher_log_tail: torch.Tensor,
    position_mask: torch.Tensor | None,
    *,
    alpha: float,
    kind: str,
    tau: float,
    tail: bool = False,
    tau_squared: bool = False,
    chunk_size: int | None = None,
) -> DistillResult:
    """(1 - alpha) * lm_loss + alpha * kd_loss in ONE chunked pass with ONE gradient buffer.

    Same definitions and normalisations as `lm_loss` and `kd_loss` (each term is its own
    per-token mean); use this in training when memory matters: the separate functions each keep
    a [B, T, V] gradient buffer until backward, this keeps one. When alpha == 0 the teacher is
    not evaluated at all (kd and agreement are reported as 0).
    """
    _check_kd_args(kind, tau)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    _check_logits(student_logits)
    teacher = None
    if alpha > 0:
        teacher = _teacher_inputs(student_logits, teacher_ids, teacher_logp, teacher_mask, teacher_log_tail, position_mask)
    obj, lm, kd, agreement, n_lm, n_kd = _distill(
        student_logits, labels, teacher, alpha=float(alpha), kind=kind, tau=float(tau), tail=bool(tail),
        tau_squared=bool(tau_squared), chunk_size=chunk_size,
    )
    return DistillResult(obj, lm, kd, agreement, n_lm, n_kd)
