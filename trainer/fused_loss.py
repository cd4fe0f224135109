"""The fused LM + KD evaluation behind `trainer.losses`: values and analytic gradients in one pass.

How it is computed (one fused evaluation for LM + KD, analytic gradients, no autograd graph):
every loss here is a function of "buckets" of the student distribution q = softmax(s), s = x / tau
(x: one row of logits): the K kept ids and, in tail mode, one bucket o for every other id. For
such a loss, with G_b = dL/dq_b, h_b = q_b G_b and H = sum_b h_b,

    dL/ds_j = q_j (G_b(j) - sum_b q_b G_b)
            = q_j (r_o - H) + [j kept as i] (h_i - q_i r_o),     r_o = G_o (0 without a bucket o),

so the gradient over the full vocabulary is one per-row coefficient times q, plus K per-row
corrections scattered at the kept ids; dL/dx = dL/ds / tau. (`trainer.kd_rows` gives h, H and r_o for
each kind and support.) The LM term is the same with tau = 1: d(-log q_y)/dx = q - onehot(y).

Evaluation, over blocks of rows (``evaluate``):
  pass 1  per row: max m, the sums S_t = sum_j exp((x_j - m) / t) for the temperatures in use
          (t = 1 for LM, t = tau for full-vocabulary KD, t = 1 for the split's in/out masses; the
          kept-set-renormalised KD terms need no full-vocabulary sum), and x gathered at the
          label and at the kept ids. exp((x - m) / t) is written straight into the [B, T, V] gradient buffer.
          One exponential serves both terms when tau == 1 (the same softmax), and when tau == 2
          or 0.5 (exp((x - m) / 2) squared is exp(x - m)); any other tau != 1 costs a second
          exponential, kept in a block-sized scratch and recomputed in pass 2.
  math    per-row losses and gradient coefficients from those statistics: only [N] and [N, K]
          tensors (the teacher side is prepared once per call, before pass 1).
  pass 2  per block, in place: grad = sum_t c_t * exp((x - m) / t), then the [N, K] kept-id and
          the label corrections are scatter-added.
With a tail bucket or the split, the student's out-of-set mass q_o is summed exactly over the ids outside the kept set
(the kept entries are zeroed in the buffer for the sum and restored), not as 1 - sum(kept).

Memory: one [B, T, V] gradient buffer (which backward needs anyway; it is handed to autograd
without a copy, rescaled in place by the upstream gradient, and owned by autograd from then on;
the logits are saved only so that a second backward through a retained graph can recompute it)
plus block-sized
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

from trainer.kd_rows import Teacher, bucket_rows, split_rows

IGNORE_INDEX = -100
# Rows per block are capped so that a block holds at most this many elements (32 MB in float32).
BLOCK_ELEMS = 1 << 23


# --------------------------------------------------------------------------------------------
# the fused evaluation


class Spec(NamedTuple):
    labels: Optional[torch.Tensor]  # [N] int64 (-100: ignored), or None (no LM term)
    teacher: Optional[Teacher]  # None: no KD term
    kind: str
    support: str  # full | kept | split (trainer.kd_rows)
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
    split = T is not None and spec.support == "split"
    tail = T is not None and T.lt is not None  # exact out-of-set sums (tail bucket, split)
    # renormalised over the kept set: support `kept`, and reverse_kl / mse under `full` without a bucket
    renorm = T is not None and (spec.support == "kept" or (
        spec.support == "full" and not tail and spec.kind in ("reverse_kl", "mse")))
    kd_full = T is not None and not renorm  # needs the student's full-vocabulary softmax ...
    kd_t = 1.0 if split else tau  # ... at this temperature (split: the untempered in/out masses)
    exps = _Exps.plan(lm, kd_full, kd_t)
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
        if split or renorm:  # the tempered student renormalised over the kept set
            lqt = torch.where(T.mask, torch.log_softmax(torch.where(T.mask, sk, float("-inf")), -1), zero)
        if split:  # in/out masses of the untempered student, then the tempered within-set term
            lse1 = row_max[:, 0] + sums[1.0].log()
            lq1 = torch.where(T.mask, x_kept - lse1[:, None], float("-inf"))
            log_qk = torch.logsumexp(lq1, -1)
            log_qo = out_sums[1.0].log() - sums[1.0].log()
            rows = split_rows(spec.kind, T, tau, torch.where(T.mask, lq1, zero), log_qk, log_qo, lqt)
            bw = spec.w_kd * T.valid.to(cdtype)  # rows are already d/dx
        else:
            if kd_full:
                lse = row_max[:, 0] / tau + sums[tau].log()
                lq = torch.where(T.mask, sk - lse[:, None], zero)
                log_qo = out_sums[tau].log() - sums[tau].log() if tail else None
            else:  # renormalised over the kept set: only the kept logits matter
                lq, log_qo = lqt, None
            rows = bucket_rows(spec.kind, T, lq, log_qo, renorm)
            bw = spec.w_kd / tau * T.valid.to(cdtype)  # d/dx = d/ds / tau
        kd_sum = torch.where(T.valid, rows.loss, zero).sum()
        if rows.coef is not None:
            coefs[kd_t] = coefs[kd_t] + bw * rows.coef / sums[kd_t]
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
    forward (`evaluate`) and handed over in backward, scaled by the upstream gradient.

    Ownership: the first backward hands the buffer itself to autograd and drops ctx's reference,
    so nothing else aliases it (when the logits are a leaf, `.grad` may *be* that buffer and is
    then accumulated into or zeroed in place). A further backward through a retained graph
    recomputes the gradient from the saved logits into a fresh tensor.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, spec: Spec):  # type: ignore[override]
        outs, grad = evaluate(logits, spec, need_grad=True)
        ctx.grad_buf, ctx.spec, ctx.shape = grad, spec, logits.shape
        ctx.save_for_backward(logits)  # only read again by a second backward (retained graph)
        ctx.mark_non_differentiable(*outs[1:])
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_obj, *_unused):  # type: ignore[override]
        # One host read per backward (not per block).
        scale = float(g_obj)
        grad, ctx.grad_buf = ctx.grad_buf, None
        if grad is None:  # handed over already: recompute (retain_graph, gradcheck)
            (logits,) = ctx.saved_tensors
            _, grad = evaluate(logits, ctx.spec, need_grad=True)
        if scale == 0.0:
            return grad.zero_().view(ctx.shape), None
        if scale != 1.0:
            grad.mul_(scale)
        return grad.view(ctx.shape), None
