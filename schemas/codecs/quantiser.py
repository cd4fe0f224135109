"""Values quantised for the KL they cost: levels on sqrt(p) (compact2 and every format after it).

KL(p || q) ~ 2 * sum (sqrt q - sqrt p)^2 for small errors, so a uniform step h on sqrt(p) costs
about h^2 / 6 nats per kept entry whatever the entry's size: low-probability entries get coarse
steps in the log domain, the top ones fine steps, and no bit is spent where it buys no KL. An
entry's level is L = floor(sqrt(p) / h), decoded at (L + 1/2) * h, then renormalised over the
kept set. The step comes from `kl_target` and the counts alone, so the decoder needs nothing
else; it works from integers and an IEEE-exact sqrt, so any machine decodes the same values.

The parameters (kl_target, tail_step, mass_floor) are fields of each format that uses this
quantiser; the functions here take them as arguments.
"""

from __future__ import annotations

import numpy as np

from schemas.codecs.segments import renormalise, segment_logsumexp
from schemas.errors import CodecError

# max over one entry of the generalised KL its level costs, in units of h^2 (`sqrt_levels`)
WORST_ENTRY_KL = 2 * np.log(2) - 0.75


def check_params(kl_target: float, tail_step: float, mass_floor: float) -> None:
    """Refuse parameters outside their ranges (the messages name compact2, where they come from)."""
    if not (1e-7 <= float(kl_target) <= 0.1):
        raise CodecError(f"compact2 codec kl_target must be in [1e-7, 0.1] nats/token, got {kl_target!r}")
    if not (0.0 < float(tail_step) <= 1.0):
        raise CodecError(f"compact2 codec tail_step must be in (0, 1] nats, got {tail_step!r}")
    if not (0.0 <= float(mass_floor) <= 1.0):
        raise CodecError(f"compact2 codec mass_floor must be in [0, 1], got {mass_floor!r}")


def params(kl_target: float, tail_step: float, mass_floor: float) -> dict:
    """The quantiser's part of a manifest's codec parameters."""
    return {"kl_target": float(kl_target), "tail_step": float(tail_step), "mass_floor": float(mass_floor)}


def kl_bound(kl_target: float, mass_floor: float) -> float:
    """Guaranteed codec KL, nats/token, for every input: KL(kept set's own distribution ||
    decoded), averaged over a sample's positions with signal, is at most
    6 (2 ln 2 - 3/4) / mass_floor * kl_target (5.09 * kl_target at the default 3/4; proof:
    `sqrt_levels`), whatever the counts. inf for format 1 (mass_floor 0), whose KL grows as
    1 / (kept mass)."""
    if not mass_floor:
        return float("inf")
    return float(6.0 * WORST_ENTRY_KL / mass_floor * kl_target)


def sqrt_step(kl_target: float, counts: np.ndarray) -> float:
    """The step h on sqrt(p) that spends kl_target nats/token: h^2 / 6 per kept entry, over the
    sample's mean kept entries per position (from the counts, so the decoder agrees)."""
    counts = np.asarray(counts, dtype=np.int64)
    n_sig = int((counts > 0).sum())
    mean = int(counts.sum()) / n_sig if n_sig else 1.0
    return float(np.sqrt(6.0 * float(kl_target) / mean))


def sqrt_levels(logp: np.ndarray, counts: np.ndarray, h: float, mass_floor: float) -> np.ndarray:
    """[N] each entry's level L = floor(a / h), a = sqrt(p * s / m): p the entry's probability,
    m its position's kept mass, s = max(m, mass_floor); h = `sqrt_step(kl_target, counts)`.

    Why s: the decoder returns q = b^2 / sum b^2, b = (L + 1/2) h, renormalised over the kept
    set, so only the kept set's own distribution r = p / m is reproduced, and a step h on
    sqrt(p) is a step h / sqrt(m) on sqrt(r): the KL grows as 1 / m (format 1, mass_floor 0,
    used s = m: a kept set holding 25 % of the mass cost 8x the target). With s = m wherever
    m >= mass_floor (default 3/4) the levels are format 1's there, bit for bit (so the decoded
    mass still predicts the tail, compact3); where the kept set holds less they stand for its
    own sqrt-probabilities scaled to mass 3/4. Encoding sqrt(r) itself (s = 1 everywhere) breaks
    that tail prediction: +0.01-0.03 B per kept entry at the same measured KL (bench/codec on a
    real teacher).

    The guarantee (exact arithmetic; float32 log-probs add rounding of ~1e-7 relative). Write
    x = sqrt(r), y = b / sqrt(s), h' = h / sqrt(s) <= h / sqrt(mass_floor): y is x rounded
    down to a multiple of h', plus h' / 2. For any y > 0, as sum x^2 = 1 and ln u <= u - 1,
      KL(r || y^2 / sum y^2) = sum r ln(r / y^2) + ln sum y^2 <= sum_i (y_i^2 - x_i^2 - x_i^2 ln(y_i^2 / x_i^2)).
    Each term is h'^2 F(alpha), alpha = x / h' in [L, L + 1), beta = L + 1/2,
    F = beta^2 - alpha^2 - 2 alpha^2 ln(beta / alpha): F falls to 0 at alpha = beta and rises
    to either end, and over all L its largest value is at L = 0, alpha -> 1: 2 ln 2 - 3/4 =
    0.636 (tending to 1/2, i.e. 2 (h'/2)^2, for high levels; alpha uniform in a high level gives
    the h^2 / 6 the step is designed for). So a position with k entries costs at most
    0.636 k h^2 / mass_floor: relative to k, which may be far above the sample's mean
    count k_bar; averaged over the sample's positions with signal, h^2 = 6 kl_target / k_bar
    makes it 6 * 0.636 / 0.75 * kl_target whatever the counts. The worst case needs every entry
    just below a level boundary and kept sets of 3/4 of the mass; real text measures ~1.1x."""
    counts = np.asarray(counts, dtype=np.int64)
    lp = np.asarray(logp, dtype=np.float64)
    log_m = segment_logsumexp(lp, counts)
    shift = np.zeros(counts.shape[0])
    if mass_floor > 0:
        low = np.isfinite(log_m) & (log_m < np.log(mass_floor))
        shift[low] = np.log(mass_floor) - log_m[low]  # 0 elsewhere: format 1's levels, bit for bit
    return np.floor(np.sqrt(np.exp(lp + np.repeat(shift, counts))) / h).astype(np.int64)


def decoded_logp(lvl: np.ndarray, counts: np.ndarray, h: float) -> np.ndarray:
    """The log-probs levels decode to: (L + 1/2) h squared, renormalised over the kept set."""
    logq = (2.0 * np.log((lvl + 0.5) * h)).astype(np.float32)
    return renormalise(logq, counts)


class SqrtQuantised:
    """What a format using this quantiser answers about its values, from its fields `kl_target`,
    `tail_step` and `mass_floor` (declared by the format, with its own defaults): a mixin of this
    piece, not a base format."""

    kl_target: float
    tail_step: float
    mass_floor: float

    def __post_init__(self):
        check_params(self.kl_target, self.tail_step, self.mass_floor)

    def params(self) -> dict:
        return params(self.kl_target, self.tail_step, self.mass_floor)

    def kl_design(self) -> float:
        """Design codec KL, nats/token: the target the step is set for (bench/codec measures
        ~1.1x of it on a real teacher at top-0.95)."""
        return float(self.kl_target)

    def kl_bound(self, max_kept: int | None = None) -> float:
        """Guaranteed codec KL, nats/token, whatever the counts: `kl_bound`."""
        return kl_bound(self.kl_target, self.mass_floor)

    def sqrt_step(self, counts: np.ndarray) -> float:
        return sqrt_step(self.kl_target, counts)

    def sqrt_levels(self, logp: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return sqrt_levels(logp, counts, self.sqrt_step(counts), self.mass_floor)
