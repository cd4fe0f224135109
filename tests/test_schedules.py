"""Alpha schedules (pure) and the WSD learning-rate scheduler against a real Composer State."""

import math

import pytest

from trainer.schedules import (
    ConstantAlpha,
    CosineAlpha,
    LinearAlpha,
    PeriodicAlpha,
    WarmupStableDecayScheduler,
    WSDAlpha,
    make_alpha_schedule,
    training_progress,
)

approx = pytest.approx


def test_constant_linear_cosine():
    assert ConstantAlpha(0.9)(0.0) == ConstantAlpha(0.9)(1.0) == approx(0.9)
    inc, dec = LinearAlpha(0.0, 1.0), LinearAlpha(1.0, 0.2)
    assert [inc(p) for p in (0, 0.25, 1)] == approx([0, 0.25, 1])
    assert [dec(p) for p in (0, 0.5, 1)] == approx([1.0, 0.6, 0.2])
    assert inc(-1) == 0 and inc(2) == 1  # progress clamped
    cos = CosineAlpha(1.0, 0.0)
    assert [cos(p) for p in (0, 0.5, 1)] == approx([1.0, 0.5, 0.0])
    assert cos(0.25) == approx(0.5 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_wsd_alpha_shape(shape):
    s = WSDAlpha(peak=0.9, floor=0.1, warmup=0.2, decay=0.3, decay_shape=shape)
    assert s(0.0) == approx(0.1)
    assert s(0.1) == approx(0.5)  # linear warmup floor -> peak
    assert s(0.2) == approx(0.9) and s(0.5) == approx(0.9) and s(0.7) == approx(0.9)  # stable
    assert s(1.0) == approx(0.1)
    mid = s(0.85)  # halfway through the decay: both shapes give the midpoint
    assert mid == approx(0.5)
    q = s(0.775)  # a quarter into the decay
    assert q == approx(0.9 - 0.8 * (0.25 if shape == "linear" else 0.5 * (1 - math.cos(math.pi / 4))))
    vals = [s(i / 100) for i in range(101)]
    assert all(0.1 - 1e-12 <= v <= 0.9 + 1e-12 for v in vals)


def test_wsd_beta_is_inverted_wsd():
    """WSD on beta = 1 - alpha: floor 1, peak 0.1."""
    s = WSDAlpha(peak=0.1, floor=1.0, warmup=0.1, decay=0.1)
    assert s(0) == approx(1.0) and s(0.5) == approx(0.1) and s(1) == approx(1.0)


@pytest.mark.parametrize("shape", ["cosine", "triangle"])
def test_periodic(shape):
    s = PeriodicAlpha(low=0.2, high=1.0, period=0.25, shape=shape)
    assert s(0.0) == approx(1.0)  # starts high
    assert s(0.125) == approx(0.2)  # half a period: low
    assert s(0.25) == approx(1.0) and s(0.5) == approx(1.0) and s(0.625) == approx(0.2)
    q = s(0.0625)
    assert q == approx(0.6)  # a quarter period: midway, both shapes


def test_make_alpha_schedule_and_errors():
    assert make_alpha_schedule({"name": "constant", "value": 1}) == ConstantAlpha(1.0)
    assert make_alpha_schedule({"name": "wsd", "peak": 0.9}) == WSDAlpha(peak=0.9)
    assert make_alpha_schedule({"name": "linear", "start": 1.0, "end": 0.0})(1.0) == 0.0
    assert isinstance(make_alpha_schedule({"name": "periodic", "low": 0.5, "high": 0.9}), PeriodicAlpha)
    bad = [
        ({"value": 1}, r"alpha\.name"),
        ({"name": "exp"}, r"alpha\.name"),
        ({"name": "wsd", "peek": 0.9}, r"alpha\.peek"),
        ({"name": "wsd", "peak": "high"}, r"alpha\.peak"),
        ({"name": "wsd", "peak": True}, r"alpha\.peak"),
        ({"name": "wsd", "peak": 1.5}, r"alpha\.peak"),
        ({"name": "wsd", "decay_shape": "step"}, r"alpha\.decay_shape"),
        ({"name": "wsd", "decay_shape": 3}, r"alpha\.decay_shape"),
        ({"name": "wsd", "warmup": 0.6, "decay": 0.6}, r"alpha\.decay"),
        ({"name": "periodic", "period": 0}, r"alpha\.period"),
        ({"name": "constant", "value": -0.1}, r"alpha\.value"),
    ]
    for cfg, key in bad:
        with pytest.raises(ValueError, match=key):
            make_alpha_schedule(cfg)
    with pytest.raises(ValueError, match=r"distill\.alpha\.peak"):
        make_alpha_schedule({"name": "wsd", "peak": 2}, prefix="distill.alpha")


# --------------------------------------------------------------------------------------------
# Composer


@pytest.fixture(scope="module")
def state():
    torch = pytest.importorskip("torch")
    from composer.core import State
    from composer.devices import DeviceCPU
    from composer.models import ComposerClassifier

    model = ComposerClassifier(torch.nn.Linear(2, 2), num_classes=2)
    return State(model=model, rank_zero_seed=0, run_name="sched", device=DeviceCPU(), max_duration="100ba")


def _at(state, batch=0, token=0):
    from composer.core import Timestamp

    state.timestamp = Timestamp(batch=batch, token=token, sample=batch)
    return state


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_wsd_lr_scheduler_shape(state, shape):
    from composer.core import Time

    state.max_duration = Time.from_timestring("100ba")
    s = WarmupStableDecayScheduler(t_warmup="10ba", t_decay="0.2dur", alpha_f=0.1, decay_shape=shape)
    got = {b: s(_at(state, b)) for b in (0, 5, 10, 50, 79, 80, 90, 100)}
    assert got[0] == 0.0 and got[5] == approx(0.5)
    assert got[10] == got[50] == got[79] == got[80] == 1.0
    assert got[90] == approx(0.55)  # halfway through the decay, both shapes
    assert got[100] == approx(0.1)
    if shape == "linear":
        assert s(_at(state, 85)) == approx(1 - 0.9 * 0.25)
    else:
        assert s(_at(state, 85)) == approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert training_progress(_at(state, 25)) == approx(0.25)


def test_wsd_lr_equals_composer_cosine_when_decay_fills_the_run(state):
    """With t_decay = max_duration - t_warmup, WSD-cosine is Composer's cosine-with-warmup."""
    from composer.core import Time
    from composer.optim import CosineAnnealingWithWarmupScheduler

    state.max_duration = Time.from_timestring("100ba")
    ours = WarmupStableDecayScheduler(t_warmup="10ba", t_decay="90ba", alpha_f=0.05)
    theirs = CosineAnnealingWithWarmupScheduler(t_warmup="10ba", alpha_f=0.05)
    for b in range(0, 101, 7):
        assert ours(_at(state, b)) == approx(theirs(_at(state, b)))


def test_wsd_lr_in_tokens_and_in_a_torch_scheduler(state):
    """Time strings go through Composer's own conversion ("dur" -> the max_duration unit), and the
    scheduler compiles into the torch LR scheduler Composer's Trainer uses."""
    import torch
    from composer.core import Time
    from composer.optim.scheduler import compile_composer_scheduler

    state.max_duration = Time.from_timestring("1000tok")
    s = WarmupStableDecayScheduler(t_warmup="0.1dur", t_decay="0.5dur", alpha_f=0.0, decay_shape="linear")
    assert s(_at(state, token=50)) == approx(0.5)
    assert s(_at(state, token=400)) == 1.0
    assert s(_at(state, token=750)) == approx(0.5)
    with pytest.raises(ValueError, match="same time unit"):
        WarmupStableDecayScheduler(t_warmup="10ba", t_decay="0.5dur")(_at(state, token=10))

    state.max_duration = Time.from_timestring("20ba")
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    state.optimizers = [opt]
    sched = compile_composer_scheduler(WarmupStableDecayScheduler(t_warmup="4ba", t_decay="0.5dur", alpha_f=0.1), state)
    lrs = []
    for b in range(21):
        _at(state, b)
        if b:
            opt.step()
            sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[2] == approx(0.5) and lrs[4] == lrs[10] == 1.0 and lrs[20] == approx(0.1)
    assert lrs[15] == approx(0.55)


def test_wsd_lr_bad_arguments():
    with pytest.raises(ValueError, match="t_warmup"):
        WarmupStableDecayScheduler(t_warmup="ten", t_decay="0.1dur")
    with pytest.raises(ValueError, match="decay_shape"):
        WarmupStableDecayScheduler(t_warmup="1ba", t_decay="0.1dur", decay_shape="exp")
    with pytest.raises(ValueError, match="alpha_f"):
        WarmupStableDecayScheduler(t_warmup="1ba", t_decay="0.1dur", alpha_f=-1)
