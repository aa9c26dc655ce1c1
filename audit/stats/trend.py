"""Dose–response trend tests whose units are the replicates that carry the noise.

A study asks whether a metric follows a dose (the share of light faces in a generator's training
data, or the size of a controlled prior shift). Two designs, two tests:

* **between generators** (:func:`generator_trend`): several generators (training seeds) per dose,
  each summarised by one number (its mean over the shared inputs). The units are the generators:
  ordinary least squares of the per-generator value on the dose, t-test on the slope with
  n_generators − 2 degrees of freedom. Seed-to-seed (training) variation is the error term, so a
  composition effect must exceed it; the inputs' own noise is inside each generator's mean.
  :func:`permutation_trend` gives the distribution-free check (dose labels permuted over generators).
* **within inputs** (:func:`paired_trend`): one generator family (e.g. a latent prior shift of one
  generator) run on the same inputs at every dose. Each input gets its own least-squares slope over
  the doses; the mean slope is tested with a one-sample t-test over inputs (n_inputs − 1 df). The
  units are the inputs; conclusions hold for this generator family, not for other generators.

Every result carries the slope, its t interval, the p-value and the minimum detectable slope at the
design's own standard error (exact noncentral-t power), so that a non-rejection can be read.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from audit.stats.tests import TestResult, not_testable

MAX_EXACT_PERMUTATIONS = 50_000  # enumerate every permutation up to this many (9 generators: 362 880 → sampled)


@dataclass(frozen=True)
class Trend:
    """One dose–response slope with its test.

    Attributes:
        slope: change of the metric per unit of dose (metric unit / dose unit); NaN when not testable.
        ci_low, ci_high: two-sided t interval of the slope at ``confidence``.
        se: standard error of the slope; df: its degrees of freedom.
        statistic: t = slope / se; p_value: two-sided (NaN when not testable).
        n_units: generators (between design) or inputs (within design) used.
        mde: the slope detectable with ``power`` at level ``alpha`` (two-sided) given ``se`` and ``df``.
        method: which design and test; notes: why not testable, or warnings.
        intercept: fitted value at dose 0 (between design; NaN for the within design).
        residual_sd: SD of generators around the line (between) or of per-input slopes (within).
    """

    slope: float
    ci_low: float
    ci_high: float
    se: float
    df: float
    statistic: float
    p_value: float
    n_units: int
    mde: float
    method: str
    notes: str = ""
    intercept: float = math.nan
    residual_sd: float = math.nan

    @property
    def testable(self) -> bool:
        return math.isfinite(self.p_value)

    def test(self, name: str, unit: str = "", scale: float = 1.0, confidence: float = 0.95, kind: str = "trend",
             effect_label: str = "slope per unit dose") -> TestResult:
        """The trend as a :class:`TestResult` for a multiple-testing family: effect, MDE and intervals are slopes
        × ``scale`` in ``unit`` (e.g. 100 and "pp" for shares), with the t interval at any level for adjusted
        intervals; not testable (out of the family) with its reason."""
        return t_test_result(name, self.slope, self.se, self.df, self.p_value, self.n_units, self.mde, self.method,
                             self.notes, unit, scale, confidence, kind, effect_label)


def t_test_result(name: str, estimate: float, se: float, df: float, p_value: float, n: int, mde: float, method: str,
                  notes: str, unit: str, scale: float, confidence: float, kind: str, effect_label: str) -> TestResult:
    """A t-based estimate as a :class:`TestResult` whose interval at level L is estimate ± t_{(1+L)/2, df}·se
    (so it excludes 0 exactly when the test rejects at 1 − L)."""
    if not math.isfinite(p_value):
        return not_testable(name, kind, notes or "not run", n, unit=unit, effect_label=effect_label)

    def interval_at(level: float) -> tuple[np.ndarray, np.ndarray]:
        half = stats.t.isf((1 - level) / 2, df) * se
        return np.array([scale * (estimate - half)]), np.array([scale * (estimate + half)])

    low, high = interval_at(confidence)
    component = {"label": "slope" if kind == "trend" else "difference", "effect": scale * estimate,
                 "ci_low": float(low[0]), "ci_high": float(high[0]), "t": estimate / se}
    return TestResult(name, estimate / se, df, p_value, method, n, scale * mde, notes, scale * estimate, unit, kind,
                      "", effect_label, component["label"], float(low[0]), float(high[0]), confidence,
                      (component,), interval_at=interval_at)


def _untestable(n_units: int, method: str, why: str) -> Trend:
    nan = math.nan
    return Trend(nan, nan, nan, nan, nan, nan, nan, n_units, nan, method, why)


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


def _interval(estimate: float, se: float, df: float, confidence: float) -> tuple[float, float]:
    half = stats.t.isf((1 - confidence) / 2, df) * se
    return estimate - half, estimate + half


def _finish(slope: float, se: float, df: float, n: int, method: str, alpha: float, power: float, confidence: float,
            notes: str = "", intercept: float = math.nan, residual_sd: float = math.nan) -> Trend:
    if not se > 1e-12 * max(1.0, abs(slope)):  # an exact fit: rounding noise is not a standard error
        return Trend(slope, math.nan, math.nan, se, df, math.nan, math.nan, n, math.nan, method,
                     "; ".join(filter(None, [notes, "no variation around the trend (standard error 0)"])),
                     intercept, residual_sd)
    t = slope / se
    low, high = _interval(slope, se, df, confidence)
    return Trend(slope, low, high, se, df, t, float(2 * stats.t.sf(abs(t), df)), n,
                 detectable_ncp(df, alpha, power) * se, method, notes, intercept, residual_sd)


def generator_trend(dose: np.ndarray | list, value: np.ndarray | list, alpha: float = 0.05, power: float = 0.8,
                    confidence: float = 0.95) -> Trend:
    """Between-generator trend: OLS of one value per generator on its dose, t-test on the slope (df = n − 2).

    slope = Sxy/Sxx, se = s/√Sxx with s² = Σ residual²/(n − 2). Non-finite values are left out. Not testable
    with fewer than 3 generators or fewer than 2 distinct doses.
    """
    x, y = np.asarray(dose, float), np.asarray(value, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    method = "OLS slope over generators, t-test (generators as units)"
    if len(x) < 3:
        return _untestable(len(x), method, f"{len(x)} generator(s) with a value: a slope over generators needs ≥ 3")
    if np.unique(x).size < 2:
        return _untestable(len(x), method, "every generator has the same dose")
    sxx = float(((x - x.mean()) ** 2).sum())
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    intercept = float(y.mean() - slope * x.mean())
    df = len(x) - 2
    resid = y - intercept - slope * x
    s = math.sqrt(float((resid ** 2).sum()) / df) if df > 0 else math.nan
    notes = "" if np.unique(x).size > 2 or df > 1 else "one residual degree of freedom: very low power"
    return _finish(slope, s / math.sqrt(sxx), df, len(x), method, alpha, power, confidence, notes, intercept, s)


def permutation_trend(dose: np.ndarray | list, value: np.ndarray | list, n_perm: int = 20000, seed: int = 0) -> float:
    """Two-sided permutation p-value of the OLS slope with dose labels permuted over generators.

    Every permutation is enumerated when there are at most ``MAX_EXACT_PERMUTATIONS`` (exact p = share of
    permutations with |slope| ≥ observed); otherwise ``n_perm`` random ones, p = (1 + hits)/(1 + n_perm).
    NaN with fewer than 3 generators or a single dose.
    """
    x, y = np.asarray(dose, float), np.asarray(value, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.unique(x).size < 2:
        return math.nan
    yc = y - y.mean()
    observed = abs(float((x - x.mean()) @ yc))
    tol = 1e-9 * max(1.0, observed)
    if math.factorial(len(x)) <= MAX_EXACT_PERMUTATIONS:
        perms = np.array(list(itertools.permutations(range(len(x)))))
        stats_ = np.abs((x - x.mean())[perms] @ yc)
        return float(np.mean(stats_ >= observed - tol))
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_perm, len(x))), axis=1)
    stats_ = np.abs((x - x.mean())[perms] @ yc)
    return float((1 + np.count_nonzero(stats_ >= observed - tol)) / (1 + n_perm))


def unit_slopes(dose: np.ndarray | list, values: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of ``values`` (units × doses) on ``dose`` (NaN cells left out; a row
    with fewer than 2 distinct doses observed gives NaN)."""
    x = np.asarray(dose, float)
    v = np.atleast_2d(np.asarray(values, float))
    ok = np.isfinite(v)
    w = ok.astype(float)
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (w * x).sum(axis=1) / n
        ym = np.where(ok, v, 0.0).sum(axis=1) / n
        dx = np.where(ok, x - xm[:, None], 0.0)
        sxx = (dx ** 2).sum(axis=1)
        slopes = (dx * np.where(ok, v - ym[:, None], 0.0)).sum(axis=1) / sxx
    return np.where(sxx > 1e-12 * np.maximum(1.0, (x ** 2).max()), slopes, np.nan)


def paired_trend(dose: np.ndarray | list, values: np.ndarray, alpha: float = 0.05, power: float = 0.8,
                 confidence: float = 0.95) -> Trend:
    """Within-input trend: each unit's (row's) least-squares slope over the doses (columns), then a one-sample
    t-test of the mean slope against 0 over units (df = n − 1). Not testable with fewer than 2 units with a slope.
    """
    slopes = unit_slopes(dose, values)
    slopes = slopes[np.isfinite(slopes)]
    n = len(slopes)
    method = "per-input slope over doses, one-sample t-test (inputs as units)"
    if n < 2:
        return _untestable(n, method, f"{n} input(s) seen at ≥ 2 doses: a test over inputs needs ≥ 2")
    sd = float(np.std(slopes, ddof=1))
    return _finish(float(slopes.mean()), sd / math.sqrt(n), n - 1, n, method, alpha, power, confidence,
                   residual_sd=sd)


def generators_for_power(effect: float, residual_sd: float, doses: np.ndarray | list, alpha: float = 0.05,
                         power: float = 0.8, max_replicates: int = 200) -> int | None:
    """Generators needed to detect slope ``effect`` with ``power`` when the design ``doses`` (one generator each)
    is replicated r times with between-generator SD ``residual_sd``: the smallest r·len(doses) with enough power
    (None if more than ``max_replicates`` replicates would be needed or the inputs are not finite)."""
    x = np.asarray(doses, float)
    if not (math.isfinite(effect) and residual_sd > 0 and np.unique(x).size > 1):
        return None
    sxx = float(((x - x.mean()) ** 2).sum())
    for r in range(1, max_replicates + 1):
        df = r * len(x) - 2
        if df >= 1 and t_power(abs(effect) / (residual_sd / math.sqrt(r * sxx)), df, alpha) >= power:
            return r * len(x)
    return None


def inputs_for_power(effect: float, slope_sd: float, alpha: float = 0.05, power: float = 0.8,
                     max_units: int = 100_000) -> int | None:
    """Inputs needed for the within-input trend to detect mean slope ``effect`` with ``power`` when per-input
    slopes have SD ``slope_sd`` (None when not finite or more than ``max_units``)."""
    if not (math.isfinite(effect) and effect != 0 and slope_sd > 0):
        return None
    n = 2
    while n <= max_units:
        if t_power(abs(effect) / (slope_sd / math.sqrt(n)), n - 1, alpha) >= power:
            return n
        n = n + 1 if n < 64 else int(n * 1.1)
    return None


def slope_power(effect: float, between_var: float, doses: np.ndarray | list, alpha: float = 0.05) -> float:
    """Power of :func:`generator_trend` (two-sided, level ``alpha``) to detect slope ``effect`` when generators at
    ``doses`` (one entry per generator) scatter around the line with variance ``between_var`` (training seed plus
    the sampling noise of each generator's mean): noncentral t with n − 2 df and ncp = effect·√Sxx/√between_var."""
    x = np.asarray(doses, float)
    sxx = float(((x - x.mean()) ** 2).sum())
    if not (math.isfinite(effect) and between_var > 0 and sxx > 0 and len(x) > 2):
        return math.nan
    return t_power(effect * math.sqrt(sxx / between_var), len(x) - 2, alpha)
