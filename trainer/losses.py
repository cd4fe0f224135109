"""Losses for pre-training distillation (pure torch).

Shapes: B sequences, T positions, V vocabulary, K kept teacher entries per position (dense,
padded; see `schemas.decode_dense`). Internally the B * T positions are N flat rows.

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

How the value and gradient are computed in one pass without a [B, T, V] log-softmax: see
`trainer.fused_loss`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from trainer.fused_loss import BLOCK_ELEMS, IGNORE_INDEX, FusedLoss, Spec, evaluate, prepare_teacher, teacher_inputs

__all__ = ["KD_KINDS", "KDResult", "DistillResult", "lm_loss", "kd_loss", "distill_loss", "total_loss"]

KD_KINDS = ("forward_kl", "reverse_kl", "soft_ce", "mse")


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
# argument checks and the shared driver


def _check_logits(logits: torch.Tensor) -> int:
    if logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"student_logits must be floating point, got {logits.dtype}")
    return int(logits.shape[-1])


def _block_rows(chunk_size: int | None, n: int, v: int) -> int:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    cap = max(1, BLOCK_ELEMS // max(v, 1))
    return max(1, min(chunk_size or n, cap, n))


def _check_kd_args(kind: str, tau: float) -> None:
    if kind not in KD_KINDS:
        raise ValueError(f"kind must be one of {KD_KINDS}, got {kind!r}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (tau > 0) or math.isinf(tau):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")


def _distill(student_logits, labels, teacher, *, alpha, kind, tau, tail, tau_squared, chunk_size):
    """Shared implementation: LM rows where labels != -100, KD rows where the teacher is valid.

    Counts and weights stay on the device (no host synchronisation)."""
    v = _check_logits(student_logits)
    dev = student_logits.device
    cdtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    n_flat = student_logits.shape[0] * student_logits.shape[1]
    flat_labels = None
    n_lm = torch.zeros((), dtype=torch.int64, device=dev)
    if labels is not None:
        if tuple(labels.shape) != tuple(student_logits.shape[:2]):
            raise ValueError(f"labels must have shape {tuple(student_logits.shape[:2])}, got {tuple(labels.shape)}")
        flat_labels = labels.reshape(-1).to(device=dev, dtype=torch.int64)
        n_lm = (flat_labels != IGNORE_INDEX).sum()
    T = None
    n_kd = torch.zeros((), dtype=torch.int64, device=dev)
    if teacher is not None:
        T = prepare_teacher(teacher, tau, tail, v, cdtype)
        n_kd = T.valid.sum()
    scale = tau * tau if tau_squared else 1.0
    w_lm = (1.0 - alpha) / n_lm.clamp_min(1).to(cdtype)
    w_kd = alpha * scale / n_kd.clamp_min(1).to(cdtype)
    spec = Spec(flat_labels, T, kind, tau, w_lm, w_kd, _block_rows(chunk_size, n_flat, v))
    if student_logits.requires_grad and torch.is_grad_enabled():
        obj, lm_s, kd_s, agree = FusedLoss.apply(student_logits, spec)
    else:
        (obj, lm_s, kd_s, agree), _ = evaluate(student_logits, spec, need_grad=False)
    lm = lm_s / n_lm.clamp_min(1).to(cdtype)
    kd = kd_s * scale / n_kd.clamp_min(1).to(cdtype)
    agreement = agree / n_kd.clamp_min(1).to(cdtype)
    return obj, lm, kd, agreement, n_lm, n_kd


# --------------------------------------------------------------------------------------------
# public API


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Next-token cross-entropy: mean over non-ignored tokens of -log softmax(logits[b,t])[labels[b,t]].

    labels are aligned with logits (no shift here); -100 is ignored. Normalisation: per token
    over the whole batch (sum / number of non-ignored labels); 0 when every label is ignored.
    No temperature. Gradient (q - onehot(label)) / n, computed in blocks of rows like `kd_loss`.
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
                  with F zero outside the kept set; always >= 0). d/ds = q - F (F scattered at the
                  kept ids, q over the full vocabulary).
      soft_ce:    -sum_i F_i log q_i              (the paper's "NLL"; student NOT renormalised;
                  = forward_kl + H(F), same gradient).
      reverse_kl: sum_i q~_i (log q~_i - log F_i) student renormalised over the kept set;
                  d/ds_i = q~_i (log q~_i - log F_i - loss) at the kept ids, 0 elsewhere.
      mse:        sum_i (q~_i - F_i)^2            on probabilities, student renormalised over the
                  kept set; a sum over the kept entries (squared L2 distance), not a mean over K;
                  d/ds_i = h_i - q~_i sum_j h_j with h_i = 2 q~_i (q~_i - F_i), at the kept ids.
    With tail (``tail=True``), one extra bucket ("everything not kept") on both sides:
      teacher: P_i = (1 - t) F_i on kept entries, bucket t = exp(teacher_log_tail) as stored
               (tau applies to the kept part only; the bucket's mass is not tempered);
      student: q_i (full vocabulary, as above) on kept ids, bucket q_o = 1 - sum_i q_i computed
               exactly as the sum of the student's probabilities over the non-kept ids;
      then forward_kl = sum P (log P - log q), soft_ce = -sum P log q, reverse_kl = sum q (log q -
      log P), mse = sum (q - P)^2, over the K + 1 buckets (no renormalisation: the buckets
      partition the vocabulary). Terms with zero teacher mass contribute 0 to forward_kl/soft_ce;
      for reverse_kl a zero teacher bucket is floored at log-mass -80 (finite, large penalty), and
      for forward_kl / soft_ce the student's bucket log-mass is floored at -80 (where it would
      underflow; the bucket term then has no gradient). When the kept set is the whole
      vocabulary there is no student bucket and forward_kl / soft_ce / reverse_kl drop its term.
      Gradients: see the module docstring (one coefficient times q plus kept-id corrections).

    Normalisation: mean over *valid positions of the whole batch* (per token, not per sequence):
    valid = position_mask & (at least one kept entry). Scaled by tau**2 only when
    ``tau_squared=True`` (default False). Computed in float32 (float64 for float64 logits) in
    blocks of at most ``chunk_size`` positions (None: as large as the 32 MB block cap allows);
    results do not depend on it. Gradients flow to ``student_logits`` only. Agreement counts a
    position when the student's logit at the teacher's top-1 id equals its maximum (ties agree).

    Returns KDResult(loss, agreement, num_positions).
    """
    _check_kd_args(kind, tau)
    _check_logits(student_logits)
    teacher = teacher_inputs(student_logits, teacher_ids, teacher_logp, teacher_mask, teacher_log_tail, position_mask)
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
    """(1 - alpha) * lm_loss + alpha * kd_loss in ONE blocked pass with ONE gradient buffer.

    Same definitions and normalisations as `lm_loss` and `kd_loss` (each term is its own
    per-token mean); use this in training when memory matters: the separate functions each keep
    a [B, T, V] gradient buffer until backward, this keeps one. The LM and KD terms share the
    student's softmax when tau == 1 (and its exponential when tau == 2 or 0.5). When alpha == 0
    the teacher is not evaluated at all (kd and agreement are reported as 0).
    """
    _check_kd_args(kind, tau)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    _check_logits(student_logits)
    teacher = None
    if alpha > 0:
        teacher = teacher_inputs(student_logits, teacher_ids, teacher_logp, teacher_mask, teacher_log_tail, position_mask)
    obj, lm, kd, agreement, n_lm, n_kd = _distill(
        student_logits, labels, teacher, alpha=float(alpha), kind=kind, tau=float(tau), tail=bool(tail),
        tau_squared=bool(tau_squared), chunk_size=chunk_size,
    )
    return DistillResult(obj, lm, kd, agreement, n_lm, n_kd)
