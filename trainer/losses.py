"""Losses for pre-training distillation (pure torch).

Shapes: B sequences, T positions, V vocabulary, K kept teacher entries per position (dense,
padded: a `trainer.teacher_batch.TeacherBatch`). Internally the B * T positions are N flat rows.

Signature: ``distill_loss(logits, labels, teacher, spec, alpha=...)``, ``kd_loss(logits, teacher,
spec)``, ``lm_loss(logits, labels)``; ``spec`` is a `LossSpec` (the recipe, checked once), the
teacher a `TeacherBatch` (from the collator or the live teacher). Each call runs three stages:
prepare (checks, flat rows, the teacher side, the objective's weights), evaluate
(`trainer.fused_loss`), finish (each term's per-token mean).

Alignment: everything here is *already aligned*: ``logits[b, t]`` is scored against
``labels[b, t]`` and against the teacher distribution at ``[b, t]``. No shifting happens in this
module (the collator shifts labels / teacher signal by one so that position t predicts token t+1).

Normalisation (all losses): **per token over the whole batch**: the sum of per-position losses
divided by the number of contributing positions in the batch (not a per-sequence mean averaged
over sequences). A batch with no contributing position gives a loss of exactly 0 (still attached
to the graph, zero gradient). With several processes, pass the global counts (`count_positions`,
all-reduced, divided by the world size) as ``lm_denominator`` / ``kd_denominator``: data-parallel
gradient averaging then yields the gradient of the GLOBAL per-token mean.

Temperature: the student's logits are divided by tau before its softmax (over the full vocabulary,
or over the kept set, or -- in the split -- only for the within-set term; see `kd_loss`), the
teacher's stored log-probs are divided by tau before a softmax over the kept set. Since the
stored log-probs differ from the teacher's raw logits by a per-position constant, that equals the
paper's F(z) = softmax(Truncate(z) / tau). The KD loss is *not* multiplied by tau^2 unless
``LossSpec.tau_squared`` (the paper does not say; the default keeps the loss equal to the literal
divergence, so its value is comparable across tau; with tau_squared the gradient magnitude is
roughly tau-independent, as in Hinton et al.).

How the value and gradient are computed in one pass without a [B, T, V] log-softmax: see
`trainer.fused_loss`. ``distill_loss_from_hidden(hidden, weight, bias, ...)`` computes the same from
the student's last hidden state and output projection without the logits at all (`trainer.fused_head`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from trainer.fused_head import FusedHeadLoss, evaluate_head
from trainer.fused_loss import BLOCK_ELEMS, IGNORE_INDEX, FusedInputs, FusedLoss, evaluate
from trainer.kd_rows import SUPPORTS, prepare_teacher
from trainer.loss_spec import KD_KINDS, LossSpec
from trainer.teacher_batch import TeacherBatch

__all__ = [
    "KD_KINDS",
    "SUPPORTS",
    "LossSpec",
    "TeacherBatch",
    "KDResult",
    "DistillResult",
    "lm_loss",
    "kd_loss",
    "distill_loss",
    "distill_loss_from_hidden",
    "total_loss",
    "count_positions",
]

LM_ONLY = LossSpec(kind="soft_ce")


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


def count_positions(labels: torch.Tensor | None, teacher: TeacherBatch | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(LM tokens, KD positions) the losses here average over: labels != -100, and the teacher's
    valid positions (`TeacherBatch.valid_positions`). int64 scalars on the inputs' device."""
    n_lm = (labels != IGNORE_INDEX).sum() if labels is not None else torch.zeros((), dtype=torch.int64)
    n_kd = torch.zeros((), dtype=torch.int64, device=n_lm.device)
    if teacher is not None:
        n_kd = teacher.valid_positions().sum()
    return n_lm, n_kd


# --------------------------------------------------------------------------------------------
# one call in three stages: prepare (checks, flat rows, teacher side, weights), evaluate
# (`trainer.fused_loss`), finish (the per-token means)


def _check_logits(logits: torch.Tensor) -> int:
    if logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"student_logits must be floating point, got {logits.dtype}")
    return int(logits.shape[-1])


def _block_rows(chunk_size: int | None, n: int, v: int) -> int:
    cap = max(1, BLOCK_ELEMS // max(v, 1))
    return max(1, min(chunk_size or n, cap, n))


def _denominator(given, count: torch.Tensor, dtype) -> torch.Tensor:
    if given is None:
        return count.clamp_min(1).to(dtype)
    d = torch.as_tensor(given, dtype=dtype, device=count.device)
    return torch.where(d > 0, d, torch.ones_like(d))


class _Prepared(NamedTuple):
    inputs: FusedInputs
    n_lm: torch.Tensor
    n_kd: torch.Tensor
    d_lm: torch.Tensor
    d_kd: torch.Tensor
    scale: float


def _prepare(
    logits,
    labels,
    teacher: TeacherBatch | None,
    spec: LossSpec,
    alpha: float,
    lm_denominator,
    kd_denominator,
    vocab: int | None = None,
) -> _Prepared:
    """LM rows where labels != -100, KD rows where the teacher is valid; the objective's weights.
    Counts and weights stay on the device (no host synchronisation). ``vocab``: the fused head's
    vocabulary, ``logits`` then being the hidden states [B, T, H] (only their rows are read here)."""
    v = _check_logits(logits) if vocab is None else vocab
    dev = logits.device
    cdtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    n_flat = logits.shape[0] * logits.shape[1]
    flat_labels = None
    n_lm = torch.zeros((), dtype=torch.int64, device=dev)
    if labels is not None:
        if tuple(labels.shape) != tuple(logits.shape[:2]):
            raise ValueError(f"labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
        flat_labels = labels.reshape(-1).to(device=dev, dtype=torch.int64)
        n_lm = (flat_labels != IGNORE_INDEX).sum()
    prepared = None
    n_kd = torch.zeros((), dtype=torch.int64, device=dev)
    if teacher is not None:
        prepared = prepare_teacher(teacher, spec.tau, spec.tail or spec.support == "split", v, cdtype, beta=spec.beta)
        n_kd = prepared.valid.sum()
    scale = spec.tau * spec.tau if spec.tau_squared else 1.0
    d_lm = _denominator(lm_denominator, n_lm, cdtype)
    d_kd = _denominator(kd_denominator, n_kd, cdtype)
    inputs = FusedInputs(
        flat_labels,
        prepared,
        spec.row_kind,
        spec.support,
        spec.tau,
        (1.0 - alpha) / d_lm,
        alpha * scale / d_kd,
        _block_rows(spec.chunk_size, n_flat, v),
    )
    return _Prepared(inputs, n_lm, n_kd, d_lm, d_kd, scale)


def _distill(
    logits, labels, teacher, spec: LossSpec, alpha: float, lm_denominator=None, kd_denominator=None
) -> DistillResult:
    p = _prepare(logits, labels, teacher, spec, alpha, lm_denominator, kd_denominator)
    if logits.requires_grad and torch.is_grad_enabled():
        obj, lm_s, kd_s, agree = FusedLoss.apply(logits, p.inputs)
    else:
        (obj, lm_s, kd_s, agree), _ = evaluate(logits, p.inputs, need_grad=False)
    lm = lm_s / p.d_lm
    kd = kd_s * p.scale / p.d_kd
    agreement = agree / p.n_kd.clamp_min(1).to(p.d_kd.dtype)
    return DistillResult(obj, lm, kd, agreement, p.n_lm, p.n_kd)


# --------------------------------------------------------------------------------------------
# public API


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Next-token cross-entropy: mean over non-ignored tokens of -log softmax(logits[b,t])[labels[b,t]].

    labels are aligned with logits (no shift here); -100 is ignored. Normalisation: per token
    over the whole batch (sum / number of non-ignored labels); 0 when every label is ignored.
    No temperature. Gradient (q - onehot(label)) / n, computed in blocks of rows like `kd_loss`.
    """
    spec = LM_ONLY if chunk_size is None else LossSpec(kind="soft_ce", chunk_size=chunk_size)
    return _distill(logits, labels, None, spec, alpha=0.0).loss


def kd_loss(
    student_logits: torch.Tensor,
    teacher: TeacherBatch,
    spec: LossSpec,
    *,
    kd_denominator: torch.Tensor | float | None = None,
) -> KDResult:
    """Distillation loss against the truncated teacher, per position then averaged.

    Notation at one position: x = student logits, s = x / tau; q = softmax(s) over the full
    vocabulary V (log q_i gathered at the kept ids i); q~ = softmax(s) restricted to the kept ids
    (the student renormalised over the kept set); F = softmax(teacher_logp / tau) over the kept
    entries -- the paper's F(z) = softmax(Truncate(z) / tau), since stored log-probs differ from
    logits by a constant; t = exp(teacher.log_tail), the mass truncation dropped (never tempered).
    The recipe (kind, support, tau, tail, tau_squared, chunk_size, beta) is ``spec`` (`LossSpec`).

    kind="jsd" is the generalised Jensen-Shannon divergence of GKD (Agarwal et al., Eq. 1), with
    TRL's (`GKDTrainer.generalized_jsd_loss`) and Axolotl's (`kd_beta`) convention: teacher P,
    student q, mixture M = beta P + (1 - beta) q (beta weighs the TEACHER in the mixture),
    JSD_beta = beta KL(P || M) + (1 - beta) KL(q || M); beta = 0 is forward_kl and beta = 1 is
    reverse_kl exactly (the same code, in every support; the mixture form itself tends to 0 at both
    ends, so the loss jumps there, as in TRL and Axolotl); 0.5 is the symmetric JSD (<= log 2). It
    needs no floors: a zero teacher or student mass keeps M > 0 elsewhere. Tau and the per-token
    mean as for every kind (both sides tempered; not multiplied by tau^2 unless tau_squared).

    ``spec.support`` says what the student side is (the paper leaves it open):

    support="full" (default; the only one with ``spec.tail``). Without tail, sums over the kept entries:
      forward_kl: sum_i F_i (log F_i - log q_i)   = KL(F || q) over the full vocabulary with F zero
                  outside the kept set: the student's out-of-set mass is pushed towards zero
                  (gradient (alpha / tau) q_out on it). d/ds = q - F (F scattered at the kept ids).
      soft_ce:    -sum_i F_i log q_i              (the paper's "NLL"; = forward_kl + H(F), same gradient).
      reverse_kl, mse: a full-vocabulary form is infinite / meaningless against a zero teacher,
                  so these use q~ exactly as support="kept" does.
      jsd:        JSD_beta(F || q) over the full vocabulary, F zero outside the kept set (finite: there
                  M = (1 - beta) q); the out-of-set ids add -(1 - beta) log(1 - beta) q_out, so their
                  mass is pushed towards zero, like forward_kl. (beta = 1: reverse_kl, i.e. over q~.)
      With ``spec.tail``, one extra bucket ("everything not kept") on both sides:
        teacher P_i = (1 - t) F_i, bucket t; student q_i (full vocabulary, tempered) and bucket
        q_o = 1 - sum_i q_i, summed exactly over the non-kept ids; then forward_kl = sum P (log P -
        log q), soft_ce = -sum P log q, reverse_kl = sum q (log q - log P), mse = sum (q - P)^2 over
        the K + 1 buckets, and jsd = JSD_beta(P || q) over them. Zero teacher mass contributes 0 to
        forward_kl / soft_ce / jsd; for reverse_kl
        a zero teacher bucket is floored at log-mass -80; for forward_kl / soft_ce the student's
        bucket log-mass is floored at -80 (then no gradient). With the whole vocabulary kept the
        bucket term is dropped. Gradient: q (r_o - H) + scatter(h_i - q_i r_o), `trainer.fused_loss`.

    support="kept": the student renormalised over the kept set, for every kind; the out-of-set mass
      gets no gradient from KD at all (only the LM term shapes it).
      forward_kl: sum_i F_i (log F_i - log q~_i), d/ds_i = q~_i - F_i;  soft_ce: -sum_i F_i log q~_i;
      reverse_kl: sum_i q~_i (log q~_i - log F_i), d/ds_i = q~_i (log q~_i - log F_i - loss);
      mse:        sum_i (q~_i - F_i)^2 (a sum over the kept entries), d/ds_i = h_i - q~_i sum_j h_j,
                  h_i = 2 q~_i (q~_i - F_i). All gradients are at the kept ids only.
      jsd:        JSD_beta(F || q~), d/ds_i = h_i - q~_i sum_j h_j, h_i = (1 - beta) q~_i log(q~_i / M_i).

    support="split": the chain rule KL(p || q) = KL(in/out split) + (1 - t) KL(within the kept set)
      + t KL(within the tail); the last is unknowable from a truncated teacher and dropped. The
      split term is at tau = 1 (Q = sum_i softmax(x)_i, the untempered student's kept mass,
      Q_o = 1 - Q summed exactly over the other ids); the within term is tempered on both sides:
      forward_kl: (1 - t) log((1 - t) / Q) + t log(t / Q_o) + (1 - t) KL(F || q~)
      soft_ce:    -(1 - t) log Q - t log Q_o + (1 - t) H(F, q~)          (same gradient)
      reverse_kl: Q log(Q / (1 - t)) + Q_o log(Q_o / t) + Q KL(q~ || F)  (log t floored at -80)
      mse:        (Q - (1 - t))^2 + (Q_o - t)^2 + (1 - t) sum_i (q~_i - F_i)^2   (by analogy)
      jsd:        JSD_beta((1 - t, t) || (Q, Q_o)) + beta (1 - t) KL(F || M~) + (1 - beta) Q KL(q~ || M~),
                  M~ = (beta (1 - t) F + (1 - beta) Q q~) / (beta (1 - t) + (1 - beta) Q): the chain rule
                  applied to both KLs of the JSD (the mixture splits the same way); at tau = 1 it is
                  the exact JSD over the K + 1 buckets
      Gradient (forward_kl / soft_ce): dL/dx = q1 (1 - t / Q_o) + scatter_i(t q1_i / Q_o
      - (1 - t) q1_i / Q + (1 - t)(q~_i - F_i) / tau), q1 = softmax(x); the others in
      `trainer.kd_rows.split_rows`. At tau = 1 forward_kl equals the tail-bucket forward_kl: the
      exact KL over the K + 1 buckets. The out-of-set mass is pulled towards the teacher's t, not 0.

    Normalisation: mean over *valid positions of the whole batch* (per token, not per sequence):
    valid = teacher.position_mask & (at least one kept entry); ``kd_denominator`` replaces the count (the
    global count / world size with several processes). Scaled by tau**2 only when
    ``spec.tau_squared`` (default False; with it, the whole KD term, the split included, is scaled).
    Computed in float32 (float64 for float64 logits) in blocks of at most ``spec.chunk_size`` positions
    (None: as large as the 32 MB block cap allows); results do not depend on it. Gradients flow to
    ``student_logits`` only. Agreement counts a position when the student's logit at the teacher's
    top-1 id equals its maximum (ties agree).

    Returns KDResult(loss, agreement, num_positions).
    """
    _check_logits(student_logits)
    teacher.check_against(student_logits)
    res = _distill(student_logits, None, teacher, spec, alpha=1.0, kd_denominator=kd_denominator)
    return KDResult(res.loss, res.agreement, res.num_positions)


def distill_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: TeacherBatch | None,
    spec: LossSpec,
    *,
    alpha: float,
    lm_denominator: torch.Tensor | float | None = None,
    kd_denominator: torch.Tensor | float | None = None,
) -> DistillResult:
    """(1 - alpha) * lm_loss + alpha * kd_loss in ONE blocked pass with ONE gradient buffer.

    Same definitions and normalisations as `lm_loss` and `kd_loss` (each term is its own
    per-token mean; ``lm_denominator`` / ``kd_denominator`` replace this batch's counts, e.g. by
    global counts across processes); use this in training when memory matters: the separate
    functions each keep a [B, T, V] gradient buffer until backward, this keeps one. The LM and KD
    terms share the student's softmax when tau == 1 or support == "split" (and its exponential when
    tau == 2 or 0.5). When alpha == 0 the teacher is not evaluated at all (it may be None; kd and
    agreement are 0). alpha is beside ``spec``, not in it: a schedule changes it every step.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    _check_logits(student_logits)
    if alpha > 0:
        if teacher is None:
            raise ValueError(f"alpha is {alpha} but no teacher signal was given")
        teacher.check_against(student_logits)
    else:
        teacher = None
    return _distill(
        student_logits,
        labels,
        teacher,
        spec,
        alpha=float(alpha),
        lm_denominator=lm_denominator,
        kd_denominator=kd_denominator,
    )


def distill_loss_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor | None,
    teacher: TeacherBatch | None,
    spec: LossSpec,
    *,
    alpha: float,
    lm_denominator: torch.Tensor | float | None = None,
    kd_denominator: torch.Tensor | float | None = None,
) -> DistillResult:
    """`distill_loss` of the logits hidden @ weight.T + bias, without ever holding them: hidden
    [B, T, H] (the student's last hidden state), weight [V, H] (its output projection, tied or not),
    bias [V] or None. Rows are walked in chunks of ``spec.chunk_size`` (None: all at once), each
    chunk's logits and gradient live only in two [chunk, V] buffers (`trainer.fused_head`); values
    and gradients (w.r.t. hidden, weight, bias) are those of `distill_loss` on the full logits.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if hidden.dim() != 3 or not hidden.is_floating_point():
        raise ValueError(f"hidden must be a floating-point [B, T, H] tensor, got {hidden.dtype} {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must have shape [V, {hidden.shape[-1]}], got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if alpha > 0:
        if teacher is None:
            raise ValueError(f"alpha is {alpha} but no teacher signal was given")
        teacher.check_against(hidden)  # [B, T] and K only
    else:
        teacher = None
    v = int(weight.shape[0])
    p = _prepare(hidden, labels, teacher, spec, float(alpha), lm_denominator, kd_denominator, vocab=v)
    n = hidden.shape[0] * hidden.shape[1]
    flat = hidden.reshape(n, hidden.shape[-1])
    rows = spec.chunk_size or max(n, 1)
    grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    if grads:
        obj, lm_s, kd_s, agree = FusedHeadLoss.apply(flat, weight, bias, p.inputs, rows)
    else:
        (obj, lm_s, kd_s, agree), _ = evaluate_head(flat, weight, bias, p.inputs, rows)
    lm = lm_s / p.d_lm
    kd = kd_s * p.scale / p.d_kd
    agreement = agree / p.n_kd.clamp_min(1).to(p.d_kd.dtype)
    return DistillResult(obj, lm, kd, agreement, p.n_lm, p.n_kd)
