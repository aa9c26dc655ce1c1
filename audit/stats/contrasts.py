"""Two-run contrasts of a per-unit metric: paired (the same inputs under one condition) or unpaired
(different conditions or inputs), each an estimate with its t interval, test and detectable effect.

Each unit is an independent replicate (an input, its samples averaged first), so the samples of one
input never count as independent. The interval and the test come from the same estimator and the
same standard error: the interval excludes 0 exactly when the unadjusted test rejects at 1 − confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.stats.estimate import Estimate


@dataclass(frozen=True)
class Contrast(Estimate):
    """Difference B − A of a metric's mean over units (:class:`~audit.stats.estimate.Estimate`).

    Attributes:
        estimate: mean(B) − mean(A) (paired: mean of per-unit differences).
        se, df: standard error and degrees of freedom (Welch–Satterthwaite when unpaired).
        n: units used (pairs, or n_a + n_b); mde: the difference detectable with the given power.
        method, notes: which test; why it could not be run.
    """

    KIND = "contrast"
    EFFECT_LABEL = "difference B − A"
    NO_VARIATION = "no variation between units (standard error 0): a t-test cannot be computed"


def _finite(values: np.ndarray | list) -> np.ndarray:
    v = np.asarray(values, float)
    return v[np.isfinite(v)]


def paired_contrast(a: np.ndarray | list, b: np.ndarray | list, alpha: float = 0.05, power: float = 0.8,
                    confidence: float = 0.95) -> Contrast:
    """Paired t on per-unit differences b − a (a and b aligned unit by unit; pairs with a NaN are dropped)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError("paired values must be aligned unit by unit")
    d = (b - a)[np.isfinite(a) & np.isfinite(b)]
    n = len(d)
    method = "paired t-test over shared inputs"
    if n < 2:
        return Contrast.untestable(float(d.mean()) if n else math.nan, n, method,
                                   f"{n} shared input(s) with a value in both runs: a paired test needs ≥ 2")
    return Contrast.from_se(float(d.mean()), float(np.std(d, ddof=1)) / math.sqrt(n), n - 1, n, method, alpha, power,
                            confidence)


def welch_contrast(a: np.ndarray | list, b: np.ndarray | list, alpha: float = 0.05, power: float = 0.8,
                   confidence: float = 0.95) -> Contrast:
    """Welch's unequal-variance t on two independent samples of units (different conditions or inputs)."""
    a, b = _finite(a), _finite(b)
    na, nb = len(a), len(b)
    method = "Welch t-test (unpaired: different condition or inputs)"
    estimate = float(b.mean() - a.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return Contrast.untestable(estimate, na + nb, method,
                                   f"{na} and {nb} units with a value: an unpaired test needs ≥ 2 in each run")
    va, vb = np.var(a, ddof=1) / na, np.var(b, ddof=1) / nb
    se2 = va + vb
    df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if se2 > 0 else math.nan
    return Contrast.from_se(estimate, math.sqrt(se2), df, na + nb, method, alpha, power, confidence)
