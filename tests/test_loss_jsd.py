"""kind jsd (the generalised Jensen-Shannon divergence, `trainer.losses.kd_loss`) against a dense
float64 autograd reference written from its definition, position by position: values AND gradients,
every support, tau, tail; gradcheck; its endpoints; its settings."""

import math

import pytest
import torch
from test_losses import FORMS, case_seed, distill_case, kd_case, make_case, reference

from trainer.losses import LossSpec

BETAS = (0.1, 0.5, 0.9)


def _jsd(p, q, beta):
    """JSD_beta(P || q) = beta KL(P || M) + (1 - beta) KL(q || M), M = beta P + (1 - beta) q (TRL's GKD
    convention), over aligned buckets; zero masses contribute 0."""
    m = beta * p + (1.0 - beta) * q
    pz, qz = p > 0, q > 0
    return beta * (p[pz] * (p[pz] / m[pz]).log()).sum() + (1.0 - beta) * (q[qz] * (q[qz] / m[qz]).log()).sum()


def _kl(p, q):
    nz = p > 0
    return (p[nz] * (p[nz] / q[nz]).log()).sum()


def jsd_reference(logits, ids, logp, mask, log_tail, position_mask, beta, tau, support, tail, tau_squared=False):
    """The per-token mean of JSD_beta over valid positions, dense (full vocabulary) and literal, in
    float64 torch so that autograd gives the reference gradient."""
    x = logits.double()
    v = x.shape[-1]
    losses = []
    for bi in range(x.shape[0]):
        for ti in range(x.shape[1]):
            m = mask[bi, ti]
            if not position_mask[bi, ti] or not m.any():
                continue
            kept = ids[bi, ti][m]
            out = torch.ones(v, dtype=torch.bool)
            out[kept] = False
            t = math.exp(float(log_tail[bi, ti]))
            f = torch.softmax(logp[bi, ti][m].double() / tau, -1)  # teacher F over the kept set
            s = x[bi, ti] / tau
            if support == "kept":
                loss = _jsd(f, torch.softmax(s[kept], -1), beta)
            elif support == "full" and not tail:
                p = torch.zeros(v, dtype=torch.float64)
                p[kept] = f  # zero outside the kept set
                loss = _jsd(p, torch.softmax(s, -1), beta)
            elif support == "full":
                q = torch.softmax(s, -1)
                p_b = torch.cat([f * (1 - t), torch.tensor([t], dtype=torch.float64)])
                q_b = torch.cat([q[kept], q[out].sum()[None]])
                if not out.any():  # the whole vocabulary kept: no bucket
                    p_b, q_b = p_b[:-1], q_b[:-1]
                loss = _jsd(p_b, q_b, beta)
            else:  # split: the chain rule applied to both KLs of the JSD
                q1 = torch.softmax(x[bi, ti], -1)
                big_q, q_o = q1[kept].sum(), q1[out].sum()
                qt = torch.softmax(s[kept], -1)
                split_p = torch.tensor([1 - t, t], dtype=torch.float64)
                split_q = torch.stack([big_q, q_o])
                if not out.any():
                    split_p, split_q = split_p[:1], split_q[:1]
                a, b = beta * (1 - t), (1 - beta) * big_q
                mix = (a * f + b * qt) / (a + b)
                loss = _jsd(split_p, split_q, beta) + a * _kl(f, mix) + b * _kl(qt, mix)
            losses.append(loss)
    mean = torch.stack(losses).mean()
    return mean * (tau * tau if tau_squared else 1.0)


def _both(case, beta, tau, support, tail, **kw):
    """(fused value, fused gradient, reference value, reference gradient) in float64."""
    logits = case[0]
    lg = logits.clone().requires_grad_(True)
    res = kd_case(lg, *case[1:], kind="jsd", beta=beta, tau=tau, tail=tail, support=support, **kw)
    res.loss.backward()
    lr = logits.clone().requires_grad_(True)
    ref = jsd_reference(lr, *case[1:], beta, tau, support, tail, tau_squared=kw.get("tau_squared", False))
    ref.backward()
    return res, lg.grad, ref, lr.grad


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("support,tail", FORMS)
def test_jsd_matches_dense_autograd_reference(beta, tau, support, tail):
    """Value (float64: 1e-10; float32: 1e-5) and gradient against autograd through the literal
    definition, with padding rows, positions without teacher entries and zero / non-zero tails."""
    case = make_case(seed=case_seed((beta, tau, support, tail)), dtype=torch.float64)
    res, grad, ref, ref_grad = _both(case, beta, tau, support, tail)
    assert res.loss.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-13)
    assert int(res.num_positions) == 2 * 6 - 2
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    f32 = (case[0].float(), case[1], case[2].float(), case[3], case[4].float(), case[5])
    r32 = kd_case(*f32, kind="jsd", beta=beta, tau=tau, tail=tail, support=support)
    assert r32.loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("support,tail", FORMS)
def test_jsd_tau_squared_and_chunks(support, tail):
    """tau_squared multiplies the whole term by tau^2 (value and gradient); chunk sizes that do not
    divide the rows change nothing."""
    case = make_case(b=3, t=7, seed=21, dtype=torch.float64)
    res, grad, ref, ref_grad = _both(case, 0.3, 1.7, support, tail, tau_squared=True, chunk_size=4)
    assert res.loss.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    out = []
    for chunk in (None, 1, 4, 1000):
        lg = case[0].clone().requires_grad_(True)
        r = kd_case(lg, *case[1:], kind="jsd", beta=0.3, tau=1.7, tail=tail, support=support, chunk_size=chunk)
        r.loss.backward()
        out.append((r.loss.detach(), lg.grad))
    plain = out[0][0]
    assert res.loss.item() == pytest.approx(1.7**2 * plain.item(), rel=1e-12)
    for loss, g in out[1:]:
        torch.testing.assert_close(loss, plain, rtol=1e-12, atol=0)
        torch.testing.assert_close(g, out[0][1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("support,tail", FORMS)
def test_jsd_gradcheck(support, tail):
    # positions: (0,0) valid, (0,1) no kept entry, (1,0) valid, (1,1) masked by position_mask
    logits, ids, logp, mask, lt, pm = make_case(b=2, t=2, v=6, k=3, seed=2, dtype=torch.float64, scale=1.0)
    lg = logits.clone().requires_grad_(True)

    def fn(x):
        return kd_case(
            x, ids, logp, mask, lt, pm, kind="jsd", beta=0.3, tau=1.3, tail=tail, support=support, chunk_size=1
        ).loss

    assert torch.autograd.gradcheck(fn, (lg,), eps=1e-6, atol=1e-6)  # full Jacobian: 24 inputs


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5, 1.5])  # shared softmax, exp squared (2, 0.5), two exponentials
@pytest.mark.parametrize("support,tail", FORMS)
def test_jsd_distill_paths_match_autograd_reference(tau, support, tail):
    """LM + KD fused, every exponential path: value and gradient of (1 - alpha) CE + alpha JSD against
    autograd through the dense reference; gradcheck."""
    logits, ids, logp, mask, lt, pm = make_case(b=2, t=5, v=11, k=4, seed=31, dtype=torch.float64)
    labels = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    labels[1, 2] = -100
    lg = logits.clone().requires_grad_(True)
    res = distill_case(
        lg,
        labels,
        ids,
        logp,
        mask,
        lt,
        pm,
        alpha=0.7,
        kind="jsd",
        beta=0.6,
        tau=tau,
        tail=tail,
        support=support,
        chunk_size=3,
    )
    res.loss.backward()
    lr = logits.clone().requires_grad_(True)
    kd_ref = jsd_reference(lr, ids, logp, mask, lt, pm, 0.6, tau, support, tail)
    lm_ref = torch.nn.functional.cross_entropy(lr.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    (0.3 * lm_ref + 0.7 * kd_ref).backward()
    assert res.kd.item() == pytest.approx(kd_ref.item(), rel=1e-10, abs=1e-13)
    assert res.lm.item() == pytest.approx(lm_ref.item(), rel=1e-12)
    torch.testing.assert_close(lg.grad, lr.grad, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda x: (
            distill_case(
                x,
                labels,
                ids,
                logp,
                mask,
                lt,
                pm,
                alpha=0.7,
                kind="jsd",
                beta=0.6,
                tau=tau,
                tail=tail,
                support=support,
                chunk_size=4,
            ).loss
        ),
        (logits.clone().requires_grad_(True),),
        eps=1e-6,
        atol=1e-6,
        fast_mode=True,
    )


@pytest.mark.parametrize("support,tail", FORMS)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_jsd_endpoints_are_forward_and_reverse_kl(support, tail, tau):
    """beta = 0 IS forward_kl and beta = 1 IS reverse_kl, bit for bit (value and gradient), in every
    support; the mixture form itself tends to 0 at both ends (so the loss jumps there, as in TRL)."""
    case = make_case(seed=7, dtype=torch.float64)
    for beta, kind in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        grads = []
        for spec in ({"kind": "jsd", "beta": beta}, {"kind": kind}):
            lg = case[0].clone().requires_grad_(True)
            r = kd_case(lg, *case[1:], tau=tau, tail=tail, support=support, **spec)
            r.loss.backward()
            grads.append((r.loss.detach(), lg.grad))
        assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
        ref, _, _ = reference(*case, kind, tau, tail, support=support)
        assert grads[0][0].item() == pytest.approx(ref, rel=1e-9)
        near = kd_case(*case, kind="jsd", beta=abs(beta - 1e-7), tau=tau, tail=tail, support=support).loss
        assert 0.0 <= near.item() < 1e-5 < ref


def test_jsd_split_at_tau_1_is_the_exact_bucket_jsd():
    """At tau = 1 the chain-rule split equals the JSD over the K + 1 buckets (value and gradient)."""
    logits, ids, logp, mask, lt, pm = make_case(seed=41, dtype=torch.float64)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    split = kd_case(a, ids, logp, mask, lt, pm, kind="jsd", beta=0.4, tau=1.0, support="split").loss
    bucket = kd_case(b, ids, logp, mask, lt, pm, kind="jsd", beta=0.4, tau=1.0, support="full", tail=True).loss
    split.backward()
    bucket.backward()
    assert split.item() == pytest.approx(bucket.item(), rel=1e-12)
    torch.testing.assert_close(a.grad, b.grad)
    s2 = kd_case(logits, ids, logp, mask, lt, pm, kind="jsd", beta=0.4, tau=2.0, support="split").loss
    b2 = kd_case(logits, ids, logp, mask, lt, pm, kind="jsd", beta=0.4, tau=2.0, support="full", tail=True).loss
    assert abs(s2.item() - b2.item()) > 1e-3


@pytest.mark.parametrize("support,tail", FORMS)
def test_jsd_edge_rows(support, tail):
    """A row whose kept set is the whole vocabulary (no out-of-set mass), a teacher tail of almost
    all the mass, a student far below the teacher's ids (float32 masses underflow) and top-1-only
    rows: finite values and gradients, equal to the reference; over a single kept id the
    renormalised student matches exactly (loss 0)."""
    logits, ids, logp, mask, lt, pm = make_case(b=2, t=3, v=3, k=3, seed=9, dtype=torch.float64)
    ids[0, 0] = torch.tensor([0, 1, 2])
    logp[0, 0] = torch.log_softmax(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), -1)
    mask[0, 0] = True
    lt[0, 0] = float("-inf")
    lt[1, 0] = math.log(1 - 1e-9)
    logits[1, 1] = torch.tensor([-120.0, -130.0, 40.0], dtype=torch.float64)
    case = (logits, ids, logp, mask, lt, pm)
    res, grad, ref, ref_grad = _both(case, 0.5, 1.0, support, tail)
    assert torch.isfinite(res.loss) and torch.isfinite(grad).all()
    assert res.loss.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-10)
    f32 = kd_case(
        logits.float().requires_grad_(True),
        ids,
        logp.float(),
        mask,
        lt.float(),
        pm,
        kind="jsd",
        tail=tail,
        support=support,
    )
    f32.loss.backward()
    assert torch.isfinite(f32.loss) and f32.loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    top1 = make_case(k=3, k1=True, seed=5, dtype=torch.float64)
    r1, g1, ref1, ref_g1 = _both(top1, 0.5, 2.0, support, tail)
    assert r1.loss.item() == pytest.approx(ref1.item(), rel=1e-10, abs=1e-13)
    torch.testing.assert_close(g1, ref_g1, rtol=1e-9, atol=1e-12)
    if support == "kept":
        assert r1.loss.item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# the settings: LossSpec, the config, the model's spec


def test_jsd_loss_spec():
    assert LossSpec(kind="jsd").beta == 0.5 and LossSpec(kind="jsd", beta=1).beta == 1.0
    assert LossSpec(kind="jsd") == LossSpec(kind="jsd", beta=0.5)
    assert LossSpec(kind="forward_kl").beta is None
    rows = [LossSpec(kind="jsd", beta=b).row_kind for b in (0.0, 1.0, 0.2)] + [LossSpec(kind="mse").row_kind]
    assert rows == ["forward_kl", "reverse_kl", "jsd", "mse"]
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=r"^beta must be a number in \[0, 1\]"):
            LossSpec(kind="jsd", beta=bad)
    with pytest.raises(ValueError, match=r"^beta only applies to kind 'jsd', got kind 'reverse_kl'"):
        LossSpec(kind="reverse_kl", beta=0.5)


def test_jsd_config_reaches_the_model():
    from make_dataset import tiny_llama_config
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.config import ConfigError, load_config
    from trainer.model import DistillationModel

    d = load_config("pd_best", ["distill.kind=jsd"]).distill
    assert d.kind == "jsd" and d.beta is None
    d = load_config("pd_best", ["distill.kind=jsd", "distill.beta=0.25"]).distill
    student = LlamaForCausalLM(LlamaConfig(**tiny_llama_config()))
    spec = DistillationModel(student, d).spec
    assert (spec.kind, spec.beta, spec.support, spec.tau) == ("jsd", 0.25, d.support, d.tau)
    assert DistillationModel(student, load_config("pd_best", ["distill.kind=jsd"]).distill).spec.beta == 0.5
    only_jsd = r"^distill\.beta: only applies with distill\.kind: jsd \(kind is 'forward_kl'\)$"
    with pytest.raises(ConfigError, match=only_jsd):
        load_config("pd_best", ["distill.beta=0.3"])
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(ConfigError, match=r"^distill\.beta: "):
            load_config("pd_best", ["distill.kind=jsd", f"distill.beta={bad}"])
