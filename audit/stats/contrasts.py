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
from scipy import stats

from audit.stats.tests import TestResult
from audit.stats.trend import detectable_ncp, t_test_result


@dataclass(frozen=True)
class Contrast:
    """Difference B − A of a metric's mean over units.

    Attributes:
        estimate: mean(B) − mean(A) (paired: mean of per-unit differences).
        ci_low, ci_high: t interval at ``confidence`` (unadjusted).
        se, df: standard error and degrees of freedom (Welch–Satterthwaite when unpaired).
        statistic, p_value: t and its two-sided p (NaN when not testable).
        n: units used (pairs, or n_a + n_b); mde: the difference detectable with the given power.
        method, notes: which test; why it could not be run.
    """

    estimate: float
    ci_low: float
    ci_high: float
    se: float
    df: float
    statistic: float
    p_value: float
    n: int
    mde: float
    method: str
    notes: str = ""

    @property
    def testable(self) -> bool:
        return math.isfinite(self.p_value)

    def test(self, name: str, unit: str = "", scale: float = 1.0, confidence: float = 0.95,
             effect_label: str = "difference B − A") -> TestResult:
        """The contrast as a :class:`TestResult` (see :func:`audit.stats.trend.t_test_result`)."""
        return t_test_result(name, self.estimate, self.se, self.df, self.p_value, self.n, self.mde, self.method,
                             self.notes, unit, scale, confidence, "contrast", effect_label)


def _contrast(estimate: float, se: float, df: float, n: int, method: str, alpha: float, power: float,
              confidence: float, why_not: str) -> Contrast:
    nan = math.nan
    if why_not:
        return Contrast(estimate, nan, nan, nan, nan, nan, nan, n, nan, method, why_not)
    if not se > 1e-12 * max(1.0, abs(estimate)):  # identical differences: rounding noise is not an error
        return Contrast(estimate, nan, nan, se, df, nan, nan, n, nan, method,
                        "no variation between units (standard error 0): a t-test cannot be computed")
    half = stats.t.isf((1 - confidence) / 2, df) * se
    t = estimate / se
    return Contrast(estimate, estimate - half, estimate + half, se, df, t, float(2 * stats.t.sf(abs(t), df)), n,
                    detectable_ncp(df, alpha, power) * se, method)


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
        return _contrast(float(d.mean()) if n else math.nan, math.nan, math.nan, n, method, alpha, power, confidence,
                         f"{n} shared input(s) with a value in both runs: a paired test needs ≥ 2")
    return _contrast(float(d.mean()), float(np.std(d, ddof=1)) / math.sqrt(n), n - 1, n, method, alpha, power,
                     confidence, "")


def welch_contrast(a: np.ndarray | list, b: np.ndarray | list, alpha: float = 0.05, power: float = 0.8,
                   confidence: float = 0.95) -> Contrast:
    """Welch's unequal-variance t on two independent samples of units (different conditions or inputs)."""
    a, b = _finite(a), _finite(b)
    na, nb = len(a), len(b)
    method = "Welch t-test (unpaired: different condition or inputs)"
    estimate = float(b.mean() - a.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return _contrast(estimate, math.nan, math.nan, na + nb, method, alpha, power, confidence,
                         f"{na} and {nb} units with a value: an unpaired test needs ≥ 2 in each run")
    va, vb = np.var(a, ddof=1) / na, np.var(b, ddof=1) / nb
    se2 = va + vb
    df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if se2 > 0 else math.nan
    return _contrast(estimate, math.sqrt(se2), df, na + nb, method, alpha, power, confidence, "")
