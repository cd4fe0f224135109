"""The tail: the log of the probability mass truncation dropped, one number per position.

Stored on a `tail_step`-nat scale (1/16 by default): level 0 = no tail, else 1 + round(-ln
tail / step), at most 64 nats. compact2 codes the levels under their own histogram (`plain_*`).
From compact3 on, the level is coded as its difference from the level that 1 - (decoded kept
mass) predicts (`predicted_*`): the kept levels already say most of it, ~2.3-2.5 bits per
position less. The prediction works from integers and IEEE-rounded arithmetic only (no libm log
or exp, which may differ by an ulp between machines), so every machine predicts the same.
"""

from __future__ import annotations

import numpy as np

from schemas.codecs import entropy, varint
from schemas.errors import CodecError

_LN2 = 0.6931471805599453  # ln 2, as a literal: the tail prediction uses no libm


def levels(name: str, log_tail: np.ndarray, step: float) -> np.ndarray:
    """[T] each position's tail level (0: no tail)."""
    lt = np.asarray(log_tail, dtype=np.float64)
    out = np.zeros(lt.shape[0], dtype=np.int64)
    fin = np.isfinite(lt)
    if (lt[fin] > 0).any():
        raise CodecError(f"{name} codec: a tail log-mass is above 0")
    out[fin] = 1 + np.rint(-lt[fin] / step).clip(0, 64 / step).astype(np.int64)
    return out


def values(lv: np.ndarray, step: float) -> np.ndarray:
    """[T] the log tail masses tail levels decode to."""
    t = lv.shape[0]
    out = np.full(t, -np.inf, dtype=np.float32)
    fin = lv > 0
    out[fin] = -(lv[fin] - 1) * step
    return out


def plain_block(name: str, log_tail: np.ndarray, step: float) -> bytes:
    """compact2's tail column: the levels under their own histogram."""
    return entropy.encode([(levels(name, log_tail, step), None)])


def decode_plain(name: str, buf: bytes, t: int, step: float) -> np.ndarray:
    (lv,) = entropy.decode(buf, 1, max(t, int(64 / step) + 2))
    if lv.shape[0] != t:
        raise CodecError(f"{name} codec: {lv.shape[0]} tail values for {t} positions: corrupt sample")
    return values(lv, step)


def prediction(lvl: np.ndarray, counts: np.ndarray, h: float, step: float) -> np.ndarray:
    """[T] the tail level that 1 - (the decoded kept mass) would give. Integers in, and only
    frexp and IEEE-rounded + - * / after, so the encoder and any decoder compute the same."""
    sq = (2 * lvl + 1) ** 2  # (L + 1/2)^2 h^2 = sq * h^2 / 4: the decoded p, before renormalising
    mass = np.zeros(counts.shape[0], dtype=np.int64)
    nz = counts > 0
    if nz.any():
        mass[nz] = np.add.reduceat(sq, (np.cumsum(counts) - counts)[nz])
    rest = np.maximum(1.0 - mass.astype(np.float64) * (h * h / 4.0), 2.0**-40)
    m, e = np.frexp(rest)  # rest = m * 2^e, m in [0.5, 1): ln = e ln 2 + ln m by its atanh series
    u = (m - 1.0) / (m + 1.0)
    u2 = u * u
    ln = e * _LN2 + u * (2.0 + u2 * (2.0 / 3.0 + u2 * (2.0 / 5.0 + u2 * (2.0 / 7.0 + u2 * (2.0 / 9.0)))))
    return 1 + np.rint(np.clip(-ln / step, 0, 64 / step)).astype(np.int64)


def predicted_block(
    name: str, log_tail: np.ndarray, lvl: np.ndarray, counts: np.ndarray, h: float, step: float
) -> bytes:
    """The tail column from compact3 on: 0 = no tail, else 1 + the zigzag of (stored level -
    predicted level), under its own histogram."""
    lv = levels(name, log_tail, step)
    d = lv - prediction(lvl, counts, h, step)
    return entropy.encode([(np.where(lv == 0, 0, 1 + varint.zigzag(d)), None)])


def decode_predicted(name: str, buf: bytes, lvl: np.ndarray, counts: np.ndarray, h: float, step: float) -> np.ndarray:
    t = counts.shape[0]
    (sym,) = entropy.decode(buf, 1, max(t, int(64 / step) + 2))
    if sym.shape[0] != t or (sym.size and sym.max() > 4 * (64 / step) + 8):
        raise CodecError(f"{name} codec: {sym.shape[0]} tail values for {t} positions: corrupt sample")
    z = sym - 1
    lv = np.where(sym == 0, 0, prediction(lvl, counts, h, step) + varint.unzigzag(z))
    if (lv[sym > 0] < 1).any():
        raise CodecError(f"{name} codec: a tail level below the scale: corrupt sample")
    return values(lv, step)
