"""KD against a truncated teacher, row by row: the teacher side and the per-row formulas.

Everything here works on [N] and [N, K] tensors only (N flat positions, K kept teacher entries);
`trainer.fused_loss` supplies the student's row statistics (row max, softmax sums, logits at the
kept ids) from its blocked passes over the [N, V] logits, and applies the gradient pieces
returned here (one coefficient per row times the student's softmax, plus K corrections scattered
at the kept ids). `trainer.losses` documents the losses themselves.

Student support (``support``), i.e. what the student side of the KD term is:
  full   the student's full-vocabulary distribution (a teacher that is zero outside the kept set
         pushes every out-of-set probability towards zero), optionally with a tail bucket;
  kept   the student renormalised over the teacher's kept set (says nothing about the rest);
  split  the chain rule of the divergence: an in/out "split" term at tau = 1 (teacher
         (1 - t, t) against the student's untempered kept / out-of-set mass) plus a tempered,
         renormalised within-kept-set term weighted by the kept mass; the within-tail term,
         unknowable from a truncated teacher, is dropped.

Kind `jsd` (the generalised Jensen-Shannon divergence of GKD, Agarwal et al. 2024, Eq. 1, as TRL's
`GKDTrainer.generalized_jsd_loss` and Axolotl's `kd_beta` compute it): with teacher P, student q
and the mixture M = beta P + (1 - beta) q,
    JSD_beta(P || q) = beta KL(P || M) + (1 - beta) KL(q || M),
so dL/dq_b = (1 - beta) log(q_b / M_b). Here only 0 < beta < 1: at the endpoints the mixture
form tends to 0, and beta = 0 / 1 *means* forward / reverse KL (TRL and Axolotl branch the same
way); `trainer.losses.LossSpec.row_kind` hands those to the forward_kl / reverse_kl formulas.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

SUPPORTS = ("full", "kept", "split")
# Floor for log-masses that may be exactly zero where a log is needed (reverse KL against a
# teacher tail bucket of zero mass; the student's bucket for forward KL / soft CE when its mass
# underflows): finite so the loss stays finite; the penalty is large.
_LOG_FLOOR = -80.0


def _out_bucket(has_t, has_out, log_qo):
    """The teacher's tail bucket against the student's out-of-set mass (tail form and split form):
    where it counts (the teacher dropped mass and ids exist outside the kept set), where it has a
    gradient (log q_o above the floor), and log q_o floored at _LOG_FLOOR."""
    active = has_t & has_out
    return active, active & (log_qo > _LOG_FLOOR), log_qo.clamp_min(_LOG_FLOOR)


def _jsd_buckets(beta: float, log_p, log_q, present):
    """Generalised JSD per bucket, in log space: (loss_b, h_b, G_b) with M_b = beta P_b + (1 - beta) q_b,
    loss_b = beta P_b log(P_b / M_b) + (1 - beta) q_b log(q_b / M_b), G_b = dL/dq_b = (1 - beta) log(q_b / M_b),
    h_b = q_b G_b. A zero mass (log -inf) contributes 0 and needs no floor (M_b >= beta P_b, (1 - beta) q_b);
    G_b is set to 0 where q_b = 0 (it only ever multiplies q); all three are 0 outside ``present``."""
    zero = log_q.new_zeros(())
    p_live = present & (log_p > float("-inf"))
    q_live = present & (log_q > float("-inf"))
    lp = torch.where(p_live, log_p, zero)
    lq = torch.where(q_live, log_q, zero)
    log_m = torch.logaddexp(
        torch.where(p_live, lp + math.log(beta), float("-inf")),
        torch.where(q_live, lq + math.log1p(-beta), float("-inf")),
    )
    log_m = torch.where(p_live | q_live, log_m, zero)
    g = torch.where(q_live, (1.0 - beta) * (lq - log_m), zero)
    h = torch.where(q_live, lq.exp(), zero) * g
    loss = beta * torch.where(p_live, lp.exp() * (lp - log_m), zero) + h
    return loss, h, g


# --------------------------------------------------------------------------------------------
# teacher side: everything that does not depend on the student, prepared once per call ([N, K])


class PreparedTeacher(NamedTuple):
    """The teacher side of one call over N flat rows, prepared once (`prepare_teacher`)."""

    valid: torch.Tensor  # [N] bool: the row contributes to KD
    mask: torch.Tensor  # [N, K] bool: kept entries (invalid rows: a stand-in entry in slot 0)
    ids: torch.Tensor  # [N, K] int64: kept ids; slots outside `mask` repeat a kept id of the row
    top1: torch.Tensor  # [N, 1] int64: slot of the teacher's most probable entry
    log_f: torch.Tensor  # [N, K] log F, F = softmax(logp / tau) over the kept set (0 where masked)
    f: torch.Tensor  # [N, K] F (0 where masked)
    # tail bucket / split only (None otherwise): P_i = (1 - t) F_i on kept entries, bucket t = exp(lt)
    lt: torch.Tensor | None  # [N] log t (-inf: nothing dropped)
    log_keep: torch.Tensor | None  # [N] log(1 - t), floored at _LOG_FLOOR
    log_p: torch.Tensor | None  # [N, K] log P (log(1 - t) floored at _LOG_FLOOR)
    p: torch.Tensor | None  # [N, K] P
    all_kept: torch.Tensor | None  # [N] bool: the kept set is the whole vocabulary
    beta: float | None = None  # kind jsd only: the teacher's weight in the mixture M, 0 < beta < 1


def prepare_teacher(
    teacher, tau: float, tail: bool, vocab: int, dtype: torch.dtype, beta: float | None = None
) -> PreparedTeacher:
    """Teacher tensors for one call over the B * T rows of ``teacher`` (a
    `trainer.teacher_batch.TeacherBatch`, read in place: reshapes are views); ``tail``: also the
    dropped mass (tail bucket and split); ``beta``: the jsd mixture weight (kind jsd only)."""
    k = teacher.ids.shape[-1]
    ids = teacher.ids.to(torch.int64).reshape(-1, k)
    logp = teacher.logp.reshape(-1, k)
    mask = teacher.mask.to(torch.bool).reshape(-1, k)
    log_tail = teacher.log_tail.reshape(-1)
    valid = teacher.valid_positions().reshape(-1)
    # Rows that do not contribute get a harmless stand-in teacher (one entry in slot 0, finite
    # values) so every intermediate stays finite; their weight is 0 (zero gradient).
    stand_in = torch.zeros_like(mask)
    stand_in[:, 0] = True
    m = torch.where(valid[:, None], mask, stand_in)
    first = m.to(torch.int8).argmax(-1, keepdim=True)
    ids = torch.where(m, ids, ids.gather(-1, first))  # masked slots repeat a kept id: safe to scatter
    zero = torch.zeros((), dtype=dtype, device=logp.device)
    logp = torch.where(mask & valid[:, None], logp.to(dtype), zero)  # stand-in entries: finite
    top1 = torch.where(m, logp, float("-inf")).argmax(-1, keepdim=True)  # ids are sorted by id, not by prob
    log_f = torch.where(m, torch.log_softmax(torch.where(m, logp / tau, float("-inf")), -1), zero)
    f = torch.where(m, log_f.exp(), zero)
    lt = log_keep = log_p = p = all_kept = None
    if tail:
        lt = torch.where(valid, log_tail.to(dtype).clamp(max=0.0), float("-inf"))  # tau not applied
        log_keep = torch.log(-torch.expm1(lt)).clamp_min(_LOG_FLOOR)  # log(1 - t), stable
        log_p = torch.where(m, log_f + log_keep[:, None], zero)
        p = torch.where(m, log_p.exp(), zero)
        all_kept = m.sum(-1) >= vocab  # kept ids are distinct: no vocabulary left outside
    return PreparedTeacher(valid, m, ids, top1, log_f, f, lt, log_keep, log_p, p, all_kept, beta)


# --------------------------------------------------------------------------------------------
# KD per row, from the student's statistics: loss and gradient pieces (only [N] and [N, K])


class KDRows(NamedTuple):
    """loss [N]; dL/ds = coef[:, None] * q (full-vocabulary softmax of s, only when `full`)
    + scatter of kept [N, K] at the kept ids."""

    loss: torch.Tensor
    coef: torch.Tensor | None
    kept: torch.Tensor


def bucket_rows(
    kind: str, teacher: PreparedTeacher, lq: torch.Tensor, log_qo: torch.Tensor | None, renorm: bool
) -> KDRows:
    """Per-kind formulas over the buckets (supports `full` and `kept`); lq = log q_i at the kept
    ids: the full-vocabulary student, or (``renorm``) the student renormalised over the kept set;
    log_qo = log q_o (tail bucket only, never with ``renorm``).

    With h_b = q_b dL/dq_b, H = sum_b h_b, r_o = dL/dq_o (0 without tail):
      forward_kl, soft_ce: h_i = -P_i, h_o = -t, r_o = -t / q_o (same gradient: they differ by H(P));
      reverse_kl:          h_b = q_b (log q_b - log P_b + 1), r_o = log q_o - log t + 1;
      mse:                 h_b = 2 q_b (q_b - P_b),          r_o = 2 (q_o - t);
      jsd:                 h_b = (1 - beta) q_b log(q_b / M_b), r_o = (1 - beta) log(q_o / M_o),
                           M = beta P + (1 - beta) q;
    dL/ds = q (r_o - H) + scatter(h_i - q_i r_o) (full), or scatter(h_i - q_i H) (renormalised).
    Without tail P = F and t = 0; jsd is then still over the full vocabulary (not renormalised):
    every id outside the kept set has P = 0, so M = (1 - beta) q there and G = -(1 - beta) log(1 - beta)
    =: c for each of them, i.e. exactly one bucket o with t = 0: loss term c q_o, r_o = c, and
    r_o - H = c sum_i q_i - sum_i h_i (no q_o needed for the gradient; the loss uses 1 - sum_i q_i).
    """
    m = teacher.mask
    zero = lq.new_zeros(())
    q = torch.where(m, lq.exp(), zero)
    if log_qo is None:  # no tail bucket
        log_p, p = teacher.log_f, teacher.f
        if kind == "jsd":
            loss_i, h, _ = _jsd_buckets(teacher.beta, torch.where(m, log_p, float("-inf")), lq, m)
            loss = loss_i.sum(-1)
            if renorm:
                return KDRows(loss, None, h - q * h.sum(-1, keepdim=True))
            c = -(1.0 - teacher.beta) * math.log1p(-teacher.beta)  # G at every id outside the kept set
            q_kept = q.sum(-1)
            loss = loss + c * (1.0 - q_kept).clamp_min(0.0)
            return KDRows(loss, c * q_kept - h.sum(-1), h - c * q)
        if kind in ("forward_kl", "soft_ce"):
            if kind == "forward_kl":
                loss = torch.where(m, p * (log_p - lq), zero).sum(-1)
            else:
                loss = -torch.where(m, p * lq, zero).sum(-1)
            if renorm:  # d/ds = q~ - F at the kept ids only
                return KDRows(loss, None, q - p)
            return KDRows(loss, torch.ones_like(loss), -p)  # q - F: sum F = 1 gives H = -1
        # reverse_kl / mse: q is the student renormalised over the kept set
        if kind == "reverse_kl":
            loss = torch.where(m, q * (lq - log_p), zero).sum(-1)
            h = torch.where(m, q * (lq - log_p + 1.0), zero)
        else:
            loss = torch.where(m, (q - p) ** 2, zero).sum(-1)
            h = 2.0 * q * (q - p)
        return KDRows(loss, None, h - q * h.sum(-1, keepdim=True))

    # ---- tail-aware: K kept buckets + one bucket o for everything else ----------------------
    log_p, p, lt = teacher.log_p, teacher.p, teacher.lt
    t = lt.exp()
    has_t = t > 0
    has_out = ~teacher.all_kept
    if kind in ("forward_kl", "soft_ce"):
        # the bucket term t (log t - log q_o); log q_o floored at _LOG_FLOOR (then no gradient)
        active, live, lqo = _out_bucket(has_t, has_out, log_qo)
        if kind == "forward_kl":
            loss = torch.where(m, p * (log_p - lq), zero).sum(-1)
            loss = loss + torch.where(active, t * (torch.where(has_t, lt, zero) - lqo), zero)
        else:
            loss = -torch.where(m, p * lq, zero).sum(-1) - torch.where(active, t * lqo, zero)
        h = -p
        h_o = torch.where(live, -t, zero)
        r_o = torch.where(live, -torch.exp(torch.where(live, lt - log_qo, zero)), zero)  # -t / q_o
    elif kind == "reverse_kl":
        lt_floor = torch.where(has_t, lt, torch.full_like(lt, _LOG_FLOOR)).clamp_min(_LOG_FLOOR)
        live = has_out & (log_qo > float("-inf"))
        lqo = torch.where(live, log_qo, zero)
        qo = torch.where(live, lqo.exp(), zero)
        loss = torch.where(m, q * (lq - log_p), zero).sum(-1) + qo * (lqo - lt_floor)
        h = torch.where(m, q * (lq - log_p + 1.0), zero)
        h_o = qo * (lqo - lt_floor + 1.0)
        r_o = torch.where(live, lqo - lt_floor + 1.0, zero)
    elif kind == "jsd":  # no floors needed; with the whole vocabulary kept the bucket is dropped
        loss_i, h, _ = _jsd_buckets(teacher.beta, torch.where(m, log_p, float("-inf")), lq, m)
        loss_o, h_o, r_o = _jsd_buckets(teacher.beta, lt, log_qo, has_out)
        loss = loss_i.sum(-1) + loss_o
    else:  # mse
        qo = torch.where(has_out, log_qo.exp(), zero)
        loss = torch.where(m, (q - p) ** 2, zero).sum(-1) + (qo - t) ** 2
        h = 2.0 * q * (q - p)
        h_o = 2.0 * qo * (qo - t)
        r_o = 2.0 * (qo - t)
    big_h = h.sum(-1) + h_o
    return KDRows(loss, r_o - big_h, h - q * r_o[:, None])


def split_rows(
    kind: str,
    teacher: PreparedTeacher,
    tau: float,
    lq1: torch.Tensor,
    log_qk: torch.Tensor,
    log_qo: torch.Tensor,
    lqt: torch.Tensor,
) -> KDRows:
    """The chain-rule split (support `split`), in d/dx units (x: the raw logits).

    Inputs: lq1 = log q_i at the kept ids for the UNTEMPERED full-vocabulary student q =
    softmax(x); log_qk = log Q, Q = sum_i q_i its kept mass; log_qo = log Q_o, Q_o its mass on the
    ids outside the kept set (summed exactly); lqt = log q~_i, the TEMPERED student renormalised
    over the kept set (softmax(x / tau) restricted to it). Teacher: t = exp(log_tail) (stored, not
    tempered), F = softmax(logp / tau) over the kept set.

      forward_kl  (1 - t) log((1 - t) / Q) + t log(t / Q_o) + (1 - t) KL(F || q~)
      soft_ce     -(1 - t) log Q - t log Q_o + (1 - t) H(F, q~)       (same gradient)
      reverse_kl  Q log(Q / (1 - t)) + Q_o log(Q_o / t) + Q KL(q~ || F)
      mse         (Q - (1 - t))^2 + (Q_o - t)^2 + (1 - t) sum_i (q~_i - F_i)^2   (by analogy)
      jsd         JSD_beta((1 - t, t) || (Q, Q_o)) + beta (1 - t) KL(F || M~) + (1 - beta) Q KL(q~ || M~),
                  M~ = (beta (1 - t) F + (1 - beta) Q q~) / (beta (1 - t) + (1 - beta) Q): the mixture's
                  own split; both KLs of the JSD by the chain rule (exact at tau = 1: the K + 1 bucket JSD)

    Gradient: with hQ = Q dL/dQ, hO = Q_o dL/dQ_o, r_o = dL/dQ_o, the split part is
    dL/dx = q (r_o - hQ - hO) + scatter(q_i / Q hQ - q_i r_o); the within part is the
    renormalised gradient (as for support `kept`) times its weight, divided by tau. A zero
    teacher tail drops the t-terms (log t floored at -80 for reverse_kl); a student out-of-set
    mass below exp(-80) is floored there (its term then has no gradient).
    """
    m = teacher.mask
    zero = lq1.new_zeros(())
    lt, lkeep = teacher.lt, teacher.log_keep
    t, keep = lt.exp(), lkeep.exp()
    has_t, has_out = t > 0, ~teacher.all_kept
    q1 = torch.where(m, lq1.exp(), zero)
    r1 = torch.where(m, (lq1 - log_qk[:, None]).exp(), zero)  # q_i / Q
    qk = log_qk.exp()
    qt = torch.where(m, lqt.exp(), zero)
    log_f, f = teacher.log_f, teacher.f
    if kind in ("forward_kl", "soft_ce"):
        active, live, lqo = _out_bucket(has_t, has_out, log_qo)
        if kind == "forward_kl":
            within = torch.where(m, f * (log_f - lqt), zero).sum(-1)
            split = keep * (lkeep - log_qk) + torch.where(active, t * (torch.where(has_t, lt, zero) - lqo), zero)
        else:
            within = -torch.where(m, f * lqt, zero).sum(-1)
            split = -keep * log_qk - torch.where(active, t * lqo, zero)
        loss = split + keep * within
        h_k = -keep
        h_o = torch.where(live, -t, zero)
        r_o = torch.where(live, -torch.exp(torch.where(live, lt - log_qo, zero)), zero)  # -t / Q_o
        w_grad = keep[:, None] * (qt - f)
    elif kind == "reverse_kl":
        lt_floor = torch.where(has_t, lt, torch.full_like(lt, _LOG_FLOOR)).clamp_min(_LOG_FLOOR)
        live = has_out & (log_qo > float("-inf"))
        lqo = torch.where(live, log_qo, zero)
        qo = torch.where(live, lqo.exp(), zero)
        within = torch.where(m, qt * (lqt - log_f), zero).sum(-1)
        loss = qk * (log_qk - lkeep) + qo * (lqo - lt_floor) + qk * within
        h_k = qk * (log_qk - lkeep + 1.0 + within)
        r_o = torch.where(live, lqo - lt_floor + 1.0, zero)
        h_o = qo * r_o
        h = torch.where(m, qt * (lqt - log_f + 1.0), zero)
        w_grad = qk[:, None] * (h - qt * h.sum(-1, keepdim=True))
    elif kind == "jsd":
        # within = a KL(F || M~) + b KL(q~ || M~), a = beta (1 - t), b = (1 - beta) Q: dW/dQ = (1 - beta) KL(q~ || M~),
        # dW/dq~_i = b log(q~_i / M~_i) (up to a constant, which the renormalised gradient drops)
        beta = teacher.beta
        la, lb = lkeep + math.log(beta), log_qk + math.log1p(-beta)
        log_mk = torch.logaddexp(la, lb)
        log_mt = torch.where(m, torch.logaddexp(la[:, None] + log_f, lb[:, None] + lqt) - log_mk[:, None], zero)
        kl_f = torch.where(m, f * (log_f - log_mt), zero).sum(-1)
        kl_q = torch.where(m, qt * (lqt - log_mt), zero).sum(-1)
        b = lb.exp()
        loss_k, h_k, _ = _jsd_buckets(beta, lkeep, log_qk, torch.ones_like(has_out))
        loss_o, h_o, r_o = _jsd_buckets(beta, lt, log_qo, has_out)
        loss = loss_k + loss_o + la.exp() * kl_f + b * kl_q
        h_k = h_k + b * kl_q
        h = torch.where(m, b[:, None] * qt * (lqt - log_mt), zero)
        w_grad = h - qt * h.sum(-1, keepdim=True)
    else:  # mse
        qo = torch.where(has_out, log_qo.exp(), zero)
        within = torch.where(m, (qt - f) ** 2, zero).sum(-1)
        loss = (qk - keep) ** 2 + (qo - t) ** 2 + keep * within
        h_k = 2.0 * qk * (qk - keep)
        r_o = torch.where(has_out, 2.0 * (qo - t), zero)
        h_o = qo * r_o
        h = 2.0 * qt * (qt - f)
        w_grad = keep[:, None] * (h - qt * h.sum(-1, keepdim=True))
    kept = r1 * h_k[:, None] - q1 * r_o[:, None] + w_grad / tau
    return KDRows(loss, r_o - h_k - h_o, kept)
