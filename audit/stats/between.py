"""Intervals for the spread of independent group estimates: the range max_g θ_g − min_g θ_g and, through logs, the
disparity ratio min_g θ_g / max_g θ_g.

The range is the largest pairwise difference, R = max_{i<j} |θ_i − θ_j|. Simultaneous intervals [L_ij, U_ij] for
every difference θ_i − θ_j (single-step max-|T| over the pairs, :class:`audit.stats.simultaneous.WaldMaxT`, with the
pairs' covariance from the groups' independent standard errors) hold together with probability 1 − α, and then
|θ_i − θ_j| lies in [max(0, L_ij, −U_ij), max(|L_ij|, |U_ij|)] for every pair, so

    R ∈ [max_ij max(0, L_ij, −U_ij), max_ij max(|L_ij|, |U_ij|)]

with probability at least 1 − α. With two groups this is the interval of |θ_1 − θ_2| folded from the usual one of
θ_1 − θ_2 (Bonett & Price 2002 for medians). Every estimate of the range is ≥ 0, so it is biased upwards where
groups are equal and a percentile bootstrap of max − min then almost never covers R = 0; here R = 0 is covered
exactly when no pair differs significantly (probability 1 − α), and with more than two groups the interval is
conservative elsewhere (the extreme pair gets the simultaneous critical value). Groups are independent (disjoint
inputs), so the pairs' covariance is exact.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from audit.stats.simultaneous import WaldMaxT


def range_interval(estimates: np.ndarray, se: np.ndarray, confidence: float = 0.95, df: float = math.inf
                   ) -> tuple[float, float]:
    """Interval for max − min of the groups' ``estimates`` with independent standard errors ``se`` (see the module
    docstring). Groups with a NaN estimate (no values) are left out; NaN when fewer than two remain or any of them
    has no standard error (NaN). A pair whose standard errors are both 0 keeps its difference as its interval."""
    theta, s = np.asarray(estimates, float), np.asarray(se, float)
    keep = np.isfinite(theta)
    theta, s = theta[keep], s[keep]
    if len(theta) < 2 or not np.isfinite(s).all():
        return math.nan, math.nan
    pairs = np.array(list(combinations(range(len(theta)), 2)))
    contrast = np.zeros((len(pairs), len(theta)))
    contrast[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    contrast[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    difference = contrast @ theta
    test = WaldMaxT(difference, contrast @ np.diag(s * s) @ contrast.T, df=df)
    low, high = test.intervals(confidence)
    low, high = np.where(test.active, low, difference), np.where(test.active, high, difference)
    lowest = np.maximum(0.0, np.maximum(low, -high))
    return float(lowest.max()), float(np.maximum(np.abs(low), np.abs(high)).max())


def ratio_interval(log_estimates: np.ndarray, log_se: np.ndarray, confidence: float = 0.95, df: float = math.inf
                   ) -> tuple[float, float]:
    """Interval for min / max of positive group quantities from their logs and the logs' standard errors:
    min/max = exp(−(max − min) of the logs), so it is exp(−·) of :func:`range_interval` on the log scale."""
    low, high = range_interval(log_estimates, log_se, confidence, df)
    return math.exp(-high), math.exp(-low)
