"""An estimate tested with a t statistic: one number (a difference, a slope), its standard error and degrees of
freedom, from which its interval, its two-sided test and its minimum detectable effect all follow.

Interval, test and detectable effect use the same standard error, so the interval at level L excludes 0 exactly
when the unadjusted test rejects at 1 − L. :class:`audit.stats.contrasts.Contrast` and
:class:`audit.stats.trend.Trend` are such estimates; :meth:`Estimate.test` turns one into a :class:`TestResult`
for a multiple-testing family, whose interval at any level is the same t interval (for adjusted intervals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from scipy import optimize, stats

from audit.stats.tests import TestResult, not_testable


@dataclass(frozen=True)
class Estimate:
    """A t-based estimate with its test.

    Attributes:
        estimate: the difference or slope (NaN when it could not be computed).
        ci_low, ci_high: two-sided t interval at the ``confidence`` it was built with (unadjusted).
        se, df: standard error and degrees of freedom.
        statistic, p_value: t = estimate / se and its two-sided p (NaN when not testable).
        n: units used; mde: the effect detectable with the given power at level ``alpha`` (two-sided).
        method: which test; notes: why not testable, or warnings.
    """

    KIND: ClassVar[str]
    """Set by each kind of estimate: the :attr:`TestResult.kind` of :meth:`test`."""
    EFFECT_LABEL: ClassVar[str]
    """Set by each kind of estimate: what it is, with its sign convention (:meth:`test`'s default label)."""
    NO_VARIATION: ClassVar[str]
    """Set by each kind of estimate: the note when its standard error is 0."""

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

    @classmethod
    def from_se(cls, estimate: float, se: float, df: float, n: int, method: str, alpha: float, power: float,
                confidence: float, notes: str = "", **extra: Any) -> Self:
        """The estimate with its t interval at ``confidence``, two-sided p and MDE at (``alpha``, ``power``); a
        standard error of 0 (up to rounding noise) leaves it untested, noted :attr:`NO_VARIATION`. ``extra``:
        a subclass's own fields."""
        if not se > 1e-12 * max(1.0, abs(estimate)):  # identical values: rounding noise is not a standard error
            return cls(estimate, math.nan, math.nan, se, df, math.nan, math.nan, n, math.nan, method,
                       "; ".join(filter(None, [notes, cls.NO_VARIATION])), **extra)
        t = estimate / se
        low, high = t_interval(estimate, se, df, confidence)
        return cls(estimate, low, high, se, df, t, float(2 * stats.t.sf(abs(t), df)), n,
                   detectable_ncp(df, alpha, power) * se, method, notes, **extra)

    @classmethod
    def untestable(cls, estimate: float, n: int, method: str, why: str) -> Self:
        """An estimate without a standard error (too few units …), with the reason."""
        nan = math.nan
        return cls(estimate, nan, nan, nan, nan, nan, nan, n, nan, method, why)

    @property
    def testable(self) -> bool:
        return math.isfinite(self.p_value)

    def test(self, name: str, unit: str = "", scale: float = 1.0, confidence: float = 0.95,
             effect_label: str | None = None, kind: str | None = None) -> TestResult:
        """The estimate as a :class:`TestResult`: effect, MDE and intervals × ``scale`` in ``unit`` (e.g. 100 and
        "pp" for shares), the t interval at any level for adjusted intervals; not testable (out of the family)
        with its reason."""
        return t_test_result(name, self.estimate, self.se, self.df, self.p_value, self.n, self.mde, self.method,
                             self.notes, unit, scale, confidence, kind or self.KIND, effect_label or self.EFFECT_LABEL)


def t_interval(estimate: float, se: float, df: float, level: float) -> tuple[float, float]:
    """estimate ± t_{(1+level)/2, df}·se."""
    half = stats.t.isf((1 - level) / 2, df) * se
    return estimate - half, estimate + half


def t_test_result(name: str, estimate: float, se: float, df: float, p_value: float, n: int, mde: float, method: str,
                  notes: str, unit: str, scale: float, confidence: float, kind: str, effect_label: str) -> TestResult:
    """A t-based estimate as a :class:`TestResult` whose interval at level L is estimate ± t_{(1+L)/2, df}·se
    (so it excludes 0 exactly when the test rejects at 1 − L)."""
    if not math.isfinite(p_value):
        return not_testable(name, kind, notes or "not run", n, unit=unit, effect_label=effect_label)

    def interval_at(level: float) -> tuple[np.ndarray, np.ndarray]:
        low, high = t_interval(estimate, se, df, level)
        return np.array([scale * low]), np.array([scale * high])

    low, high = interval_at(confidence)
    component = {"label": "slope" if kind == "trend" else "difference", "effect": scale * estimate,
                 "ci_low": float(low[0]), "ci_high": float(high[0]), "t": estimate / se}
    return TestResult(name, estimate / se, df, p_value, method, n, scale * mde, notes, scale * estimate, unit, kind,
                      "", effect_label, component["label"], float(low[0]), float(high[0]), confidence,
                      (component,), interval_at=interval_at)


def t_power(ncp: float, df: float, alpha: float = 0.05) -> float:
    """Power of a two-sided t-test at level ``alpha`` with ``df`` degrees of freedom when the true effect is
    ``ncp`` standard errors: P(|T| > t_{1−α/2}) for T ~ noncentral t(df, ncp)."""
    if not df > 0:
        return math.nan
    crit, ncp = stats.t.isf(alpha / 2, df), abs(ncp)
    lower = float(stats.nct.cdf(-crit, df, ncp))  # the wrong-sign tail: negligible, but NaN-prone far out
    return float(stats.nct.sf(crit, df, ncp)) + (lower if math.isfinite(lower) else 0.0)


def detectable_ncp(df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Noncentrality (effect in standard errors) at which the two-sided t-test reaches ``power``."""
    if not df > 0:
        return math.nan
    if t_power(0.0, df, alpha) >= power:
        return 0.0
    high = 1.0
    while t_power(high, df, alpha) < power:
        high *= 2
        if high > 1e6:  # df tiny: power creeps up too slowly to matter
            return math.inf
    return float(optimize.brentq(lambda d: t_power(d, df, alpha) - power, 0.0, high, xtol=1e-10))
