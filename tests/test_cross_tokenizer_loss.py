"""The cross-tokenizer losses (`trainer.cross_tokenizer`, `trainer.cross_tokenizer_pairs`) against
dense references written plainly here (full logits, autograd), gradcheck, an allocation count that
shows no [rows, V] tensor, and the identical-tokenizer reductions (GOLD's exact part is the
same-tokenizer KD with support "kept", ALM is 0 with a 0 gradient when the student is the teacher).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from largest_tensor import LargestTensor

sys.path.insert(0, os.path.dirname(__file__))
from test_losses import make_case  # noqa: E402

from trainer.cross_tokenizer import alm_loss, binary_kl, rows_logits_loss, token_logprobs  # noqa: E402
from trainer.cross_tokenizer_pairs import check_vocab_maps, gold_loss, next_byte_loss  # noqa: E402
from trainer.losses import LossSpec, TeacherBatch, kd_loss  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
B, S, T, H, K, VS, VT = 2, 7, 6, 5, 4, 11, 13
# ascending (teacher position, student position) pairs per sequence; -1 pads to C
PAIRS = [[(0, 0), (1, 2), (3, 3), (4, 5)], [(0, 1), (2, 2), (4, 5)]]


def _close(got, ref, rel):
    torch.testing.assert_close(got, ref, rtol=rel, atol=rel * float(ref.abs().max()) + 1e-30)


def pair_tensors(pairs, c=5):
    pt = torch.full((len(pairs), c), -1, dtype=torch.int64)
    ps = torch.full((len(pairs), c), -1, dtype=torch.int64)
    for b, seq in enumerate(pairs):
        for i, (ti, si) in enumerate(seq):
            pt[b, i], ps[b, i] = ti, si
    return pt, ps


def chunk_ids(pair: torch.Tensor, length: int) -> torch.Tensor:
    """Position p belongs to chunk c when pair c <= p < pair c+1 (-1 otherwise)."""
    out = torch.full((pair.shape[0], length), -1, dtype=torch.int64)
    for b in range(pair.shape[0]):
        row = [int(x) for x in pair[b] if x >= 0]
        for c in range(len(row) - 1):
            out[b, row[c] : row[c + 1]] = c
    return out


def head(dtype, *, b=B, s=S, v=VS, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, s, H, generator=g, dtype=dtype)
    weight = torch.randn(v, H, generator=g, dtype=dtype) * 0.8
    bias_t = torch.randn(v, generator=g, dtype=dtype) if bias else None
    return hidden, weight, bias_t


def leaves_of(hidden, weight, bias):
    return [x.clone().requires_grad_(True) for x in (hidden, weight) + ((bias,) if bias is not None else ())]


def grads_of(fn, hidden, weight, bias):
    """(value, grads w.r.t. hidden, weight[, bias]) of fn(h, w, b) -> scalar."""
    leaves = leaves_of(hidden, weight, bias)
    out = fn(leaves[0], leaves[1], leaves[2] if bias is not None else None)
    return out.detach(), torch.autograd.grad(out, leaves)


def teacher_case(dtype, *, b=B, t=T, v=VT, k=K, seed=1):
    _, ids, logp, mask, lt, pm = make_case(b=b, t=t, v=v, k=k, seed=seed, dtype=dtype)
    return TeacherBatch(ids, logp, mask, lt, pm)


def maps(seed=2):
    g = torch.Generator().manual_seed(seed)
    exact = torch.randint(0, VS, (VT,), generator=g)
    exact[torch.randperm(VT, generator=g)[:5]] = -1  # no identical byte string
    exact[1], exact[2] = 4, 4  # two teacher ids with one byte string (added tokens)
    sfb = torch.randint(0, 257, (VS,), generator=g)
    sfb[:3] = torch.tensor([7, 9, 256])
    tfb = sfb[torch.randint(0, VS, (VT,), generator=g)]  # a student covers every byte (check_byte_coverage)
    return exact, tfb, sfb


# ---------------------------------------------------------------------------------------------
# dense references


def ref_logits(h, w, b):
    return h @ w.t() + (b if b is not None else 0)


def ref_alm(h, w, b, labels, s_chunk, next_logp, t_chunk, tau, eps=1e-6):
    lsm = torch.log_softmax(ref_logits(h, w, b), -1)
    total, count = 0.0, 0
    for bi in range(h.shape[0]):
        for c in range(max(h.shape[1], t_chunk.shape[1])):
            s_pos = [p for p in range(h.shape[1]) if s_chunk[bi, p] == c]
            t_pos = [p for p in range(t_chunk.shape[1]) if t_chunk[bi, p] == c]
            if not s_pos or not t_pos:
                continue
            if any(labels[bi, p] == -100 for p in s_pos) or any(torch.isnan(next_logp[bi, p]) for p in t_pos):
                continue
            lt = sum(next_logp[bi, p].to(lsm.dtype) for p in t_pos)
            ls = sum(lsm[bi, p, labels[bi, p]] for p in s_pos)
            lp, lq = lt.clamp(max=0) / tau - eps, ls.clamp(max=0) / tau - eps
            p, q = lp.exp(), lq.exp()
            total = total + p * (lp - lq) + (1 - p) * (torch.log1p(-p) - torch.log1p(-q))
            count += 1
    return total, count


def teacher_f(teacher, bi, ti, tau, dtype):
    m = teacher.mask[bi, ti]
    return teacher.ids[bi, ti][m], torch.softmax(teacher.logp[bi, ti][m].to(dtype) / tau, -1)


def aligned(teacher, pt, ps):
    """(b, teacher position, student position) of every pair the losses use."""
    valid = teacher.valid_positions()
    return [
        (bi, int(pt[bi, c]), int(ps[bi, c]))
        for bi in range(pt.shape[0])
        for c in range(pt.shape[1])
        if pt[bi, c] >= 0 and ps[bi, c] >= 0 and valid[bi, pt[bi, c]]
    ]


def ref_gold(h, w, b, teacher, pt, ps, exact, tau):
    logits = ref_logits(h, w, b)
    student_matched = torch.zeros(w.shape[0], dtype=torch.bool)
    student_matched[exact[exact >= 0]] = True
    matched_sum, unmatched_sum = 0.0, 0.0
    rows = aligned(teacher, pt, ps)
    for bi, ti, si in rows:
        ids, f = teacher_f(teacher, bi, ti, tau, logits.dtype)
        q = torch.softmax(logits[bi, si] / tau, -1)
        mass = {}
        for i, fi in zip(ids.tolist(), f):
            if exact[i] >= 0:
                mass[int(exact[i])] = mass.get(int(exact[i]), 0.0) + fi
        if mass:
            sids = list(mass)
            pm = torch.stack([mass[s] for s in sids])
            pm = pm / pm.sum()
            qm = q[sids] / q[sids].sum()
            matched_sum = matched_sum + (pm * (pm.log() - qm.log())).sum()
        p_u = torch.stack([fi for i, fi in zip(ids.tolist(), f) if exact[i] < 0] + [f.new_zeros(())])
        p_u = torch.nn.functional.pad(p_u.sort(descending=True).values, (0, K))[:K]
        q_u = torch.nn.functional.pad(q[~student_matched].sort(descending=True).values, (0, K))[:K]
        unmatched_sum = unmatched_sum + (p_u - q_u).abs().sum()
    w_m = float((exact >= 0).sum()) / exact.numel()
    return w_m * matched_sum + (1 - w_m) * unmatched_sum, len(rows), matched_sum, unmatched_sum


def ref_next_byte(h, w, b, teacher, pt, ps, tfb, sfb, tau):
    logits = ref_logits(h, w, b)
    total = 0.0
    rows = aligned(teacher, pt, ps)
    for bi, ti, si in rows:
        ids, f = teacher_f(teacher, bi, ti, tau, logits.dtype)
        p = torch.zeros(257, dtype=logits.dtype).index_add(0, tfb[ids], f)
        q = torch.zeros(257, dtype=logits.dtype).index_add(0, sfb, torch.softmax(logits[bi, si] / tau, -1))
        live = p > 0
        total = total + (p[live] * (p[live].log() - q[live].log())).sum()
    return total, len(rows)


def alm_case(dtype, seed=0):
    pt, ps = pair_tensors(PAIRS)
    t_chunk, s_chunk = chunk_ids(pt, T), chunk_ids(ps, S)
    g = torch.Generator().manual_seed(seed + 7)
    labels = torch.randint(0, VS, (B, S), generator=g)
    labels[0, 4] = -100  # inside chunk 2 of sequence 0 (student positions 3, 4): skipped
    next_logp = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    next_logp[1, 1] = float("nan")  # chunk 0 of sequence 1: skipped
    next_logp[:, T - 1] = float("nan")  # no next token
    return labels, s_chunk, next_logp, t_chunk


# ---------------------------------------------------------------------------------------------
# values and gradients


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows,bias", [(1, True), (4, False), (100, True)])
def test_token_logprobs_match_log_softmax(rows, bias, dtype):
    """14 rows in chunks of 1, 4 (short last chunk), all: log q(target), 0 at ignored rows; gradients."""
    hidden, weight, b = head(dtype, bias=bias)
    n = B * S
    targets = torch.randint(0, VS, (n,), generator=torch.Generator().manual_seed(3))
    targets[[2, 9]] = -100
    g = torch.randn(n, dtype=dtype, generator=torch.Generator().manual_seed(4))

    def fused(h, w, bb):
        return (token_logprobs(h.reshape(n, H), w, bb, targets, rows) * g).sum()

    def dense(h, w, bb):
        lp = torch.log_softmax(ref_logits(h.reshape(n, H), w, bb), -1).gather(1, targets.clamp_min(0)[:, None])[:, 0]
        return (torch.where(targets == -100, 0.0, lp) * g).sum()

    (fv, fg), (dv, dg) = grads_of(fused, hidden, weight, b), grads_of(dense, hidden, weight, b)
    _close(fv, dv, TOL[dtype])
    for x, y in zip(fg, dg):
        _close(x, y, TOL[dtype])
    lp = token_logprobs(hidden.reshape(n, H), weight, b, targets, rows)
    assert lp.dtype == dtype and float(lp[2]) == 0.0 and float(lp[9]) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau,rows", [(1.0, 3), (4.0, 5), (100.0, 100)])
def test_alm_matches_dense_reference(tau, rows, dtype):
    """Chunks of several tokens on both sides, a chunk skipped for a -100 label and one for a NaN
    teacher position, positions outside every chunk; values and gradients."""
    hidden, weight, b = head(dtype, seed=5)
    labels, s_chunk, next_logp, t_chunk = alm_case(dtype)
    res = alm_loss(hidden, weight, b, labels, s_chunk, next_logp, t_chunk, tau=tau, rows=rows)
    ref, count = ref_alm(hidden, weight, b, labels, s_chunk, next_logp, t_chunk, tau)
    assert int(res.count) == count == 3  # 3 + 2 closed chunks, one skipped in each sequence
    (fv, fg) = grads_of(
        lambda h, w, bb: alm_loss(h, w, bb, labels, s_chunk, next_logp, t_chunk, tau=tau, rows=rows).sum,
        hidden,
        weight,
        b,
    )
    (dv, dg) = grads_of(
        lambda h, w, bb: ref_alm(h, w, bb, labels, s_chunk, next_logp, t_chunk, tau)[0], hidden, weight, b
    )
    _close(fv, dv, TOL[dtype])
    _close(res.sum.detach(), ref.detach(), TOL[dtype])
    for x, y in zip(fg, dg):
        _close(x, y, TOL[dtype])


def test_binary_kl_is_stable_at_both_ends():
    """Chunk probabilities near 0 and near 1 (float32): finite, >= 0, equal to a float64 evaluation."""
    lp = torch.tensor([-1e-6, -1e-3, -0.5, -5.0, -60.0, -1e-6], dtype=torch.float32)
    lq = torch.tensor([-2e-6, -0.7, -0.4, -9.0, -61.0, -80.0], dtype=torch.float32)
    got = binary_kl(lp, lq)
    ref = binary_kl(lp.double(), lq.double())
    assert torch.isfinite(got).all() and (got >= 0).all()
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-12)
    p, q = lp.double().exp(), lq.double().exp()
    plain = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    torch.testing.assert_close(ref[1:4], plain[1:4], rtol=1e-9, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau,rows,weights", [(1.0, 2, None), (2.0, 3, (0.3, 0.9)), (0.5, 100, None)])
def test_gold_matches_dense_reference(tau, rows, weights, dtype):
    """Exact-match KL (a duplicated byte string, ids without a match) + ULD sorted L1, adaptive and
    fixed weights, padding pairs and a pair at a teacher position without entries; gradients."""
    hidden, weight, b = head(dtype, seed=6)
    teacher = teacher_case(dtype)
    teacher.ids[1, 2, :3] = torch.tensor([1, 2, 10])  # ids 1 and 2 share student id 4, at pair (2, 2)
    pt, ps = pair_tensors(PAIRS)
    assert pt[0, 1] == 1 and not teacher.mask[0, 1].any()  # a pair at a teacher position without entries
    exact, _, _ = maps()
    mw, uw = weights if weights else (None, None)

    def fused(h, w, bb):
        return gold_loss(h, w, bb, teacher, pt, ps, exact, tau=tau, matched_weight=mw, unmatched_weight=uw, rows=rows)

    res = fused(hidden, weight, b)
    ref_sum, count, ref_m, ref_u = ref_gold(hidden, weight, b, teacher, pt, ps, exact, tau)
    assert int(res.count) == count == 6
    _close(res.matched.detach(), ref_m, TOL[dtype])
    _close(res.unmatched.detach(), ref_u, TOL[dtype])
    if weights:
        ref_sum = mw * ref_m + uw * ref_u
    _close(res.sum.detach(), ref_sum, TOL[dtype])
    fv, fg = grads_of(lambda h, w, bb: fused(h, w, bb).sum, hidden, weight, b)

    def dense(h, w, bb):
        total, _, m, u = ref_gold(h, w, bb, teacher, pt, ps, exact, tau)
        return mw * m + uw * u if weights else total

    dv, dg = grads_of(dense, hidden, weight, b)
    for x, y in zip(fg, dg):
        _close(x, y, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau,rows", [(1.0, 3), (2.0, 100)])
def test_next_byte_matches_dense_reference(tau, rows, dtype):
    hidden, weight, b = head(dtype, seed=8)
    teacher = teacher_case(dtype, seed=9)
    pt, ps = pair_tensors(PAIRS)
    _, tfb, sfb = maps()
    res = next_byte_loss(hidden, weight, b, teacher, pt, ps, tfb, sfb, tau=tau, rows=rows)
    ref, count = ref_next_byte(hidden, weight, b, teacher, pt, ps, tfb, sfb, tau)
    assert int(res.count) == count
    _close(res.sum.detach(), ref.detach(), TOL[dtype])
    _, fg = grads_of(
        lambda h, w, bb: next_byte_loss(h, w, bb, teacher, pt, ps, tfb, sfb, tau=tau, rows=rows).sum, hidden, weight, b
    )
    _, dg = grads_of(lambda h, w, bb: ref_next_byte(h, w, bb, teacher, pt, ps, tfb, sfb, tau)[0], hidden, weight, b)
    for x, y in zip(fg, dg):
        _close(x, y, TOL[dtype])


def test_gradcheck_every_loss():
    """torch.autograd.gradcheck in float64 on small cases (chunks of 3 rows)."""
    hidden, weight, b = head(torch.float64, seed=10)
    labels, s_chunk, next_logp, t_chunk = alm_case(torch.float64)
    teacher = teacher_case(torch.float64, seed=11)
    pt, ps = pair_tensors(PAIRS)
    exact, tfb, sfb = maps()
    targets = labels.reshape(-1)
    fns = {
        "token_logprobs": lambda h, w, bb: token_logprobs(h.reshape(-1, H), w, bb, targets, 3),
        "alm": lambda h, w, bb: alm_loss(h, w, bb, labels, s_chunk, next_logp, t_chunk, tau=2.0, rows=3).sum,
        "gold": lambda h, w, bb: gold_loss(h, w, bb, teacher, pt, ps, exact, tau=1.5, rows=3).sum,
        "next_byte": lambda h, w, bb: next_byte_loss(h, w, bb, teacher, pt, ps, tfb, sfb, tau=1.5, rows=3).sum,
    }
    for name, fn in fns.items():
        leaves = tuple(leaves_of(hidden, weight, b))
        assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, fast_mode=name != "alm"), name


def test_bfloat16_autocast_matches_the_unfused_head():
    """Under autocast the projection runs in bfloat16 as the student's own nn.Linear would; log q and
    the gradients (float32 parameters get float32 gradients) agree with the unfused head to bfloat16
    precision."""
    hidden, weight, b = head(torch.float32, seed=21)
    targets = torch.randint(0, VS, (B * S,), generator=torch.Generator().manual_seed(22))
    got = []
    for fused in (True, False):
        leaves = leaves_of(hidden, weight, b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = leaves[0].reshape(-1, H)
            if fused:
                lp = token_logprobs(h, leaves[1], leaves[2], targets, 5)
            else:
                logits = torch.nn.functional.linear(h, leaves[1], leaves[2]).float()
                lp = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
        lp.sum().backward()
        assert lp.dtype == torch.float32 and all(x.grad.dtype == torch.float32 for x in leaves)
        got.append([lp.detach()] + [x.grad for x in leaves])
    for x, y in zip(*got):
        torch.testing.assert_close(x, y, rtol=2e-2, atol=2e-2 * float(y.abs().max()))


# ---------------------------------------------------------------------------------------------
# identical tokenizers


def identity_case(dtype, seed=12, tau=1.0):
    """Teacher and student share the vocabulary (V_T) and the tokens: every position is a pair."""
    hidden, weight, b = head(dtype, v=VT, s=T, seed=seed)
    teacher = teacher_case(dtype, seed=seed + 1)
    pos = torch.arange(T).repeat(B, 1)
    return hidden, weight, b, teacher, pos


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_gold_with_identical_tokenizers_is_kd_on_the_kept_set(tau, dtype):
    """exact_map the identity: the matched part is kd_loss(forward_kl, support kept), its gradient
    too; the ULD part is 0 and the adaptive weights are (1, 0)."""
    hidden, weight, b, teacher, pos = identity_case(dtype)
    exact = torch.arange(VT)

    def ours(h, w, bb):
        res = gold_loss(h, w, bb, teacher, pos, pos, exact, tau=tau, rows=4)
        assert float(res.unmatched) == 0.0
        return res.sum / res.count

    def same_tokenizer(h, w, bb):
        return kd_loss(ref_logits(h, w, bb), teacher, LossSpec(kind="forward_kl", support="kept", tau=tau)).loss

    (fv, fg), (kv, kg) = grads_of(ours, hidden, weight, b), grads_of(same_tokenizer, hidden, weight, b)
    assert float(kv) > 0
    _close(fv, kv, TOL[dtype])
    for x, y in zip(fg, kg):
        _close(x, y, TOL[dtype])


@pytest.mark.parametrize("tau", [1.0, 100.0])
def test_alm_is_zero_when_the_student_is_the_teacher(tau):
    """Single-token chunks, teacher_next_logp = the student's own log q(label): loss and gradient 0;
    a different teacher gives a loss > 0."""
    hidden, weight, b, _, pos = identity_case(torch.float64)
    chunk = torch.where(pos < T - 1, pos, -1)
    labels = torch.randint(0, VT, (B, T), generator=torch.Generator().manual_seed(13))
    own = token_logprobs(hidden.reshape(-1, H), weight, b, labels.reshape(-1), 4).reshape(B, T)
    own[:, T - 1] = float("nan")
    value, grads = grads_of(
        lambda h, w, bb: alm_loss(h, w, bb, labels, chunk, own, chunk, tau=tau, rows=4).sum, hidden, weight, b
    )
    assert abs(float(value)) < 1e-14
    assert all(float(g.abs().max()) < 1e-12 for g in grads)
    other = alm_loss(hidden, weight, b, labels, chunk, own - 0.3, chunk, tau=tau, rows=4)
    assert float(other.sum) > 0 and int(other.count) == B * (T - 1)


def test_next_byte_with_identical_tokenizers_buckets_the_same_distribution():
    """Shared vocabulary and first bytes: the byte-bucketed KD of F against q, computed from the full
    logits here; 0 when the student's bucket masses equal the teacher's."""
    hidden, weight, b, teacher, pos = identity_case(torch.float64, seed=14)
    fb = torch.randint(0, 257, (VT,), generator=torch.Generator().manual_seed(15))
    fb[:2] = 256
    res = next_byte_loss(hidden, weight, b, teacher, pos, pos, fb, fb, rows=5)
    logits = ref_logits(hidden, weight, b)
    total, n = 0.0, 0
    valid = teacher.valid_positions()
    for bi in range(B):
        for ti in range(T):
            if not valid[bi, ti]:
                continue
            m = teacher.mask[bi, ti]
            f = torch.softmax(teacher.logp[bi, ti][m], -1)
            q = torch.softmax(logits[bi, ti], -1)
            for byte in set(fb[teacher.ids[bi, ti][m]].tolist()):
                p_b = f[fb[teacher.ids[bi, ti][m]] == byte].sum()
                total += float(p_b * (p_b.log() - q[fb == byte].sum().log()))
            n += 1
    assert int(res.count) == n
    assert abs(float(res.sum) - total) < 1e-10 * max(1.0, abs(total))
    # a teacher whose kept set is the whole vocabulary with the student's softmax: 0
    full_ids = torch.arange(VT).repeat(B, T, 1)
    own = TeacherBatch(
        full_ids,
        torch.log_softmax(logits, -1),
        torch.ones(B, T, VT, dtype=torch.bool),
        torch.full((B, T), float("-inf")),
    )
    assert abs(float(next_byte_loss(hidden, weight, b, own, pos, pos, fb, fb, rows=5).sum)) < 1e-12


# ---------------------------------------------------------------------------------------------
# memory, inputs


def test_no_tensor_of_the_logits_size_exists():
    """Forward and backward of every loss: no tensor of (rows x V) elements, only [chunk, V] ones
    (rows = B * S student positions, or the B * C aligned pairs); a dense head would make one."""
    b_, t_, v, chunk = 2, 32, 2000, 8
    hidden, weight, b = head(torch.float32, b=b_, s=t_, v=v, seed=16)
    teacher = teacher_case(torch.float32, b=b_, t=t_, v=v, seed=17)
    pos = torch.arange(t_).repeat(b_, 1)
    chunk_ids_ = torch.where(pos < t_ - 1, pos, -1)
    labels = torch.randint(0, v, (b_, t_), generator=torch.Generator().manual_seed(18))
    nxt = -torch.rand(b_, t_)
    fb = torch.randint(0, 257, (v,), generator=torch.Generator().manual_seed(19))
    exact = torch.arange(v)
    exact[::3] = -1
    runs = {
        "alm": lambda h, w: alm_loss(h, w, b, labels, chunk_ids_, nxt, chunk_ids_, rows=chunk).sum,
        "gold": lambda h, w: gold_loss(h, w, b, teacher, pos, pos, exact, rows=chunk).sum,
        "next_byte": lambda h, w: next_byte_loss(h, w, b, teacher, pos, pos, fb, fb, rows=chunk).sum,
        "dense": lambda h, w: torch.log_softmax(h @ w.t(), -1).sum(),
    }
    for name, fn in runs.items():
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        with LargestTensor() as seen:
            fn(h, w).backward()
        if name == "dense":
            assert seen.largest >= b_ * t_ * v
        else:
            assert chunk * v <= seen.largest < 2 * chunk * v, (name, seen.largest)


def test_rows_logits_loss_without_gradients_and_short_chunks():
    """No grad: no checkpoint, the same values; fn sees each chunk's rows (10 rows in chunks of 4)."""
    hidden, weight, b = head(torch.float64, seed=20)
    rows = hidden.reshape(-1, H)[:10]
    seen = []

    def fn(x, sl):
        seen.append((sl.start, sl.stop, x.shape[0]))
        return torch.logsumexp(x, -1)

    with torch.no_grad():
        out = rows_logits_loss(rows, weight, b, 4, fn)
    torch.testing.assert_close(out, torch.logsumexp(ref_logits(rows, weight, b), -1))
    assert seen == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]


def test_refusals_name_the_input():
    hidden, weight, b = head(torch.float32)
    exact, tfb, sfb = maps()
    check_vocab_maps(exact, tfb, sfb, VT, VS)
    beyond = exact.clone()
    beyond[0] = VS
    with pytest.raises(ValueError, match="exact_map values must lie in"):
        check_vocab_maps(beyond, tfb, sfb, VT, VS)
    with pytest.raises(ValueError, match="student_first_byte must be an integer"):
        check_vocab_maps(exact, tfb, sfb[:-1], VT, VS)
    with pytest.raises(ValueError, match="teacher_first_byte values"):
        check_vocab_maps(exact, tfb + 1, sfb, VT, VS)
    with pytest.raises(ValueError, match="weight must have shape"):
        token_logprobs(hidden.reshape(-1, H), weight[:, :3], b, torch.zeros(B * S, dtype=torch.int64), 4)
    labels, s_chunk, nxt, t_chunk = alm_case(torch.float32)
    with pytest.raises(ValueError, match="student_chunk must have shape"):
        alm_loss(hidden, weight, b, labels, s_chunk[:, :-1], nxt, t_chunk)
    teacher = teacher_case(torch.float32)
    pt, ps = pair_tensors(PAIRS)
    with pytest.raises(ValueError, match="pair_teacher and pair_student"):
        gold_loss(hidden, weight, b, teacher, pt, ps[:, :-1], exact)
    with pytest.raises(ValueError, match="given together"):
        gold_loss(hidden, weight, b, teacher, pt, ps, exact, matched_weight=0.5)
