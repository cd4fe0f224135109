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

Evaluation, over blocks of rows (``evaluate``), in named stages. `_Plan.of` decides which terms
and temperatures a call needs; then
  pass 1  `_row_statistics`, per row: max m, the sums S_t = sum_j exp((x_j - m) / t) for the
          temperatures in use (t = 1 for LM, t = tau for full-vocabulary KD, t = 1 for the
          split's in/out masses; the kept-set-renormalised KD terms need no full-vocabulary sum),
          and x gathered at the label and at the kept ids. exp((x - m) / t) is written straight
          into the [B, T, V] gradient buffer. One exponential serves both terms when tau == 1 (the
          same softmax), and when tau == 2 or 0.5 (exp((x - m) / 2) squared is exp(x - m)); any
          other tau != 1 costs a second exponential, kept in a block-sized scratch and recomputed
          in pass 2.
  terms   `_row_terms`: per-row losses and gradient coefficients from those statistics, only
          [N] and [N, K] tensors (the teacher side is prepared once per call, before pass 1).
  pass 2  `_write_gradient`, per block, in place: grad = sum_t c_t * exp((x - m) / t), then the
          [N, K] kept-id and the label corrections are scatter-added.
With a tail bucket or the split, the student's out-of-set mass q_o is summed exactly over the ids
outside the kept set (the kept entries are zeroed in the buffer for the sum and restored), not as
1 - sum(kept).

Memory: one [B, T, V] gradient buffer (which backward needs anyway; it is handed to autograd
without a copy, rescaled in place by the upstream gradient, and owned by autograd from then on;
the logits are saved only so that a second backward through a retained graph can recompute it)
plus block-sized scratch: blocks hold at most ``chunk_size`` rows and at most 2^23 elements (32 MB of float32), so
no [B, T, V] log-softmax is ever materialised. Work is in float32 (float64 for float64 logits);
bfloat16/float16 logits are upcast one block at a time. There is no host synchronisation inside
the block loops; padding rows are computed with weight 0. Gradients flow to ``student_logits``
only; teacher tensors are data (live-teacher mode computes them under ``torch.no_grad``). Double
backward is not supported.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from trainer.kd_rows import PreparedTeacher, bucket_rows, split_rows

IGNORE_INDEX = -100
# Rows per block are capped so that a block holds at most this many elements (32 MB in float32).
BLOCK_ELEMS = 1 << 23


# --------------------------------------------------------------------------------------------
# the fused evaluation


class FusedInputs(NamedTuple):
    """One call's inputs, prepared by `trainer.losses` (N flat positions)."""

    labels: torch.Tensor | None  # [N] int64 (-100: ignored), or None (no LM term)
    teacher: PreparedTeacher | None  # None: no KD term
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

    stored: float | None
    squared: float | None
    extra: float | None

    @staticmethod
    def plan(lm: bool, kd_full: bool, tau: float) -> _Exps:
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


class _Plan(NamedTuple):
    """Which terms a call has and which student statistics they need."""

    lm: bool  # an LM term
    split: bool  # KD in the chain-rule split form
    tail: bool  # exact out-of-set sums (tail bucket, split)
    renorm: bool  # KD against the student renormalised over the kept set
    kd_full: bool  # KD needs the student's full-vocabulary softmax ...
    kd_t: float  # ... at this temperature (split: the untempered in/out masses)
    exps: _Exps

    @staticmethod
    def of(inputs: FusedInputs) -> _Plan:
        teacher = inputs.teacher
        split = teacher is not None and inputs.support == "split"
        tail = teacher is not None and teacher.lt is not None
        # renormalised over the kept set: support `kept`, and reverse_kl / mse under `full` without a bucket
        renorm = teacher is not None and (
            inputs.support == "kept" or (inputs.support == "full" and not tail and inputs.kind in ("reverse_kl", "mse"))
        )
        kd_full = teacher is not None and not renorm
        kd_t = 1.0 if split else inputs.tau
        lm = inputs.labels is not None
        return _Plan(lm, split, tail, renorm, kd_full, kd_t, _Exps.plan(lm, kd_full, kd_t))


class _Workspace:
    """The flat logits, the gradient buffer and block-sized scratch of one evaluation."""

    def __init__(self, logits: torch.Tensor, block: int, need_grad: bool, grad_out: torch.Tensor | None = None):
        n_rows, self.v = logits.shape[0] * logits.shape[1], logits.shape[-1]
        self.n_rows = n_rows
        self.flat = logits.detach().reshape(n_rows, self.v)
        self.cdtype = torch.float64 if self.flat.dtype == torch.float64 else torch.float32
        self.dev = self.flat.device
        self.grad = (grad_out if grad_out is not None else torch.empty_like(self.flat)) if need_grad else None
        self.in_place = need_grad and self.flat.dtype == self.cdtype  # the stored exponential lives in the buffer
        self.block = block
        self._scratch: dict[str, torch.Tensor] = {}

    def blocks(self):
        for s in range(0, self.n_rows, self.block):
            yield s, min(s + self.block, self.n_rows)

    def buf(self, name: str, rows: int) -> torch.Tensor:
        if name not in self._scratch:
            self._scratch[name] = torch.empty(self.block, self.v, dtype=self.cdtype, device=self.dev)
        return self._scratch[name][:rows]

    def x(self, s: int, e: int) -> torch.Tensor:
        x = self.flat[s:e]
        return x if x.dtype == self.cdtype else x.to(self.cdtype)

    def rows(self, *trailing: int) -> torch.Tensor:
        return torch.empty(self.n_rows, *trailing, dtype=self.cdtype, device=self.dev)


def _exp_rows(x: torch.Tensor, m: torch.Tensor, t: float, out: torch.Tensor) -> torch.Tensor:
    """out = exp((x - m) / t) in two passes, no temporary (m: [c, 1] row max)."""
    if t == 1.0:
        torch.sub(x, m, out=out)
    else:
        torch.add(m * (-1.0 / t), x, alpha=1.0 / t, out=out)
    return out.exp_()


class _RowStats(NamedTuple):
    """The student's per-row statistics from pass 1 ([N] / [N, K] only)."""

    row_max: torch.Tensor  # [N, 1]
    sums: dict  # t -> [N] sum_j exp((x_j - m) / t) over the full vocabulary
    out_sums: dict  # t -> [N] the same over the ids outside the kept set (tail / split only)
    x_lab: torch.Tensor | None  # [N, 1] logit at the label
    x_kept: torch.Tensor | None  # [N, K] logits at the kept ids


def _row_statistics(ws: _Workspace, inputs: FusedInputs, plan: _Plan) -> _RowStats:
    """Pass 1 over the blocks: row max, softmax sums, logits at the label and the kept ids. The
    stored exponential is left in the gradient buffer when it can serve pass 2."""
    teacher, exps = inputs.teacher, plan.exps
    lab = inputs.labels.clamp_min(0)[:, None] if plan.lm else None
    row_max = ws.rows(1)
    sums = {t: ws.rows() for t in exps.temps()}
    x_lab = ws.rows(1) if plan.lm else None
    x_kept = torch.empty(teacher.ids.shape, dtype=ws.cdtype, device=ws.dev) if teacher is not None else None
    for s, e in ws.blocks():
        x = ws.x(s, e)
        m = x.amax(-1, keepdim=True)
        row_max[s:e] = m
        if plan.lm:
            x_lab[s:e] = x.gather(1, lab[s:e])
        if teacher is not None:
            x_kept[s:e] = x.gather(1, teacher.ids[s:e])
        if exps.stored is None:
            continue
        u = _exp_rows(x, m, exps.stored, ws.grad[s:e] if ws.in_place else ws.buf("u", e - s))
        w = _exp_rows(x, m, exps.extra, ws.buf("w", e - s)) if exps.extra is not None else None
        if plan.tail:  # sum over the ids outside the kept set exactly; the kept part is added below
            ids = teacher.ids[s:e]
            u_kept = u.gather(1, ids)
            u.scatter_(1, ids, 0.0)
            if w is not None:
                w.scatter_(1, ids, 0.0)
        sums[exps.stored][s:e] = u.sum(-1)
        if exps.squared is not None:
            sums[exps.squared][s:e] = torch.linalg.vector_norm(u, dim=-1).square()  # one pass, no temporary
        if w is not None:
            sums[exps.extra][s:e] = w.sum(-1)
        if plan.tail:
            u.scatter_(1, ids, u_kept)
    out_sums = {}
    if plan.tail:  # S_t = (outside part, summed above) + (kept part, from the gathered logits)
        zero = row_max.new_zeros(())
        for t in exps.temps():
            out_sums[t] = sums[t]
            kept = torch.where(teacher.mask, torch.exp((x_kept - row_max) / t), zero).sum(-1)
            sums[t] = out_sums[t] + kept
    return _RowStats(row_max, sums, out_sums, x_lab, x_kept)


class _RowTerms(NamedTuple):
    """Per-row losses summed, and the gradient pieces for pass 2."""

    lm_sum: torch.Tensor
    kd_sum: torch.Tensor
    agree: torch.Tensor  # positions where the student's argmax is the teacher's top-1
    coefs: dict  # t -> [N] coefficient of exp((x - m) / t) / S_t in the gradient
    scat_lab: torch.Tensor | None  # [N, 1] added at the label
    scat_kept: torch.Tensor | None  # [N, K] added at the kept ids


def _row_terms(inputs: FusedInputs, plan: _Plan, st: _RowStats) -> _RowTerms:
    """Per-row losses and gradient coefficients from the statistics ([N] / [N, K] only)."""
    teacher, tau, labels = inputs.teacher, inputs.tau, inputs.labels
    row_max, sums, out_sums, x_kept = st.row_max, st.sums, st.out_sums, st.x_kept
    n_rows = row_max.shape[0]
    coefs = {t: torch.zeros(n_rows, dtype=row_max.dtype, device=row_max.device) for t in plan.exps.temps()}
    zero = row_max.new_zeros(())
    lm_sum = kd_sum = agree = zero
    scat_lab = scat_kept = None
    if plan.lm:
        lm_rows = labels != IGNORE_INDEX
        lse1 = row_max[:, 0] + sums[1.0].log()
        lm_sum = torch.where(lm_rows, lse1 - st.x_lab[:, 0], zero).sum()
        a = inputs.w_lm * lm_rows.to(row_max.dtype)  # d(objective)/d(x) = a (q - onehot(label))
        coefs[1.0] = coefs[1.0] + a / sums[1.0]
        scat_lab = -a[:, None]
    if teacher is not None:
        sk = x_kept / tau
        if plan.split or plan.renorm:  # the tempered student renormalised over the kept set
            lqt = torch.where(teacher.mask, torch.log_softmax(torch.where(teacher.mask, sk, float("-inf")), -1), zero)
        if plan.split:  # in/out masses of the untempered student, then the tempered within-set term
            lse1 = row_max[:, 0] + sums[1.0].log()
            lq1 = torch.where(teacher.mask, x_kept - lse1[:, None], float("-inf"))
            log_qk = torch.logsumexp(lq1, -1)
            log_qo = out_sums[1.0].log() - sums[1.0].log()
            rows = split_rows(inputs.kind, teacher, tau, torch.where(teacher.mask, lq1, zero), log_qk, log_qo, lqt)
            bw = inputs.w_kd * teacher.valid.to(row_max.dtype)  # rows are already d/dx
        else:
            if plan.kd_full:
                lse = row_max[:, 0] / tau + sums[tau].log()
                lq = torch.where(teacher.mask, sk - lse[:, None], zero)
                log_qo = out_sums[tau].log() - sums[tau].log() if plan.tail else None
            else:  # renormalised over the kept set: only the kept logits matter
                lq, log_qo = lqt, None
            rows = bucket_rows(inputs.kind, teacher, lq, log_qo, plan.renorm)
            bw = inputs.w_kd / tau * teacher.valid.to(row_max.dtype)  # d/dx = d/ds / tau
        kd_sum = torch.where(teacher.valid, rows.loss, zero).sum()
        if rows.coef is not None:
            coefs[plan.kd_t] = coefs[plan.kd_t] + bw * rows.coef / sums[plan.kd_t]
        scat_kept = bw[:, None] * rows.kept
        x_top1 = x_kept.gather(1, teacher.top1)[:, 0]
        agree = (teacher.valid & (x_top1 == row_max[:, 0])).to(row_max.dtype).sum()  # argmax == teacher top-1
    return _RowTerms(lm_sum, kd_sum, agree, coefs, scat_lab, scat_kept)


def _write_gradient(ws: _Workspace, inputs: FusedInputs, plan: _Plan, st: _RowStats, terms: _RowTerms) -> None:
    """Pass 2, per block, in place: grad = sum_t coef_t * exp((x - m) / t) + scattered corrections."""
    exps, coefs = plan.exps, terms.coefs
    lab = inputs.labels.clamp_min(0)[:, None] if plan.lm else None
    for s, e in ws.blocks():
        m = st.row_max[s:e]
        out = ws.grad[s:e] if ws.in_place else ws.buf("u", e - s)
        if exps.stored is None:
            out.zero_()
        else:
            if not ws.in_place:
                _exp_rows(ws.x(s, e), m, exps.stored, out)
            c = coefs[exps.stored][s:e, None]
            if exps.squared is not None:  # u * (c_stored + c_squared * u)
                tmp = torch.addcmul(c, out, coefs[exps.squared][s:e, None], out=ws.buf("w", e - s))
                out.mul_(tmp)
            else:
                out.mul_(c)
            if exps.extra is not None:
                w = _exp_rows(ws.x(s, e), m, exps.extra, ws.buf("w", e - s))
                out.addcmul_(w, coefs[exps.extra][s:e, None])
        if terms.scat_kept is not None:
            out.scatter_add_(1, inputs.teacher.ids[s:e], terms.scat_kept[s:e])
        if terms.scat_lab is not None:
            out.scatter_add_(1, lab[s:e], terms.scat_lab[s:e])
        if not ws.in_place:
            ws.grad[s:e].copy_(out)


def gradient_may_overwrite_logits(inputs: FusedInputs, dtype: torch.dtype) -> bool:
    """Whether `evaluate` may be given the logits themselves as ``grad_out``: pass 1 reads each block's
    logits before it writes that block's exponential over them, and pass 2 reads only the buffer,
    unless the logits are upcast per block (bfloat16/float16) or a second exponential is recomputed
    from them in pass 2 (a tau other than 1, 2, 0.5 beside the LM term)."""
    cdtype = torch.float64 if dtype == torch.float64 else torch.float32
    return dtype == cdtype and _Plan.of(inputs).exps.extra is None


def evaluate(logits: torch.Tensor, inputs: FusedInputs, need_grad: bool, grad_out: torch.Tensor | None = None):
    """(objective, lm_sum, kd_sum, agree_count) in the compute dtype, and the gradient buffer of
    the objective w.r.t. logits (flat [N, V], logits' dtype; None when not `need_grad`), written
    into ``grad_out`` when given (`trainer.fused_head` reuses one chunk-sized buffer).

    Stages: plan the terms, pass 1 (row statistics), per-row terms, pass 2 (the gradient)."""
    ws = _Workspace(logits, inputs.block, need_grad, grad_out)
    plan = _Plan.of(inputs)
    stats = _row_statistics(ws, inputs, plan)
    terms = _row_terms(inputs, plan, stats)
    objective = inputs.w_lm * terms.lm_sum + inputs.w_kd * terms.kd_sum
    outs = (objective, terms.lm_sum, terms.kd_sum, terms.agree)
    if not need_grad:
        return outs, None
    _write_gradient(ws, inputs, plan, stats, terms)
    return outs, ws.grad


class FusedLoss(torch.autograd.Function):
    """objective (+ non-differentiable lm_sum, kd_sum, agree_count); the gradient is computed in
    forward (`evaluate`) and handed over in backward, scaled by the upstream gradient.

    Ownership: the first backward hands the buffer itself to autograd and drops ctx's reference,
    so nothing else aliases it (when the logits are a leaf, `.grad` may *be* that buffer and is
    then accumulated into or zeroed in place). A further backward through a retained graph
    recomputes the gradient from the saved logits into a fresh tensor.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, inputs: FusedInputs):  # type: ignore[override]
        outs, grad = evaluate(logits, inputs, need_grad=True)
        ctx.grad_buf, ctx.inputs, ctx.shape = grad, inputs, logits.shape
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
            _, grad = evaluate(logits, ctx.inputs, need_grad=True)
        if scale == 0.0:
            return grad.zero_().view(ctx.shape), None
        if scale != 1.0:
            grad.mul_(scale)
        return grad.view(ctx.shape), None
