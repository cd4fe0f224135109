"""The fused output-projection loss (`trainer.fused_head`, `trainer.losses.distill_loss_from_hidden`)
against the unfused path (`distill_loss` on the materialised logits h W^T + b), gradcheck, an
allocation count that shows no [B, T, V] tensor, and the model wiring (`DistillationModel` with
distill.fused_head): losses, gradients, eval metrics, live teacher, refusals, DDP with a tied head.
"""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from largest_tensor import LargestTensor

sys.path.insert(0, os.path.dirname(__file__))
from test_losses import FORMS, case_seed, make_case  # noqa: E402

from trainer.losses import KD_KINDS, LossSpec, TeacherBatch, distill_loss, distill_loss_from_hidden  # noqa: E402

H = 6
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def head_case(dtype, *, b=2, t=5, v=13, k=4, seed=3, bias=True):
    """make_case's teacher (a position without entries, one masked by position_mask, tails) and
    random hidden / weight / bias; labels with padding (-100)."""
    _, ids, logp, mask, lt, pm = make_case(b=b, t=t, v=v, k=k, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    hidden = torch.randn(b, t, H, generator=g, dtype=dtype)
    weight = torch.randn(v, H, generator=g, dtype=dtype) * 0.7
    bias_t = torch.randn(v, generator=g, dtype=dtype) if bias else None
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, min(3, t - 1)] = -100
    labels[b - 1, 0] = -100
    return hidden, weight, bias_t, labels, TeacherBatch(ids, logp, mask, lt, pm)


def _both(hidden, weight, bias, labels, teacher, spec, alpha):
    """(value, lm, kd, grads) of the fused path and of the unfused path on the same leaves."""
    out = []
    for fused in (True, False):
        leaves = [x.clone().requires_grad_(True) for x in (hidden, weight) + ((bias,) if bias is not None else ())]
        h, w, b = leaves[0], leaves[1], leaves[2] if bias is not None else None
        if fused:
            res = distill_loss_from_hidden(h, w, b, labels, teacher, spec, alpha=alpha)
        else:
            logits = h @ w.t() + (b if b is not None else 0)
            res = distill_loss(logits, labels, teacher, spec, alpha=alpha)
        grads = torch.autograd.grad(res.loss, leaves)
        out.append((res, grads))
    return out


def _close(got, ref, rel):
    torch.testing.assert_close(got, ref, rtol=rel, atol=rel * float(ref.abs().max()) + 1e-30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("support,tail", FORMS)
@pytest.mark.parametrize("kind", KD_KINDS)
def test_values_and_gradients_equal_the_unfused_path(kind, support, tail, tau, dtype):
    """Every kind x support x tail x tau, float32 and float64; 10 rows in chunks of 3 (the last
    chunk short), padding labels, positions without teacher entries: objective, lm, kd, agreement
    and the gradients w.r.t. hidden, weight and bias equal those from the full logits."""
    hidden, weight, bias, labels, teacher = head_case(dtype, seed=case_seed((kind, support, tail, tau), 997))
    spec = LossSpec(kind=kind, support=support, tail=tail, tau=tau, chunk_size=3)
    (fres, fgrads), (ures, ugrads) = _both(hidden, weight, bias, labels, teacher, spec, alpha=0.7)
    rel = TOL[dtype]
    for name in ("loss", "lm", "kd", "agreement"):
        _close(getattr(fres, name).detach(), getattr(ures, name).detach(), rel)
    assert int(fres.num_positions) == int(ures.num_positions) and int(fres.num_tokens) == int(ures.num_tokens)
    for got, ref in zip(fgrads, ugrads):
        _close(got, ref, rel)


@pytest.mark.parametrize("chunk", [1, 4, None])
@pytest.mark.parametrize("alpha,tau_squared,bias", [(0.0, False, True), (1.0, True, False), (0.4, True, True)])
def test_lm_only_tau_squared_no_bias_and_chunk_sizes(alpha, tau_squared, bias, chunk):
    """LM only (alpha 0, no teacher given), KD only with tau^2, no bias; chunks of 1, 4 (10 rows)
    and all rows at once."""
    hidden, weight, b, labels, teacher = head_case(torch.float64, bias=bias)
    spec = LossSpec(kind="forward_kl", support="split", tau=2.0, tau_squared=tau_squared, chunk_size=chunk)
    (fres, fgrads), (ures, ugrads) = _both(hidden, weight, b, labels, None if alpha == 0 else teacher, spec, alpha)
    _close(fres.loss.detach(), ures.loss.detach(), 1e-10)
    for got, ref in zip(fgrads, ugrads):
        _close(got, ref, 1e-10)


def test_tied_weight_gets_both_gradients():
    """The projection tied to the input embedding: its gradient is the embedding's plus the head's,
    as with the full logits."""
    hidden, weight, _, labels, teacher = head_case(torch.float64)
    ids = torch.randint(0, weight.shape[0], hidden.shape[:2], generator=torch.Generator().manual_seed(5))
    spec = LossSpec(kind="reverse_kl", support="full", tail=True, tau=1.5, chunk_size=4)
    grads = []
    for fused in (True, False):
        w = weight.clone().requires_grad_(True)
        h = torch.tanh(torch.nn.functional.embedding(ids, w))
        if fused:
            res = distill_loss_from_hidden(h, w, None, labels, teacher, spec, alpha=0.5)
        else:
            res = distill_loss(h @ w.t(), labels, teacher, spec, alpha=0.5)
        res.loss.backward()
        grads.append(w.grad)
    _close(grads[0], grads[1], 1e-10)


@pytest.mark.parametrize("support,tail", FORMS)
def test_gradcheck_each_support(support, tail):
    hidden, weight, bias, labels, teacher = head_case(torch.float64, b=1, t=4, v=7, k=3, seed=11)
    spec = LossSpec(kind="forward_kl", support=support, tail=tail, tau=1.5, chunk_size=3)
    leaves = tuple(x.clone().requires_grad_(True) for x in (hidden, weight, bias))
    assert torch.autograd.gradcheck(
        lambda h, w, b: distill_loss_from_hidden(h, w, b, labels, teacher, spec, alpha=0.6).loss,
        leaves,
        eps=1e-6,
        atol=1e-6,
    )


def test_retained_graph_and_upstream_scale():
    """A second backward through a retained graph recomputes; an upstream factor scales every gradient."""
    hidden, weight, bias, labels, teacher = head_case(torch.float64)
    spec = LossSpec(kind="mse", support="kept", tau=2.0, chunk_size=3)
    h = hidden.clone().requires_grad_(True)
    res = distill_loss_from_hidden(h, weight, bias, labels, teacher, spec, alpha=0.5)
    (g1,) = torch.autograd.grad(res.loss * 3.0, h, retain_graph=True)
    (g2,) = torch.autograd.grad(res.loss, h)
    _close(g1, 3.0 * g2, 1e-12)


def test_bfloat16_autocast_matches_the_unfused_head():
    """Under autocast the projection runs in bfloat16 as the student's own nn.Linear would; loss and
    gradients (float32 parameters get float32 gradients) agree with the unfused path to bfloat16
    precision."""
    hidden, weight, bias, labels, teacher = head_case(torch.float32, b=2, t=8, v=50)
    spec = LossSpec(kind="forward_kl", support="split", tau=2.0, chunk_size=5)
    got = []
    for fused in (True, False):
        leaves = [x.clone().requires_grad_(True) for x in (hidden, weight, bias)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fused:
                res = distill_loss_from_hidden(*leaves, labels, teacher, spec, alpha=0.5)
            else:
                res = distill_loss(torch.nn.functional.linear(*leaves), labels, teacher, spec, alpha=0.5)
        res.loss.backward()
        assert all(x.grad.dtype == torch.float32 for x in leaves)
        got.append([res.loss.detach()] + [x.grad for x in leaves])
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * float(b.abs().max()))


@pytest.mark.parametrize("support,tail", [("split", False), ("full", True)])
def test_no_tensor_of_the_logits_size_exists(support, tail):
    """Forward and backward of the fused head never create a tensor of B * T * V elements (the
    largest is the chunk's [chunk, V] buffer); the unfused path does (so the count can fail)."""
    b, t, v, k, chunk = 2, 32, 2000, 4, 8
    hidden, weight, bias, labels, teacher = head_case(torch.float32, b=b, t=t, v=v, k=k)
    spec = LossSpec(kind="forward_kl", support=support, tail=tail, tau=2.0, chunk_size=chunk)
    for fused in (True, False):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        with LargestTensor() as seen:
            if fused:
                res = distill_loss_from_hidden(h, w, bias, labels, teacher, spec, alpha=0.9)
            else:
                res = distill_loss(h @ w.t() + bias, labels, teacher, spec, alpha=0.9)
            res.loss.backward()
        if fused:
            assert seen.largest <= chunk * v, seen.largest
        else:
            assert seen.largest >= b * t * v


# ---------------------------------------------------------------------------------------------
# DistillationModel: fused vs unfused on a tiny Llama (offline and live teacher), eval, refusals


V_MODEL = 64


def _student(tied: bool, seed: int = 0):
    from make_dataset import tiny_llama_config
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = tiny_llama_config(V_MODEL, hidden=16, layers=1)
    cfg.pop("model_type")
    cfg["tie_word_embeddings"] = tied
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(LlamaConfig(**cfg))


def _batch(b=3, t=7, k=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    lengths = [t, 4, 1][:b]
    attn = torch.tensor([[1] * n + [0] * (t - n) for n in lengths])
    ids = torch.randint(0, V_MODEL, (b, t), generator=g)
    labels = torch.where(attn.bool(), torch.randint(0, V_MODEL, (b, t), generator=g), torch.full((b, t), -100))
    t_ids = torch.stack([torch.randperm(V_MODEL, generator=g)[:k].sort().values for _ in range(b * t)]).reshape(b, t, k)
    t_mask = attn.bool()[..., None].expand(b, t, k).clone()
    t_mask[0, 2] = False  # a real token without teacher entries
    t_logp = torch.where(t_mask, torch.log_softmax(torch.randn(b, t, k, generator=g), -1), torch.tensor(float("-inf")))
    t_tail = torch.where(
        attn.bool(), torch.log(torch.rand(b, t, generator=g) * 0.3 + 0.01), torch.tensor(float("-inf"))
    )
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "labels": labels,
        "teacher_ids": t_ids,
        "teacher_logp": t_logp,
        "teacher_mask": t_mask,
        "teacher_log_tail": t_tail,
        "position_mask": attn.bool() & t_mask.any(-1),
    }


def _model(fused: bool, tied: bool, mode="offline", **kw):
    from trainer.config import DistillConfig
    from trainer.model import DistillationModel

    teacher = _student(False, seed=9) if mode == "live" else None
    distill = DistillConfig(
        mode=mode, teacher="live-teacher" if mode == "live" else None, fused_head=fused, chunk_size=5, top_k=4, **kw
    )
    return DistillationModel(_student(tied), distill, teacher, alpha=0.0 if mode == "none" else 0.8)


@pytest.mark.parametrize(
    "mode,tied,kind,support",
    [
        ("offline", True, "forward_kl", "split"),
        ("offline", False, "reverse_kl", "full"),
        ("live", True, "mse", "kept"),
        ("none", True, "forward_kl", "split"),
    ],
)
def test_model_fused_equals_unfused(mode, tied, kind, support):
    """The same student through DistillationModel with fused_head true and false: losses (total, lm,
    kd) and every parameter's gradient agree (float32); the fused forward returns [B, T, H]."""
    batch = _batch()
    got = []
    for fused in (True, False):
        model = _model(fused, tied, mode, kind=kind, support=support)
        out = model(batch)
        assert out.shape[-1] == (16 if fused else V_MODEL)
        losses = model.loss(out, batch)
        losses["total"].backward()
        got.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (fl, fg), (ul, ug) = got
    for key in ("total", "lm", "kd"):
        _close(fl[key].detach(), ul[key].detach(), 1e-5)
    assert fg.keys() == ug.keys() and len(fg) > 3
    for name in fg:
        _close(fg[name], ug[name], 1e-5)


def test_eval_metrics_without_logits():
    """Held-out cross-entropy, perplexity and bits per byte through eval_forward / update_metric equal
    the unfused metrics (Composer's LanguageCrossEntropy / LanguagePerplexity on the full logits)."""
    batches = [_batch(seed=s) for s in (3, 4)]
    for b in batches:  # bytes of each label token (1..4, a UTF-8 character's range), 0 where ignored
        b["label_bytes"] = torch.where(b["labels"] == -100, 0, b["labels"] % 4 + 1)
    values = []
    for fused in (True, False):
        model = _model(fused, True)
        model.eval()
        metrics = model.get_metrics()
        with torch.no_grad():
            for b in batches:
                out = model.eval_forward(b)
                if fused:
                    assert set(out) == {"lm_sum", "tokens"}
                for m in metrics.values():
                    model.update_metric(b, out, m)
        values.append({k: float(m.compute()) for k, m in metrics.items()})
    assert set(values[0]) == {"LanguageCrossEntropy", "LanguagePerplexity", "BitsPerByte"}
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    ce, bpb = values[0]["LanguageCrossEntropy"], values[0]["BitsPerByte"]
    labels = torch.cat([b["labels"].flatten() for b in batches])
    nbytes = torch.cat([b["label_bytes"].flatten() for b in batches])
    assert bpb == pytest.approx(ce * int((labels != -100).sum()) / int(nbytes.sum()) / math.log(2), rel=1e-6)


def test_refuses_heads_that_are_not_a_plain_projection():
    """Soft-capping / logit scales in the config, a head that is not nn.Linear, and a student whose
    forward changes the logits some other way are refused when the model is built, by name."""
    from trainer.config import DistillConfig
    from trainer.errors import SettingError
    from trainer.model import DistillationModel

    distill = DistillConfig(mode="none")
    for attr, value in (("final_logit_softcapping", 30.0), ("logit_scale", 0.0625), ("logits_scaling", 8.0)):
        student = _student(True)
        setattr(student.config, attr, value)
        with pytest.raises(SettingError, match=f"distill.fused_head: .*{attr}"):
            DistillationModel(student, distill)
    student = _student(False)
    student.lm_head = torch.nn.Sequential(torch.nn.Linear(16, V_MODEL), torch.nn.Tanh())
    with pytest.raises(SettingError, match="get_output_embeddings.. is Sequential"):
        DistillationModel(student, distill)

    class Scaled(type(_student(False))):
        def forward(self, *a, **kw):
            out = super().forward(*a, **kw)
            out.logits = out.logits * 0.5
            return out

    student = _student(False)
    student.__class__ = Scaled
    with pytest.raises(SettingError, match="probe input"):
        DistillationModel(student, distill)
    DistillationModel(student, DistillConfig(mode="none", fused_head=False))  # the way out


@pytest.mark.slow
def test_two_processes_tied_head(tmp_path):
    """DDP on 2 processes (composer -n 2, gloo) with the output projection tied to the embedding:
    the averaged gradient of the fused path equals the single-process unfused gradient."""
    import dist_loss_worker as w

    batch = w.make_batch()
    model = w.make_model("split", fused_head=False, tied=True)
    model.loss(model(batch), batch)["total"].backward()
    single = {n: p.grad.clone() for n, p in model.named_parameters()}
    got = w.launch_two_ranks(tmp_path, "ddp", "fused-tied")
    assert (
        "student.decoder.emb.weight" in got["grads"] and "student.out.weight" not in got["grads"]
    )  # one tied parameter
    for n, g in single.items():
        torch.testing.assert_close(got["grads"][n], g, rtol=1e-5, atol=1e-7)
