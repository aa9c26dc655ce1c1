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

from audit.stats.estimate import Estimate, t_power

MAX_EXACT_PERMUTATIONS = 50_000  # enumerate every permutation up to this many (9 generators: 362 880 → sampled)


@dataclass(frozen=True)
class Trend(Estimate):
    """One dose–response slope with its test (:class:`~audit.stats.estimate.Estimate`: ``estimate`` is the slope,
    ``n`` the units).

    Attributes:
        estimate: change of the metric per unit of dose (metric unit / dose unit), also :attr:`slope`; NaN when
            not testable.
        n: generators (between design) or inputs (within design) used, also :attr:`n_units`.
        mde: the slope detectable with ``power`` at level ``alpha`` (two-sided) given ``se`` and ``df``.
        method: which design and test; notes: why not testable, or warnings.
        intercept: fitted value at dose 0 (between design; NaN for the within design).
        residual_sd: SD of generators around the line (between) or of per-input slopes (within).
    """

    KIND = "trend"
    EFFECT_LABEL = "slope per unit dose"
    NO_VARIATION = "no variation around the trend (standard error 0)"

    intercept: float = math.nan
    residual_sd: float = math.nan

    @property
    def slope(self) -> float:
        return self.estimate

    @property
    def n_units(self) -> int:
        return self.n


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
        return Trend.untestable(math.nan, len(x), method,
                                f"{len(x)} generator(s) with a value: a slope over generators needs ≥ 3")
    if np.unique(x).size < 2:
        return Trend.untestable(math.nan, len(x), method, "every generator has the same dose")
    sxx = float(((x - x.mean()) ** 2).sum())
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    intercept = float(y.mean() - slope * x.mean())
    df = len(x) - 2
    resid = y - intercept - slope * x
    s = math.sqrt(float((resid ** 2).sum()) / df) if df > 0 else math.nan
    notes = "" if np.unique(x).size > 2 or df > 1 else "one residual degree of freedom: very low power"
    return Trend.from_se(slope, s / math.sqrt(sxx), df, len(x), method, alpha, power, confidence, notes,
                         intercept=intercept, residual_sd=s)


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
        return Trend.untestable(math.nan, n, method, f"{n} input(s) seen at ≥ 2 doses: a test over inputs needs ≥ 2")
    sd = float(np.std(slopes, ddof=1))
    return Trend.from_se(float(slopes.mean()), sd / math.sqrt(n), n - 1, n, method, alpha, power, confidence,
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
