"""Schedules: the KD weight alpha(progress) and a warmup-stable-decay learning rate for Composer.

Alpha schedules are small frozen dataclasses; ``schedule(progress) -> alpha`` with progress the
fraction of training elapsed in [0, 1] (clamped), see `training_progress(state)`. alpha weights
the KD term: loss = (1 - alpha) * LM + alpha * KD.

Built from config dicts with `make_alpha_schedule({"name": ..., **params})`:

  constant  value                                   alpha = value
  linear    start, end                              start -> end linearly (Linear Inc / Dec)
  cosine    start, end                              start -> end along a half cosine
  wsd       peak, floor=0.0, warmup=0.1, decay=0.1, decay_shape="cosine"|"linear"
            warmup: floor -> peak linearly over [0, warmup]; stable at peak; decay: peak -> floor
            over [1 - decay, 1]. peak < floor is allowed (WSD on beta = 1 - alpha: floor=1, peak=0.1).
  periodic  low, high, period=0.1, shape="cosine"|"triangle"
            the paper's "Period": cycles between high and low, starting at high, one cycle every
            ``period`` of training (0.1 -> 10 cycles).

`WarmupStableDecayScheduler` is a Composer scheduler (callable ``(state, ssr=1.0) -> multiplier``),
mirroring `composer.optim.CosineAnnealingWithWarmupScheduler`: linear warmup 0 -> 1 over
``t_warmup``, 1.0 until ``t_max - t_decay``, then decay 1 -> ``alpha_f`` (cosine or linear) ending
at ``t_max`` (default "1dur").
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from schemas.settings import Refused, raise_first

__all__ = [
    "ConstantAlpha",
    "LinearAlpha",
    "CosineAlpha",
    "WSDAlpha",
    "PeriodicAlpha",
    "AlphaSchedule",
    "ALPHA_SCHEDULES",
    "make_alpha_schedule",
    "WarmupStableDecayScheduler",
    "training_progress",
    "wsd_multiplier",
]


def _num(name: str, value, lo: float | None = 0.0, hi: float | None = 1.0, *, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    v = float(value)
    if lo is not None and (v < lo or (open_lo and v == lo)):
        raise ValueError(f"{name}: must be {'>' if open_lo else '>='} {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}: must be <= {hi}, got {value!r}")
    return v


def _choice(name: str, value, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name}: must be one of {options}, got {value!r}")
    return value


def _clamp01(p: float) -> float:
    return 0.0 if p < 0.0 else 1.0 if p > 1.0 else float(p)


def _cos_interp(start: float, end: float, x: float) -> float:
    """start at x = 0 -> end at x = 1 along a half cosine."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * x))


def wsd_multiplier(
    x: float,
    warmup: float,
    decay: float,
    peak: float = 1.0,
    floor: float = 0.0,
    decay_shape: str = "cosine",
    start: float | None = None,
) -> float:
    """Warmup-stable-decay value at fraction x in [0, 1] (all of warmup / decay are fractions).

    warmup: start (default floor) -> peak linearly for x in [0, warmup); stable peak; decay:
    peak -> floor for x in [1 - decay, 1] (cosine or linear). Warmup wins where they overlap.
    """
    x = _clamp01(x)
    start = floor if start is None else start
    if warmup > 0 and x < warmup:
        return start + (peak - start) * x / warmup
    d0 = 1.0 - decay
    if decay > 0 and x >= d0:
        frac = min(1.0, (x - d0) / decay)
        if decay_shape == "linear":
            return peak + (floor - peak) * frac
        return _cos_interp(peak, floor, frac)
    return peak


_STRICT = ConfigDict(extra="forbid")
Fraction = Annotated[float, Field(strict=True, ge=0.0, le=1.0)]


@dataclass(frozen=True, config=_STRICT)
class ConstantAlpha:
    value: Fraction = 0.9
    name: Literal["constant"] = "constant"

    def __call__(self, progress: float) -> float:
        return float(self.value)


@dataclass(frozen=True, config=_STRICT)
class LinearAlpha:
    start: Fraction = 0.0
    end: Fraction = 1.0
    name: Literal["linear"] = "linear"

    def __call__(self, progress: float) -> float:
        p = _clamp01(progress)
        return float(self.start + (self.end - self.start) * p)


@dataclass(frozen=True, config=_STRICT)
class CosineAlpha:
    start: Fraction = 1.0
    end: Fraction = 0.0
    name: Literal["cosine"] = "cosine"

    def __call__(self, progress: float) -> float:
        return _cos_interp(float(self.start), float(self.end), _clamp01(progress))


@dataclass(frozen=True, config=_STRICT)
class WSDAlpha:
    peak: Fraction = 0.9
    floor: Fraction = 0.0
    warmup: Fraction = 0.1
    decay: Fraction = 0.1
    decay_shape: Literal["cosine", "linear"] = "cosine"
    name: Literal["wsd"] = "wsd"

    @model_validator(mode="after")
    def _phases_fit(self):
        if self.warmup + self.decay > 1.0 + 1e-12:
            raise Refused("decay", f"warmup + decay must be <= 1, got {self.warmup} + {self.decay}")
        return self

    def __call__(self, progress: float) -> float:
        return wsd_multiplier(
            progress, float(self.warmup), float(self.decay), float(self.peak), float(self.floor), self.decay_shape
        )


@dataclass(frozen=True, config=_STRICT)
class PeriodicAlpha:
    low: Fraction = 0.5
    high: Fraction = 1.0
    period: Annotated[float, Field(strict=True, gt=0.0, le=1.0)] = 0.1
    shape: Literal["cosine", "triangle"] = "cosine"
    name: Literal["periodic"] = "periodic"

    def __call__(self, progress: float) -> float:
        phase = (_clamp01(progress) / self.period) % 1.0  # 0 at each cycle start (value = high)
        if self.shape == "triangle":
            w = 1.0 - abs(2.0 * phase - 1.0)  # 0 -> 1 -> 0
        else:
            w = 0.5 * (1.0 - math.cos(2.0 * math.pi * phase))
        return float(self.high + (self.low - self.high) * w)


# The tagged union: a config's `name` picks the schedule; its other keys are that schedule's fields.
AlphaSchedule = Annotated[
    ConstantAlpha | LinearAlpha | CosineAlpha | WSDAlpha | PeriodicAlpha, Field(discriminator="name")
]
ALPHA_SCHEDULES: dict[str, type] = {
    "constant": ConstantAlpha,
    "linear": LinearAlpha,
    "cosine": CosineAlpha,
    "wsd": WSDAlpha,
    "periodic": PeriodicAlpha,
}
_ALPHA = TypeAdapter(AlphaSchedule)


def make_alpha_schedule(cfg: dict, *, prefix: str = "alpha") -> AlphaSchedule:
    """Build an alpha schedule from ``{"name": <one of ALPHA_SCHEDULES>, **params}``.

    Errors (`ConfigError`) name the offending key as ``<prefix>.<key>``: a missing or unknown name,
    an unknown parameter, a wrong type, or an out-of-range value.
    """
    try:
        return _ALPHA.validate_python(cfg)
    except ValidationError as e:
        raise_first(e, lambda p: f"{p.key}: {p.message}", ("",), prefix=prefix)


# --------------------------------------------------------------------------------------------
# Composer side (imported lazily so the alpha schedules need no Composer)


def training_progress(state) -> float:
    """Fraction of training elapsed in [0, 1] from a Composer State (``timestamp / max_duration``
    in max_duration's unit); 0.0 when max_duration is unset."""
    elapsed = state.get_elapsed_duration()
    return 0.0 if elapsed is None else _clamp01(float(elapsed.value))


class WarmupStableDecayScheduler:
    r"""Warmup-stable-decay learning-rate multiplier for Composer (a ``ComposerScheduler``).

    .. math::
        \alpha(t) = \begin{cases}
            t / t_{warmup} & t < t_{warmup} \\
            1 & t_{warmup} \le t < t_{max} - t_{decay} \\
            \alpha_f + (1 - \alpha_f) \cdot s\big((t - (t_{max} - t_{decay})) / t_{decay}\big) & \text{otherwise}
        \end{cases}

    with s(x) = (1 + cos(pi x)) / 2 (``decay_shape="cosine"``) or 1 - x (``"linear"``), x clipped to
    [0, 1]. Times are Composer time strings or `Time` ("10ba", "0.1dur", "1000tok", "1ep") and are
    converted with Composer's own ``_convert_time`` (so "dur" is relative to max_duration). As in
    Composer's warmup schedulers, the warmup is not stretched by the scale-schedule ratio unless
    ``scale_warmup=True``; t_decay and t_max are. All three must resolve to the same unit.
    """

    def __init__(
        self,
        t_warmup="0.1dur",
        t_decay="0.1dur",
        alpha_f: float = 0.0,
        decay_shape: str = "cosine",
        t_max="1dur",
        scale_warmup: bool = False,
    ):
        from composer.core import Time  # noqa: PLC0415 (late: no Composer for trainer.config)

        for name, t in (("t_warmup", t_warmup), ("t_decay", t_decay), ("t_max", t_max)):
            if isinstance(t, str):
                try:
                    Time.from_timestring(t)
                except Exception as e:  # noqa: BLE001 - re-raise with the argument's name
                    raise ValueError(f"{name}: invalid Composer time string {t!r} ({e})") from None
            elif not isinstance(t, Time):
                raise ValueError(f"{name} must be a Composer time string or Time, got {t!r}")
        _num("alpha_f", alpha_f, 0.0, None)
        _choice("decay_shape", decay_shape, ("cosine", "linear"))
        self.t_warmup = t_warmup
        self.t_decay = t_decay
        self.alpha_f = float(alpha_f)
        self.decay_shape = decay_shape
        self.t_max = t_max
        self.scale_warmup = bool(scale_warmup)

    def __repr__(self) -> str:
        return (
            f"WarmupStableDecayScheduler(t_warmup={self.t_warmup!r}, t_decay={self.t_decay!r}, "
            f"alpha_f={self.alpha_f}, decay_shape={self.decay_shape!r}, t_max={self.t_max!r})"
        )

    def __call__(self, state, ssr: float = 1.0) -> float:
        from composer.optim.scheduler import _convert_time  # noqa: PLC0415 (late: no Composer for trainer.config)

        assert state.max_duration is not None, "max_duration should be set whenever schedulers are invoked"
        t_warmup = _convert_time(self.t_warmup, state, ssr=ssr if self.scale_warmup else 1.0)
        t_decay = _convert_time(self.t_decay, state, ssr=ssr)
        t_max = _convert_time(self.t_max, state, ssr=ssr)
        if not (t_warmup.unit == t_decay.unit == t_max.unit):
            raise ValueError(
                f"t_warmup ({t_warmup}), t_decay ({t_decay}) and t_max ({t_max}) must resolve to the same time unit"
            )
        now = state.timestamp.get(t_max.unit).value
        w, d, m = t_warmup.value, t_decay.value, t_max.value
        if w > 0 and now < w:
            return now / w
        decay_start = m - d
        if d <= 0 or now < decay_start:
            return 1.0
        x = min(1.0, (now - decay_start) / d)
        s = (1.0 - x) if self.decay_shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * x))
        return self.alpha_f + (1.0 - self.alpha_f) * s
