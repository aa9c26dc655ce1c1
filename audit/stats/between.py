"""Intervals for the spread of independent group estimates: the range max_g θ_g − min_g θ_g and, through logs, the
disparity ratio min_g θ_g / max_g θ_g.

The range is the largest pairwise difference, R = max_{i<j} |θ_i − θ_j|. Simultaneous intervals [L_ij, U_ij] for
every difference θ_i − θ_j (single-step max-|T| over the pairs, :class:`audit.stats.simultaneous.WaldMaxT`, with the
pairs' covariance from the groups' independent standard errors) hold together with probability 1 − α, and then
|θ_i − θ_j| lies in [max(0, L_ij, −U_ij), max(|L_ij|, |U_ij|)] for every pair, so

    R ∈ [max_ij max(0, L_ij, −U_ij), max_ij max(|L_ij|, |U_ij|)]

with probability at least 1 − α. With two groups this is the interval of |θ_1 − θ_2| folded from the usual one of
θ_1 − θ_2 (Newcombe 1998 for two rates of independent rows). Every estimate of the range is ≥ 0, so it is biased
upwards where groups are equal and a percentile bootstrap of max − min then almost never covers R = 0; here R = 0 is
covered exactly when no pair differs significantly (probability 1 − α), and with more than two groups the interval
is conservative elsewhere (the extreme pair gets the simultaneous critical value). Groups are independent (disjoint
inputs), so the pairs' covariance is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import combinations

import numpy as np

from audit.stats.simultaneous import WaldMaxT


def range_interval(estimates: np.ndarray, se: np.ndarray, confidence: float = 0.95, df: float = math.inf,
                   bounds: Callable[[float], tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[float, float]:
    """Interval for max − min of the groups' ``estimates`` with independent standard errors ``se`` (see the module
    docstring). Groups with a NaN estimate (no values) are left out; NaN when fewer than two remain or any of them
    has no standard error (NaN).

    The critical value c is the max-|T| quantile of the pairwise differences (t with ``df``). Each pair's interval
    is built from the two groups' intervals at c, ``bounds(c)`` → (low, high) per group (default θ ± c·se), by MOVER
    (Zou & Donner 2008; Newcombe 1998 for two proportions): L = d − √((θ_i − l_i)² + (u_j − θ_j)²),
    U = d + √((u_i − θ_i)² + (θ_j − l_j)²) for d = θ_i − θ_j. With θ ± c·se bounds this is d ∓ c·√(se_i² + se_j²);
    asymmetric bounds (Wilson's for rates near 0 or 1, sign-test bounds of a skewed median) carry their shape into
    the difference."""
    theta, s = np.asarray(estimates, float), np.asarray(se, float)
    keep = np.isfinite(theta)
    if keep.sum() < 2 or not np.isfinite(s[keep]).all():
        return math.nan, math.nan
    theta, s = theta[keep], s[keep]
    pairs = np.array(list(combinations(range(len(theta)), 2)))
    contrast = np.zeros((len(pairs), len(theta)))
    contrast[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    contrast[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    test = WaldMaxT(contrast @ theta, contrast @ np.diag(s * s) @ contrast.T, df=df)
    c = test.critical(confidence) if test.k else 0.0
    if bounds is None:
        low, high = theta - c * s, theta + c * s
    else:
        low, high = (np.asarray(b, float)[keep] for b in bounds(c))
    i, j = pairs[:, 0], pairs[:, 1]
    d = theta[i] - theta[j]
    with np.errstate(invalid="ignore"):  # infinite bounds (log of a rate's 0) give infinite limits
        pair_low = d - np.hypot(theta[i] - low[i], high[j] - theta[j])
        pair_high = d + np.hypot(high[i] - theta[i], theta[j] - low[j])
    lowest = np.maximum(0.0, np.maximum(pair_low, -pair_high))
    return float(lowest.max()), float(np.maximum(np.abs(pair_low), np.abs(pair_high)).max())


def ratio_interval(log_estimates: np.ndarray, log_se: np.ndarray, confidence: float = 0.95, df: float = math.inf,
                   log_bounds: Callable[[float], tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[float, float]:
    """Interval for min / max of positive group quantities from their logs and the logs' standard errors (and
    optionally the logs of their intervals at c, see :func:`range_interval`): min/max = exp(−(max − min) of the
    logs), so it is exp(−·) of :func:`range_interval` on the log scale."""
    low, high = range_interval(log_estimates, log_se, confidence, df, log_bounds)
    return math.exp(-high), math.exp(-low)
