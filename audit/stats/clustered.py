"""Means of per-row values over a stratified, clustered design (strata fixed by the sampling, e.g. inputs per group;
clusters = inputs, whose several samples are correlated), with the linearised (sandwich) covariance.

The estimate is the row mean θ̂ = Σ_i t_i / M (t_i = the total of cluster i, M = the number of rows). Its
covariance is the usual with-replacement survey estimator (Rao & Scott; Wolter, *Introduction to Variance
Estimation*, ch. 6) for the stratified mean θ̂ = Σ_h (M_h/M)·θ̂_h with the stratum row counts M_h taken as fixed
(strata are groups of inputs fixed by the sampling): with u_i = (t_i − θ̂_h·m_i)/M (m_i = rows of cluster i,
θ̂_h its stratum's mean), V = Σ_h n_h/(n_h − 1) · Σ_{i∈h} u_i u_iᵀ over strata h with n_h ≥ 2 clusters; within a
stratum this is the CR1 cluster-robust covariance of its mean (statsmodels' ``cov_type="cluster"``). It uses every
sample and respects their clustering; degrees of freedom n_clusters − n_strata, or Cochran's effective degrees of
freedom (Satterthwaite) of the strata's terms (``ClusteredMean.effective_df``), fewer when few strata carry the
variance.

``floor`` guards the variance where the data cannot show it (every sample of a stratum equal, e.g. 0 flips in 40
outputs, or a stratum of one input): per stratum and component, the diagonal is raised to at least
(M_h/M)²·floor[h, r], keeping V positive semi-definite. :func:`indicator_floor` gives the floor of a 0/1 component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def indicator_floor(successes: np.ndarray, rows: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Least variance of the mean of a 0/1 value over ``rows`` rows in ``clusters`` clusters (arrays broadcast).

    With a Jeffreys-smoothed share p̃ = (x + ½)/(rows + 1) (never 0 or 1): p̃(1 − p̃)/rows when there are ≥ 2
    clusters (the variance of the mean of independent rows; any cluster in which rows vary together only adds to
    it, so this is a lower bound under a Bernoulli model per row), and p̃(1 − p̃)/clusters with a single cluster
    (the bound when samples of an input are identical, since its spread cannot be estimated). 0 where rows = 0.
    """
    x, m, n = np.broadcast_arrays(*(np.asarray(a, float) for a in (successes, rows, clusters)))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (x + 0.5) / (m + 1)
        out = p * (1 - p) / np.where(n >= 2, m, n)
    return np.where(m > 0, out, 0.0)


def pooled_design_effect(rates: np.ndarray, variances: np.ndarray, rows: np.ndarray) -> float:
    """Design effect of 0/1 means pooled over strata (or components): Σ m²·v / Σ m·p(1 − p), the ratio of the
    observed to the independent-rows variance of the row totals, i.e. the per-stratum design effects averaged with
    weights m·p(1 − p); at least 1 (clustered samples of an input vary together, never against each other). Pooling
    steadies the estimate when a stratum has few events; 1 when no stratum varies."""
    p, v, m = (np.asarray(a, float) for a in (rates, variances, rows))
    binomial = float(np.sum(m * p * (1 - p)))
    return max(1.0, float(np.sum(m * m * v)) / binomial) if binomial > 0 else 1.0


def deff_floored_variance(rates: np.ndarray, variances: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Variance of each 0/1 mean (components of one clustered mean, e.g. the output classes of one input class),
    at least D·p̂(1 − p̂)/m with D the components' :func:`pooled_design_effect`: a rare component's own design effect,
    estimated from a few clustered events, is noisy and mostly too small. Equals the observed variance of
    independent rows (D = 1 then)."""
    p, v, m = (np.asarray(a, float) for a in (rates, variances, rows))
    d = pooled_design_effect(p, v, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.maximum(v, np.where(m > 0, d * p * (1 - p) / m, 0.0))


def null_floored_variance(rates: np.ndarray, variances: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Variance of each stratum's 0/1 mean for a test that all strata share one rate: the observed (cluster-robust)
    variance, floored at its value under that null, D·p̄(1 − p̄)/m (p̄ the pooled row rate, D the
    :func:`pooled_design_effect`). An observed rate near 0 or 1 by chance shrinks p̂(1 − p̂) and with it the Wald
    variance, inflating |T| exactly where the data happen to look extreme; the null value does not (score-type
    variance). Strata without rows keep their variance."""
    p, v, m = (np.asarray(a, float) for a in (rates, variances, rows))
    pooled = float(np.sum(p * m) / np.sum(m)) if np.sum(m) > 0 else 0.0
    d = pooled_design_effect(p, v, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        null = np.where(m > 0, d * pooled * (1 - pooled) / m, 0.0)
    return np.maximum(v, null)


@dataclass(frozen=True)
class ClusteredMean:
    """Row mean of ``values`` (n_rows × k) and its stratified cluster-robust covariance (see the module docstring).

    Attributes: estimate (k,), cov (k, k), n_rows, n_clusters, n_strata, df = n_clusters − n_strata,
    stratum_keys (sorted stratum labels), stratum_rows and stratum_clusters (per stratum), stratum_variance
    (n_strata, k): each stratum's term n_h/(n_h − 1)·Σ_{i∈h} u_i² of the variances (the diagonal of cov before any
    floor; 0 in a stratum of one cluster).
    """

    estimate: np.ndarray
    cov: np.ndarray
    n_rows: int
    n_clusters: int
    n_strata: int
    df: int
    stratum_keys: np.ndarray
    stratum_rows: np.ndarray
    stratum_clusters: np.ndarray
    stratum_variance: np.ndarray

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 0, None))

    @property
    def effective_df(self) -> np.ndarray:
        """Cochran's effective degrees of freedom of each variance, (k,) (Satterthwaite 1946; Cochran 1977, *Sampling
        Techniques*, 3rd ed., eq. 5.16): with v̂ = Σ_h v_h, v_h = g_h·s_h² the term of stratum h (g_h = n_h, s_h² =
        Σ_{i∈h} u_i²/(n_h − 1) the variance of its n_h clusters' u_i, whose mean is 0),
        ν = (Σ_h v_h)² / Σ_h v_h²/(n_h − 1) over strata of n_h ≥ 2 clusters. ν ≤ Σ_h (n_h − 1) = df, with equality
        when the strata contribute equally per degree of freedom; few strata carrying the variance give fewer.
        ``df`` itself with one stratum and where no stratum varies (v̂ = 0, nothing to weigh)."""
        df = np.full(self.stratum_variance.shape[1], float(self.df))
        if self.n_strata < 2:
            return df
        v = self.stratum_variance
        freedom = (self.stratum_clusters - 1.0)[:, None]
        spread = np.sum(np.where(freedom > 0, v * v / np.where(freedom > 0, freedom, 1.0), 0.0), axis=0)
        total = v.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            nu = np.minimum(total * total / spread, df)
        return np.where(spread > 0, nu, df)


def stratum_codes(strata: np.ndarray | None, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, sorted keys); without strata every row is in one stratum labelled "all"."""
    if strata is None:
        return np.zeros(n_rows, int), np.array(["all"], dtype=object)
    codes, keys = pd.factorize(np.asarray(strata, dtype=object), sort=True)
    if (codes < 0).any():
        raise ValueError("strata must not be missing")
    return codes, np.asarray(keys, dtype=object)


def clustered_mean(values: np.ndarray, clusters: np.ndarray | None = None, strata: np.ndarray | None = None,
                   floor: np.ndarray | None = None) -> ClusteredMean:
    """The :class:`ClusteredMean` of ``values`` (n_rows,) or (n_rows, k), finite. Without ``clusters`` every row is
    its own cluster; without ``strata`` one stratum. Clusters must be nested in strata. ``floor`` is
    (n_strata, k) (strata in sorted order, see :func:`stratum_codes`)."""
    y = np.asarray(values, float)
    y = y.reshape(len(y), -1)
    if not np.isfinite(y).all():
        raise ValueError("values must be finite")
    n_rows, k = y.shape
    s_codes, keys = stratum_codes(strata, n_rows)
    c_codes = np.arange(n_rows) if clusters is None else pd.factorize(np.asarray(clusters, dtype=object))[0]
    if (c_codes < 0).any():
        raise ValueError("clusters must not be missing")
    n_c = int(c_codes.max()) + 1 if n_rows else 0
    stratum_of = np.zeros(n_c, int)
    stratum_of[c_codes] = s_codes
    if np.any(stratum_of[c_codes] != s_codes):
        raise ValueError("every cluster must lie in a single stratum")
    totals = np.zeros((n_c, k))
    np.add.at(totals, c_codes, y)
    m = np.bincount(c_codes, minlength=n_c).astype(float)
    n_strata = len(keys)
    theta = totals.sum(axis=0) / n_rows if n_rows else np.full(k, np.nan)
    rows_h = np.bincount(s_codes, minlength=n_strata)
    clusters_h = np.bincount(stratum_of, minlength=n_strata)
    sums_h = np.zeros((n_strata, k))
    np.add.at(sums_h, stratum_of, totals)
    theta_h = sums_h / np.maximum(rows_h, 1)[:, None]
    u = (totals - m[:, None] * theta_h[stratum_of]) / max(n_rows, 1)
    cov = np.zeros((k, k))
    own = np.zeros((n_strata, k))
    for h in range(n_strata):
        uh = u[stratum_of == h]
        nh = len(uh)
        s = np.zeros((k, k))
        if nh >= 2:
            s = nh / (nh - 1) * uh.T @ uh
        own[h] = np.diag(s)
        if floor is not None:
            least = (rows_h[h] / max(n_rows, 1)) ** 2 * np.asarray(floor, float)[h]
            s = s + np.diag(np.clip(least - np.diag(s), 0, None))
        cov += s
    return ClusteredMean(theta, cov, n_rows, n_c, n_strata, n_c - n_strata, keys, rows_h, clusters_h, own)
