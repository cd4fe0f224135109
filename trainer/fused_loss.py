"""The fused LM + KD evaluation behind `trainer.losses`: values and analytic gradients in one pass.

How it is computed (one fused evaluation for LM + KD, analytic gradients, no autograd graph):
every loss here is a function of "buckets" of the student distribution q = softmax(s), s = x / tau
(x: one row of logits): the K kept ids and, in tail mode, one bucket o for every other id. For
such a loss, with G_b = dL/dq_b, h_b = q_b G_b and H = sum_b h_b,

    dL/ds_j = q_j (G_b(j) - sum_b q_b G_b)
            = q_j (r_o - H) + [j kept as i] (h_i - q_i r_o),     r_o = G_o (0 without a bucket o),

so the gradient over the full vocabulary is one per-row coefficient times q, plus K per-row
corrections scattered at the kept ids; dL/dx = dL/ds / tau. (`_kd_buckets` gives h, H and r_o for
each kind.) The LM term is the same with tau = 1: d(-log q_y)/dx = q - onehot(y).

Evaluation, over blocks of rows (``evaluate``):
  pass 1  per row: max m, the sums S_t = sum_j exp((x_j - m) / t) for the temperatures in use
          (t = 1 for LM, t = tau for full-vocabulary KD), and x gathered at the label and at the
          kept ids. exp((x - m) / t) is written straight into the [B, T, V] gradient buffer.
          One exponential serves both terms when tau == 1 (the same softmax), and when tau == 2
          or 0.5 (exp((x - m) / 2) squared is exp(x - m)); any other tau != 1 costs a second
          exponential, kept in a block-sized scratch and recomputed in pass 2.
  math    per-row losses and gradient coefficients from those statistics: only [N] and [N, K]
          tensors (the teacher side is prepared once per call, before pass 1).
  pass 2  per block, in place: grad = sum_t c_t * exp((x - m) / t), then the [N, K] kept-id and
          the label corrections are scatter-added.
In tail mode the student's bucket mass q_o is summed exactly over the ids outside the kept set
(the kept entries are zeroed in the buffer for the sum and restored), not as 1 - sum(kept).

Memory: one [B, T, V] gradient buffer (which backward needs anyway; it is handed to autograd
without a copy when the upstream gradient is 1, and rescaled in place otherwise) plus block-sized
scratch: blocks hold at most ``chunk_size`` rows and at most 2^23 elements (32 MB of float32), so
no [B, T, V] log-softmax is ever materialised. Work is in float32 (float64 for float64 logits);
bfloat16/float16 logits are upcast one block at a time. There is no host synchronisation inside
the block loops; padding rows are computed with weight 0. Gradients flow to ``student_logits``
only; teacher tensors are data (live-teacher mode computes them under ``torch.no_grad``). Double
backward is not supported.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

IGNORE_INDEX = -100
# Floor for log-masses that may be exactly zero where a log is needed (reverse KL against a
# teacher tail bucket of zero mass; the student's bucket for forward KL / soft CE when its mass
# underflows): finite so the loss stays finite; the penalty is large.
_LOG_FLOOR = -80.0
# Rows per block are capped so that a block holds at most this many elements (32 MB in float32).
BLOCK_ELEMS = 1 << 23


# --------------------------------------------------------------------------------------------
# teacher side: everything that does not depend on the student, prepared once per call ([N, K])


class _Teacher(NamedTuple):
    valid: torch.Tensor  # [N] bool: the row contributes to KD
    mask: torch.Tensor  # [N, K] bool: kept entries (invalid rows: a stand-in entry in slot 0)
    ids: torch.Tensor  # [N, K] int64: kept ids; slots outside `mask` repeat a kept id of the row
    top1: torch.Tensor  # [N, 1] int64: slot of the teacher's most probable entry
    log_f: torch.Tensor  # [N, K] log F, F = softmax(logp / tau) over the kept set (0 where masked)
    f: torch.Tensor  # [N, K] F (0 where masked)
    # tail mode only (None otherwise): P_i = (1 - t) F_i on kept entries, bucket t = exp(lt)
    lt: Optional[torch.Tensor]  # [N] log t (-inf: nothing dropped)
    log_p: Optional[torch.Tensor]  # [N, K] log P (log(1 - t) floored at _LOG_FLOOR)
    p: Optional[torch.Tensor]  # [N, K] P
    all_kept: Optional[torch.Tensor]  # [N] bool: the kept set is the whole vocabulary


def teacher_inputs(student_logits, teacher_ids, teacher_logp, teacher_mask, teacher_log_tail, position_mask):
    """Shape checks; flat [N, K] views; valid = position_mask & (at least one kept entry)."""
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
    return (teacher_ids.to(torch.int64).reshape(-1, k), teacher_logp.reshape(-1, k), mask,
            teacher_log_tail.reshape(-1), valid)


def prepare_teacher(raw, tau: float, tail: bool, vocab: int, dtype: torch.dtype) -> _Teacher:
    ids, logp, mask, log_tail, valid = raw
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
    lt = log_p = p = all_kept = None
    if tail:
        lt = torch.where(valid, log_tail.to(dtype).clamp(max=0.0), float("-inf"))  # tau not applied
        log_keep = torch.log(-torch.expm1(lt)).clamp_min(_LOG_FLOOR)  # log(1 - t), stable
        log_p = torch.where(m, log_f + log_keep[:, None], zero)
        p = torch.where(m, log_p.exp(), zero)
        all_kept = m.sum(-1) >= vocab  # kept ids are distinct: no vocabulary left outside
    return _Teacher(valid, m, ids, top1, log_f, f, lt, log_p, p, all_kept)


# --------------------------------------------------------------------------------------------
# KD per row, from the student's statistics: loss and gradient pieces (only [N] and [N, K])


class _KDRows(NamedTuple):
    """loss [N]; dL/ds = coef[:, None] * q (full-vocabulary softmax of s, only when `full`)
    + scatter of kept [N, K] at the kept ids."""

    loss: torch.Tensor
    coef: Optional[torch.Tensor]
    kept: torch.Tensor


def _kd_buckets(kind: str, T: _Teacher, lq: torch.Tensor, log_qo: Optional[torch.Tensor]) -> _KDRows:
    """Per-kind formulas over the buckets; lq = log q_i at the kept ids (full-vocabulary student
    for forward_kl / soft_ce / tail mode; renormalised over the kept set for reverse_kl / mse
    without tail), log_qo = log q_o (tail mode only).

    With h_b = q_b dL/dq_b, H = sum_b h_b, r_o = dL/dq_o (0 without tail):
      forward_kl, soft_ce: h_i = -P_i, h_o = -t, r_o = -t / q_o (same gradient: they differ by H(P));
      reverse_kl:          h_b = q_b (log q_b - log P_b + 1), r_o = log q_o - log t + 1;
      mse:                 h_b = 2 q_b (q_b - P_b),          r_o = 2 (q_o - t);
    dL/ds = q (r_o - H) + scatter(h_i - q_i r_o) (full), or scatter(h_i - q_i H) (renormalised).
    Without tail P = F and t = 0.
    """
    m = T.mask
    zero = lq.new_zeros(())
    q = torch.where(m, lq.exp(), zero)
    if log_qo is None:  # no tail bucket
        log_p, p = T.log_f, T.f
        if kind in ("forward_kl", "soft_ce"):
            if kind == "forward_kl":
                loss = torch.where(m, p * (log_p - lq), zero).sum(-1)
            else:
                loss = -torch.where(m, p * lq, zero).sum(-1)
            return _KDRows(loss, torch.ones_like(loss), -p)  # q - F: sum F = 1 gives H = -1
        # reverse_kl / mse: q is the student renormalised over the kept set
        if kind == "reverse_kl":
            loss = torch.where(m, q * (lq - log_p), zero).sum(-1)
            h = torch.where(m, q * (lq - log_p + 1.0), zero)
        else:
            loss = torch.where(m, (q - p) ** 2, zero).sum(-1)
            h = 2.0 * q * (q - p)
        return _KDRows(loss, None, h - q * h.sum(-1, keepdim=True))

    # ---- tail-aware: K kept buckets + one bucket o for everything else ----------------------
    log_p, p, lt = T.log_p, T.p, T.lt
    t = lt.exp()
    has_t = t > 0
    has_out = ~T.all_kept
    if kind in ("forward_kl", "soft_ce"):
        # the bucket term t (log t - log q_o); log q_o floored at _LOG_FLOOR (then no gradient)
        active = has_t & has_out
        live = active & (log_qo > _LOG_FLOOR)
        lqo = log_qo.clamp_min(_LOG_FLOOR)
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
    else:  # mse
        qo = torch.where(has_out, log_qo.exp(), zero)
        loss = torch.where(m, (q - p) ** 2, zero).sum(-1) + (qo - t) ** 2
        h = 2.0 * q * (q - p)
        h_o = 2.0 * qo * (qo - t)
        r_o = 2.0 * (qo - t)
    big_h = h.sum(-1) + h_o
    return _KDRows(loss, r_o - big_h, h - q * r_o[:, None])


# --------------------------------------------------------------------------------------------
# the fused evaluation


class Spec(NamedTuple):
    labels: Optional[torch.Tensor]  # [N] int64 (-100: ignored), or None (no LM term)
    teacher: Optional[_Teacher]  # None: no KD term
    kind: str
    tau: float
    w_lm: torch.Tensor  # scalar: objective = w_lm * lm_sum + w_kd * kd_sum
    w_kd: torch.Tensor
    block: int  # rows per block


class _Exps(NamedTuple):
    """Which exponentials exp((x - m) / t) a call needs, and how they are obtained per block.

    stored: t of the one written into the buffer (None: none needed); squared: t of its square
    (t = stored / 2), if used; extra: t of a second exponential in scratch (recomputed in pass 2).
    """

    stored: Optional[float]
    squared: Optional[float]
    extra: Optional[float]

    @staticmethod
    def plan(lm: bool, kd_full: bool, tau: float) -> "_Exps":
        temps = sorted(({1.0} if lm else set()) | ({tau} if kd_full else set()))
        if not temps:
            return _Exps(None, None, None)
        if len(temps) == 1:
            return _Exps(temps[0], None, None)
        lo, hi = temps
        if hi == 2.0 * lo:  # tau == 2 or tau == 0.5: exp((x - m) / lo) = exp((x - m) / hi) ** 2
            return _Exps(hi, lo, None)
        return _Exps(1.0, None, tau)

    def temps(self) -> list[float]:
        return [t for t in (self.stored, self.squared, self.extra) if t is not None]


def _exp_rows(x: torch.Tensor, m: torch.Tensor, t: float, out: torch.Tensor) -> torch.Tensor:
    """out = exp((x - m) / t) in two passes, no temporary (m: [c, 1] row max)."""
    if t == 1.0:
        torch.sub(x, m, out=out)
    else:
        torch.add(m * (-1.0 / t), x, alpha=1.0 / t, out=out)
    return out.exp_()


def evaluate(logits: torch.Tensor, spec: Spec, need_grad: bool):
    """(objective, lm_sum, kd_sum, agree_count) in the compute dtype, and the gradient buffer of
    the objective w.r.t. logits (flat [N, V], logits' dtype; None when not `need_grad`)."""
    n_rows, v = logits.shape[0] * logits.shape[1], logits.shape[-1]
    flat = logits.detach().reshape(n_rows, v)
    cdtype = torch.float64 if flat.dtype == torch.float64 else torch.float32
    dev = flat.device
    T, tau, labels = spec.teacher, spec.tau, spec.labels
    lm = labels is not None
    kd_full = T is not None and (T.lt is not None or spec.kind in ("forward_kl", "soft_ce"))
    exps = _Exps.plan(lm, kd_full, tau)
    tail = T is not None and T.lt is not None
    grad = torch.empty_like(flat) if need_grad else None
    in_place = need_grad and flat.dtype == cdtype  # the stored exponential lives in the buffer
    blk = spec.block
    scratch: dict[str, torch.Tensor] = {}

    def buf(name: str, rows: int) -> torch.Tensor:
        if name not in scratch:
            scratch[name] = torch.empty(blk, v, dtype=cdtype, device=dev)
        return scratch[name][:rows]

    lab = labels.clamp_min(0)[:, None] if lm else None
    row_max = torch.empty(n_rows, 1, dtype=cdtype, device=dev)
    sums = {t: torch.empty(n_rows, dtype=cdtype, device=dev) for t in exps.temps()}
    x_lab = torch.empty(n_rows, 1, dtype=cdtype, device=dev) if lm else None
    x_kept = torch.empty(T.ids.shape, dtype=cdtype, device=dev) if T is not None else None

    def block_x(s: int, e: int) -> torch.Tensor:
        x = flat[s:e]
        return x if x.dtype == cdtype else x.to(cdtype)

    # ---- pass 1: row statistics -------------------------------------------------------------
    for s in range(0, n_rows, blk):
        e = min(s + blk, n_rows)
        x = block_x(s, e)
        m = x.amax(-1, keepdim=True)
        row_max[s:e] = m
        if lm:
            x_lab[s:e] = x.gather(1, lab[s:e])
        if T is not None:
            x_kept[s:e] = x.gather(1, T.ids[s:e])
        if exps.stored is None:
            continue
        u = _exp_rows(x, m, exps.stored, grad[s:e] if in_place else buf("u", e - s))
        w = _exp_rows(x, m, exps.extra, buf("w", e - s)) if exps.extra is not None else None
        if tail:  # sum over the ids outside the kept set exactly; the kept part is added below
            ids = T.ids[s:e]
            u_kept = u.gather(1, ids)
            u.scatter_(1, ids, 0.0)
            if w is not None:
                w.scatter_(1, ids, 0.0)
        sums[exps.stored][s:e] = u.sum(-1)
        if exps.squared is not None:
            sums[exps.squared][s:e] = torch.linalg.vector_norm(u, dim=-1).square()  # one pass, no temporary
        if w is not None:
            sums[exps.extra][s:e] = w.sum(-1)
        if tail:
            u.scatter_(1, ids, u_kept)
    zero = row_max.new_zeros(())
    out_sums = {}
    if tail:  # S_t = (outside part, summed above) + (kept part, from the gathered logits)
        for t in exps.temps():
            out_sums[t] = sums[t]
            kept = torch.where(T.mask, torch.exp((x_kept - row_max) / t), zero).sum(-1)
            sums[t] = out_sums[t] + kept

    # ---- per-row losses and gradient coefficients ([N] / [N, K] only) ------------------------
    coefs = {t: torch.zeros(n_rows, dtype=cdtype, device=dev) for t in exps.temps()}
    lm_sum = kd_sum = agree = zero
    scat_lab = scat_kept = None
    if lm:
        lm_rows = labels != IGNORE_INDEX
        lse1 = row_max[:, 0] + sums[1.0].log()
        lm_sum = torch.where(lm_rows, lse1 - x_lab[:, 0], zero).sum()
        a = spec.w_lm * lm_rows.to(cdtype)  # d(objective)/d(x) = a (q - onehot(label))
        coefs[1.0] = coefs[1.0] + a / sums[1.0]
        scat_lab = -a[:, None]
    if T is not None:
        sk = x_kept / tau
        if kd_full:
            lse = row_max[:, 0] / tau + sums[tau].log()
            lq = torch.where(T.mask, sk - lse[:, None], zero)
            log_qo = out_sums[tau].log() - sums[tau].log() if tail else None
        else:  # renormalised over the kept set: only the kept logits matter
            lq = torch.where(T.mask, torch.log_softmax(torch.where(T.mask, sk, float("-inf")), -1), zero)
            log_qo = None
        rows = _kd_buckets(spec.kind, T, lq, log_qo)
        kd_sum = torch.where(T.valid, rows.loss, zero).sum()
        bw = spec.w_kd / tau * T.valid.to(cdtype)  # d/dx = d/ds / tau
        if rows.coef is not None:
            coefs[tau] = coefs[tau] + bw * rows.coef / sums[tau]
        scat_kept = bw[:, None] * rows.kept
        x_top1 = x_kept.gather(1, T.top1)[:, 0]
        agree = (T.valid & (x_top1 == row_max[:, 0])).to(cdtype).sum()  # argmax == teacher top-1
    objective = spec.w_lm * lm_sum + spec.w_kd * kd_sum
    if not need_grad:
        return (objective, lm_sum, kd_sum, agree), None

    # ---- pass 2: grad = sum_t coef_t * exp((x - m) / t) + scattered corrections --------------
    for s in range(0, n_rows, blk):
        e = min(s + blk, n_rows)
        m = row_max[s:e]
        out = grad[s:e] if in_place else buf("u", e - s)
        if exps.stored is None:
            out.zero_()
        else:
            if not in_place:
                x = block_x(s, e)
                _exp_rows(x, m, exps.stored, out)
            c = coefs[exps.stored][s:e, None]
            if exps.squared is not None:  # u * (c_stored + c_squared * u)
                tmp = torch.addcmul(c, out, coefs[exps.squared][s:e, None], out=buf("w", e - s))
                out.mul_(tmp)
            else:
                out.mul_(c)
            if exps.extra is not None:
                x = block_x(s, e)
                w = _exp_rows(x, m, exps.extra, buf("w", e - s))
                out.addcmul_(w, coefs[exps.extra][s:e, None])
        if scat_kept is not None:
            out.scatter_add_(1, T.ids[s:e], scat_kept[s:e])
        if scat_lab is not None:
            out.scatter_add_(1, lab[s:e], scat_lab[s:e])
        if not in_place:
            grad[s:e].copy_(out)
    return (objective, lm_sum, kd_sum, agree), grad


class FusedLoss(torch.autograd.Function):
    """objective (+ non-differentiable lm_sum, kd_sum, agree_count); the gradient is computed in
    forward (`evaluate`) and handed back in backward, scaled by the upstream gradient."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, spec: Spec):  # type: ignore[override]
        outs, grad = evaluate(logits, spec, need_grad=True)
        ctx.grad_buf, ctx.applied, ctx.shape = grad, 1.0, logits.shape
        ctx.mark_non_differentiable(*outs[1:])
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_obj, *_unused):  # type: ignore[override]
        # One host read per backward (not per block). The buffer stays referenced by ctx, so
        # autograd never modifies it; a retained graph (gradcheck, retain_graph=True) can call
        # backward again: the buffer is rescaled in place from the previously applied scale.
        scale = float(g_obj)
        if scale == 0.0:
            return torch.zeros(ctx.shape, dtype=ctx.grad_buf.dtype, device=ctx.grad_buf.device), None
        if scale != ctx.applied:
            ctx.grad_buf.mul_(scale / ctx.applied)
            ctx.applied = scale
        return ctx.grad_buf.view(ctx.shape), None
