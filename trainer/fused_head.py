"""The loss from the student's last hidden state and output projection, never its [B, T, V] logits.

The student's logits are x = h W^T (+ b) (h: [N, H] last hidden states, W: [V, H] the output
projection, tied to the input embedding or not, b: [V] an optional bias). The loss walks the N rows
in chunks of ``rows``: the chunk's logits into one [rows, V] buffer, the fused LM + KD evaluation of
`trainer.fused_loss.evaluate` on it (the same row statistics, row terms and in-place gradient
pass, its gradient written over the logits where `gradient_may_overwrite_logits` allows, else into
a second [rows, V] buffer), then

    grad_h[chunk] = g W,     grad_W += g^T h[chunk],     grad_b += sum_rows g,

with g the chunk's gradient w.r.t. its logits. Every per-row sum the evaluation returns (LM and KD
sums, agreement count) adds over chunks, and its weights (w_lm, w_kd) are the whole call's, so a
chunk's gradient is exactly its rows of the unchunked one.

Memory: one [rows, V] buffer (two for bfloat16 or a tau other than 1, 2, 0.5 beside the LM term)
and block-sized scratch, plus grad_h [N, H], grad_W [V, H] and grad_b
(the parameters need those anyway); no [N, V] tensor exists in forward or backward. As in
`trainer.fused_loss`, the gradients are computed in forward and handed over (scaled) in backward;
a second backward through a retained graph recomputes them. Under autocast the projection runs in
the autocast dtype (as the student's own head would); the evaluation upcasts each block, grad_W is
accumulated in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from trainer.fused_loss import FusedInputs, evaluate, gradient_may_overwrite_logits


class HeadGrads(NamedTuple):
    hidden: torch.Tensor | None  # [N, H]
    weight: torch.Tensor | None  # [V, H]
    bias: torch.Tensor | None  # [V]


def _chunk_inputs(inputs: FusedInputs, start: int, end: int, n_rows: int) -> FusedInputs:
    """The call's inputs restricted to rows [start, end): every per-row tensor sliced, the rest kept."""

    def rows(x):
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == n_rows:
            return x[start:end]
        return x

    teacher = inputs.teacher
    if teacher is not None:
        teacher = type(teacher)(*(rows(x) for x in teacher))
    return inputs._replace(labels=rows(inputs.labels), teacher=teacher)


def _matmul_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the student's own head would produce its logits in: autocast's where it applies."""
    dev = hidden.device.type
    if hidden.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return hidden.dtype


def evaluate_head(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    inputs: FusedInputs,
    rows: int,
    need: tuple[bool, bool, bool] = (False, False, False),
):
    """(objective, lm_sum, kd_sum, agree_count) over hidden [N, H], and the `HeadGrads` asked for by
    ``need`` (hidden, weight, bias); None when nothing is needed."""
    n, v = hidden.shape[0], weight.shape[0]
    mm = _matmul_dtype(hidden)
    acc = torch.float64 if mm == torch.float64 else torch.float32
    dev = hidden.device
    h = hidden.detach().to(mm)
    w = weight.detach().to(mm)
    b = bias.detach().to(mm) if bias is not None else None
    any_grad = any(need)
    rows = max(1, min(rows, n))
    logits = torch.empty(rows, v, dtype=mm, device=dev)
    overwrite = any_grad and gradient_may_overwrite_logits(inputs, mm)  # one [rows, V] buffer, not two
    grad = torch.empty(rows, v, dtype=mm, device=dev) if any_grad and not overwrite else None
    g_h = torch.empty_like(h) if need[0] else None
    g_w = torch.zeros(w.shape, dtype=acc, device=dev) if need[1] else None
    g_b = torch.zeros(v, dtype=acc, device=dev) if need[2] else None
    totals = torch.zeros(4, dtype=acc, device=dev)
    with torch.autocast(dev.type, enabled=False):
        for s in range(0, max(n, 1), rows):
            e = min(s + rows, n)
            if e <= s:
                break
            x = logits[: e - s]
            if b is None:
                torch.mm(h[s:e], w.t(), out=x)
            else:
                torch.addmm(b, h[s:e], w.t(), out=x)
            outs, g = evaluate(
                x[None],
                _chunk_inputs(inputs, s, e, n),
                any_grad,
                grad_out=(x if overwrite else grad[: e - s]) if any_grad else None,
            )
            totals += torch.stack([o.to(acc) for o in outs])
            if g is None:
                continue
            if g_h is not None:
                torch.mm(g, w, out=g_h[s:e])
            if g_w is not None:
                if mm == acc:
                    g_w.addmm_(g.t(), h[s:e])
                else:
                    g_w.add_(torch.mm(g.t(), h[s:e]))
            if g_b is not None:
                g_b.add_(g.sum(0, dtype=acc))
    outs = tuple(t.clone() for t in totals.unbind(0))  # own storage: autograd outputs must not be views
    if not any_grad:
        return outs, None
    return outs, HeadGrads(
        g_h if g_h is None else g_h.to(hidden.dtype),
        g_w if g_w is None else g_w.to(weight.dtype),
        g_b if g_b is None else g_b.to(bias.dtype),
    )


class FusedHeadLoss(torch.autograd.Function):
    """objective (+ non-differentiable lm_sum, kd_sum, agree_count) from hidden [N, H], weight
    [V, H] and bias [V] (or None); gradients computed in forward (`evaluate_head`), handed over in
    backward scaled by the upstream gradient."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, inputs: FusedInputs, rows: int):  # type: ignore[override]
        need = tuple(ctx.needs_input_grad[:3])
        outs, grads = evaluate_head(hidden, weight, bias, inputs, rows, need)
        ctx.grads, ctx.inputs, ctx.rows, ctx.need = grads, inputs, rows, need
        ctx.save_for_backward(hidden, weight, bias)  # only read again by a second backward
        ctx.mark_non_differentiable(*outs[1:])
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_obj, *_unused):  # type: ignore[override]
        scale = float(g_obj)  # one host read per backward
        grads, ctx.grads = ctx.grads, None
        if grads is None:  # handed over already: recompute (retain_graph, gradcheck)
            hidden, weight, bias = ctx.saved_tensors
            _, grads = evaluate_head(hidden, weight, bias, ctx.inputs, ctx.rows, ctx.need)
        if scale != 1.0:
            for g in grads:
                if g is not None:
                    g.mul_(scale)
        return grads.hidden, grads.weight, grads.bias, None, None
