"""Confidence intervals: Wilson and Clopper–Pearson for binomial rates, Korn & Graubard's Clopper–Pearson interval at
the effective size for rates of clustered rows, a sign-test interval for the median of
clustered rows, and a stratified cluster bootstrap.

All rates are proportions in [0, 1]; intervals are two-sided at level ``confidence`` (default 0.95).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from scipy import sparse, stats

from audit.stats.clustered import clustered_mean

ArrayLike = np.ndarray | pd.Series | list
Interval = tuple[np.ndarray, np.ndarray]  # (low, high)


def _z(confidence: float) -> float:
    """Two-sided normal quantile z = Φ⁻¹(1 − α/2), α = 1 − confidence."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _counts(successes: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, m = np.broadcast_arrays(np.asarray(successes, float), np.asarray(n, float))
    if np.any((x < 0) | (x > m)):
        raise ValueError("need 0 <= successes <= n")
    return x, m


def wilson_bounds(successes: ArrayLike, n: ArrayLike, z: float) -> Interval:
    """Wilson score bounds at normal quantile ``z`` (vectorised; n = 0 gives NaN): with p̂ = x/n,
    centre = (x + z²/2)/(n + z²), half-width = z/(n + z²)·√(x(n − x)/n + z²/4); the set of p whose score
    statistic |x − np|/√(np(1 − p)) is at most z. Returns (low, high) in [0, 1]."""
    x, m = _counts(successes, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = (x + z * z / 2) / (m + z * z)
        half = z / (m + z * z) * np.sqrt(np.clip(x * (m - x) / m, 0, None) + z * z / 4)
    low = np.where(m > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    high = np.where(m > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def wilson_interval(successes: ArrayLike, n: ArrayLike, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion at level ``confidence`` (see :func:`wilson_bounds`;
    z = Φ⁻¹(1 − α/2)). Returns (low, high) in [0, 1]; n = 0 gives NaN."""
    return wilson_bounds(successes, n, _z(confidence))


def beta_bounds(successes: ArrayLike, n: ArrayLike, tail: float) -> Interval:
    """Clopper–Pearson bounds with probability ``tail`` on each side (vectorised; x and n need not be whole):
    low = Beta⁻¹(tail; x, n − x + 1), high = Beta⁻¹(1 − tail; x + 1, n − x), with low = 0 at x = 0 and high = 1 at
    x = n; n = 0 gives NaN. Returns (low, high) in [0, 1]."""
    x, m = _counts(successes, n)
    with np.errstate(invalid="ignore"):
        low = np.where(x > 0, stats.beta.ppf(tail, np.where(x > 0, x, 1), m - x + 1), 0.0)
        high = np.where(x < m, stats.beta.ppf(1 - tail, x + 1, np.where(x < m, m - x, 1)), 1.0)
    empty = ~(m > 0)
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def effective_size(share: ArrayLike, variance: ArrayLike, rows: ArrayLike, clusters: ArrayLike) -> np.ndarray:
    """Kish effective sample size of a share estimated from clustered rows: the rows divided by the design effect
    V̂ / V̂_srs, where V̂_srs = p̂(1 − p̂)/(rows − 1) is the same (unbiased) variance estimator's value for independent
    rows, so that one row per cluster gives n_eff = rows exactly; at least 1 (above the rows when stratification
    makes the share more precise than independent rows would). When p̂ is 0 or 1 the
    design effect cannot be estimated and n_eff = the number of clusters (inputs): the conservative choice, as if
    an input's samples always agreed."""
    p, v, m, c = np.broadcast_arrays(*(np.asarray(a, float) for a in (share, variance, rows, clusters)))
    with np.errstate(invalid="ignore", divide="ignore"):
        n_eff = np.maximum(p * (1 - p) / v * m / (m - 1), 1.0)
    return np.where((p <= 0) | (p >= 1) | ~np.isfinite(n_eff), np.maximum(c, 0.0), n_eff)


def effective_size_bounds(share: ArrayLike, n_eff: ArrayLike, rows: ArrayLike, df: ArrayLike, tail: float,
                          least: ArrayLike | None = None) -> Interval:
    """Clopper–Pearson bounds (:func:`beta_bounds`, ``tail`` on each side) of a share from clustered rows at size
    n* = max(n_eff·(t_{rows−1}/t_df)², least) with x* = p̂·n* (Korn & Graubard 1998): ``n_eff`` the Kish effective
    size (:func:`effective_size`), the factor :func:`df_adjusted_size` at ``tail``, ``least`` an optional floor (NaN:
    none). NaN without rows, and where df < 1 or rows < 2 without a floor."""
    p = np.clip(np.asarray(share, float), 0, 1)
    n = np.asarray(rows, float)
    size = df_adjusted_size(n_eff, n, df, tail)
    if least is not None:
        size = np.fmax(size, np.asarray(least, float))
    size = np.where((n <= 0) | ~(size > 0), np.nan, size)
    return beta_bounds(p * size, size, tail)  # NaN where the size is


def effective_size_interval(share: ArrayLike, variance: ArrayLike, rows: ArrayLike, clusters: ArrayLike,
                            confidence: float = 0.95, df: ArrayLike | None = None,
                            least: ArrayLike | None = None) -> Interval:
    """Korn & Graubard's (1998, *Survey Methodology* 24:193) interval of a share from clustered rows: Clopper–Pearson
    at the df-adjusted effective size n* = max(n_eff·(t_{rows−1}/t_df)², least) with x* = p̂·n*, i.e. low =
    Beta⁻¹(α/2; x*, n* − x* + 1) (0 at x* = 0), high = Beta⁻¹(1 − α/2; x* + 1, n* − x*) (1 at x* = n*)
    (:func:`effective_size_bounds`; NCHS's standard for proportions, R survey's ``svyciprop(method = "beta")``).
    n_eff is the Kish effective sample size (:func:`effective_size`), the factor is Korn & Graubard's degrees-of-freedom
    adjustment at α/2 (:func:`df_adjusted_size`, as in ``svyciprop``), since the design effect is estimated from few
    clusters; ``df`` of the variance, by default clusters − 1 (one stratum; for a stratified share Cochran's effective
    df of its stratified variance, :attr:`audit.stats.clustered.ClusteredMean.effective_df`, at most inputs − strata).
    ``least`` (optional; NaN: none) is a size known to be conservative, e.g. :func:`least_effective_size` of the
    cluster sizes (and strata), rows²/Σm_i² without strata, the size at the largest variance any dependence within
    clusters allows (Bhatia & Davis 2000). One difference from ``svyciprop``: its n_eff is p̂(1 − p̂)/V̂, ours takes
    the design effect against p̂(1 − p̂)/(rows − 1) (:func:`effective_size`), so that with one row per cluster and
    df = rows − 1 (factor 1) this is exactly the Clopper–Pearson interval of x of n (``svyciprop``'s is at n − 1);
    neither caps n* at the rows. Never zero width. NaN without rows, and where df < 1 or rows < 2 without a floor.

    Why not Wilson at n*: the variance side is the same, but at a handful of effective rows the score interval
    under-covers near 0 and 1 (``benchmarks/RESULTS.md``: transition rates at 1/30 from 5 inputs covered 0.912,
    a one-input age bin at 0.8 covered 0.896); Clopper–Pearson covers at least the level at every p for independent
    rows, at the price of being conservative (wider) at large n."""
    p = np.asarray(share, float)
    n = np.asarray(rows, float)
    d = np.asarray(clusters, float) - 1 if df is None else np.asarray(df, float)
    n_eff = effective_size(p, variance, n, clusters)
    return effective_size_bounds(p, n_eff, n, d, (1 - confidence) / 2, least)


def cluster_rows(clusters: ArrayLike | None, rows: int) -> np.ndarray:
    """The number of rows of each cluster of ``rows`` rows labelled ``clusters`` (every row its own cluster when
    None), e.g. for :func:`least_effective_size`."""
    if clusters is None:
        return np.ones(rows, int)
    return np.bincount(pd.factorize(np.asarray(clusters, dtype=object))[0])


def cluster_strata(clusters: ArrayLike | None, strata: ArrayLike) -> np.ndarray:
    """The stratum of each cluster, in the order of :func:`cluster_rows` (first appearance), from the stratum of each
    row (clusters nested in strata; every row its own cluster when ``clusters`` is None), e.g. for
    :func:`least_effective_size`."""
    s = np.asarray(strata, dtype=object)
    if clusters is None:
        return s
    codes = pd.factorize(np.asarray(clusters, dtype=object))[0]
    out = np.empty(codes.max() + 1 if len(codes) else 0, dtype=object)
    out[codes] = s
    return out


def order_statistic_rank(n: int, confidence: float = 0.95) -> int:
    """The largest k with P[Bin(n, ½) ≤ k − 1] ≤ α/2: [x_(k), x_(n−k+1)] of n independent values covers their
    median with probability ≥ ``confidence`` for every continuous distribution (the sign-test interval). 0 when no
    such k exists (n < 6 at 95 %)."""
    if n < 1:
        return 0
    return int(np.count_nonzero(stats.binom.cdf(np.arange(n + 1), n, 0.5) <= (1 - confidence) / 2))


def df_adjusted_size(n_eff: ArrayLike, rows: ArrayLike, df: ArrayLike, tail: float) -> np.ndarray:
    """Korn & Graubard's (1998, *Survey Methodology* 24:193) degrees-of-freedom adjustment of an effective sample
    size whose design effect is estimated from few clusters: n_eff·(t_{rows−1}/t_df)², both t quantiles at upper
    tail probability ``tail`` (α/2 for a 95 % interval; the per-comparison tail of a simultaneous critical value).
    An interval at the adjusted size with the normal quantile is the one at n_eff with t_df's, relative to
    independent rows. NaN where rows < 2 or df < 1."""
    n, m, d = np.broadcast_arrays(*(np.asarray(a, float) for a in (n_eff, rows, df)))
    with np.errstate(invalid="ignore"):
        ratio = stats.t.isf(tail, np.where(m >= 2, m - 1, np.nan)) / stats.t.isf(tail, np.where(d >= 1, d, np.nan))
    return n * ratio**2


def least_effective_size(cluster_rows: ArrayLike, strata: ArrayLike | None = None) -> float:
    """M / max_h c_h with c_h = Σ_{i∈h} m_i² / M_h, for clusters of m_i rows in strata h of M_h rows (``strata``: the
    stratum of each cluster, e.g. :func:`cluster_strata`; None: one stratum, where it is M²/Σ m_i², the number of
    clusters when they are of equal size): the effective size of a 0/1 row mean at the largest variance any dependence
    within clusters allows. What it bounds is the variance: an interval at this size is as good as the same interval at
    that many independent rows, whatever the samples of an input share, and no better: Wilson's score interval kept its
    small-n shortfall near 0 and 1 (7 groups × 1 input whose 3 samples always agree, floor 7: coverage 0.87 at a true
    rate of 0.02 or 0.98), which is why :func:`effective_size_interval` is Clopper–Pearson's. It assumes, like the
    variance it floors, that inputs' rates are unrelated to their row counts within a stratum (not so when rows go
    missing in step with the outcome, e.g. outputs without a face where the rate is low; then the bound can fail with
    unequal counts). NaN without rows.

    Why: the row mean θ̂ = Σ_i S_i / M = Σ_h (M_h/M)·θ̂_h (S_i the count of cluster i; the stratum row counts fixed,
    clusters independent, those of stratum h with mean rate p_h). S_i lies in [0, m_i] with mean m_i·p_h, so
    Var(S_i) ≤ m_i²·p_h(1 − p_h) (Bhatia & Davis 2000), and
    Var(θ̂) ≤ Σ_h Σ_{i∈h} m_i²·p_h(1 − p_h) / M² = Σ_h (M_h/M)·c_h·p_h(1 − p_h) / M
           ≤ (max_h c_h / M) · Σ_h (M_h/M)·p_h(1 − p_h) ≤ (max_h c_h / M) · p(1 − p),
    the last step by concavity of p(1 − p) at p = Σ_h (M_h/M)·p_h = E θ̂ (Jensen). So θ̂ varies at most as a share of
    M / max_h c_h independent rows, in terms of the p a score interval tests; equal when every cluster's rows agree,
    the strata share one rate and c_h is the same in each."""
    m = np.asarray(cluster_rows, float)
    if not m.size or m.sum() <= 0:
        return math.nan
    codes = np.zeros(m.size, int) if strata is None else pd.factorize(np.asarray(strata, dtype=object))[0]
    if len(codes) != m.size or (codes < 0).any():
        raise ValueError("strata must give the stratum (not missing) of each cluster")
    rows_h, squares_h = np.bincount(codes, weights=m), np.bincount(codes, weights=m * m)
    held = rows_h > 0
    return float(np.min(m.sum() * rows_h[held] / squares_h[held]))


def effective_inputs(values: ArrayLike, clusters: ArrayLike | None = None, strata: ArrayLike | None = None,
                     confidence: float = 0.95) -> int:
    """⌊n_eff⌋, the effective number of independent rows behind the median of clustered rows: the Kish effective size
    (:func:`effective_size`, at most the rows) of the indicator 1{y ≤ median}, whose design effect comes from the
    stratified cluster-robust variance of :func:`audit.stats.clustered.clustered_mean` (Woodruff's 1952 route for
    quantiles of complex samples), adjusted by :func:`df_adjusted_size` at α/2 with df = inputs − strata (Korn &
    Graubard 1998), since the design effect is estimated from few inputs. With one row per input and no strata it
    is the number of rows. 0 with fewer than two inputs per stratum (df < 1)."""
    v = np.asarray(values, float)
    n = len(v)
    if n == 0 or not np.isfinite(v).all():
        raise ValueError("a median's effective size needs at least one value, all finite")
    below = (v <= np.median(v)).astype(float)
    design = clustered_mean(below, None if clusters is None else np.asarray(clusters),
                            None if strata is None else np.asarray(strata))
    if design.df < 1:
        return 0
    n_eff = min(float(effective_size(design.estimate[0], design.cov[0, 0], n, design.n_clusters)), n)
    return math.floor(float(df_adjusted_size(n_eff, n, design.df, (1 - confidence) / 2)) + 1e-9)


def rank_bounds(values: ArrayLike, m: int, k: int) -> tuple[float, float]:
    """The k-th smallest and k-th largest of m effective values, read off the n rows: the smallest row value with at
    least a share (k − ½)/m of the rows ≤ it, and the largest with at least that share ≥ it (ties counted on both
    sides). With m = n rows this is exactly (x_(k), x_(n−k+1))."""
    s = np.sort(np.asarray(values, float))
    n = len(s)
    at_most = np.searchsorted(s, s, side="right")  # rows ≤ s[j]
    at_least = n - np.searchsorted(s, s, side="left")  # rows ≥ s[j]
    inside_low, inside_high = 2 * at_most * m >= (2 * k - 1) * n, 2 * at_least * m >= (2 * k - 1) * n
    return float(s[np.argmax(inside_low)]), float(s[n - 1 - np.argmax(inside_high[::-1])])


def median_interval(values: ArrayLike, clusters: ArrayLike | None = None, strata: ArrayLike | None = None,
                    confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median of clustered rows: the sign-test (order-statistic) interval at the
    effective number of independent rows. Returns (low, high); NaN when the data cannot give one.

    For n independent values the exact interval is [x_(k), x_(n−k+1)] with k from :func:`order_statistic_rank`
    (``scipy.stats.quantile_test(...).confidence_interval``): θ is inside iff at least a share k/n of the values is
    ≤ θ and at least k/n is ≥ θ. Samples of one input are not independent, so the sign count's variance is larger
    by the design effect of the indicator 1{y ≤ median}: the interval keeps the threshold share k/m with m the
    effective number of inputs (:func:`effective_inputs`; :func:`rank_bounds`). With one row per input and no strata
    this is exactly the independent interval.

    Why not a bootstrap: the percentile interval of a cluster-bootstrapped median covered 0.918–0.926 in
    ``benchmarks/validity.py`` (100 inputs × 2 samples per group); the median's bootstrap distribution is discrete
    and BCa needs a jackknife, which is inconsistent for the median. This interval needs no replicates or seed.
    NaN (no interval) with fewer than two inputs per stratum or m below the smallest size that reaches the level
    (6 at 95 %)."""
    m = effective_inputs(values, clusters, strata, confidence)
    k = order_statistic_rank(m, confidence)
    return (math.nan, math.nan) if k == 0 else rank_bounds(values, m, k)


def interpolated_median_bounds(values: ArrayLike, clusters: ArrayLike | None = None,
                               confidence: float = 0.95) -> tuple[float, float]:
    """The sign-test interval of the median of clustered rows at the effective number of inputs m
    (:func:`effective_inputs` at ``confidence``), interpolated to the nominal level (Hettmansperger & Sheather 1986,
    *Statistics & Probability Letters* 4:75): with k from :func:`order_statistic_rank`, γ_k = 1 − 2·P[Bin(m, ½) ≤
    k − 1] ≥ ``confidence`` > γ_{k+1}, I = (γ_k − confidence)/(γ_k − γ_{k+1}) and λ = (m − k)·I / (k + (m − 2k)·I),
    low = (1 − λ)·x_(k) + λ·x_(k+1) and high = (1 − λ)·x_(m−k+1) + λ·x_(m−k) (order statistics of m effective
    values, :func:`rank_bounds`, ties counted on both sides). The exact interval's level jumps between the ranks k
    and k + 1; the interpolated one is nearly exact for continuous values and keeps the tied values' bounds where
    x_(k) = x_(k+1). NaN (no interval) when no rank reaches the level."""
    m = effective_inputs(values, clusters, None, confidence)
    k = order_statistic_rank(m, confidence)
    if k == 0:
        return math.nan, math.nan
    low, high = rank_bounds(values, m, k)
    if 2 * k + 1 > m:  # x_(k+1) would pass x_(m−k): nothing to interpolate towards
        return low, high
    covered = 1 - 2 * stats.binom.cdf([k - 1, k], m, 0.5)
    share = (covered[0] - confidence) / (covered[0] - covered[1])
    weight = (m - k) * share / (k + (m - 2 * k) * share)
    inner_low, inner_high = rank_bounds(values, m, k + 1)
    return low + weight * (inner_low - low), high + weight * (inner_high - high)  # exact when the two are tied


MIN_MEDIAN_SE_INPUTS = 6
"""Fewest effective inputs (:func:`effective_inputs`) for which :func:`median_se` gives a standard error: the
smallest size at which a 95 % sign-test interval exists."""


def median_se(values: ArrayLike, clusters: ArrayLike | None = None, strata: ArrayLike | None = None,
              confidence: float = 0.95) -> float:
    """Standard error of the median of clustered rows: Price & Bonett's (2001; Bonett & Price 2002, *Psychological
    Methods* 7:370) distribution-free estimate at the effective number of inputs m (:func:`effective_inputs`).

    With c = max(1, round(m/2 − √m)) and p = P[Bin(m, ½) ≤ c − 1], [x_(c), x_(m−c+1)] is an exact interval of level
    1 − 2p, so se = (x_(m−c+1) − x_(c)) / (2·Φ⁻¹(1 − p)); the order statistics are read off the rows at m effective
    values (:func:`rank_bounds`). With one row per input this is statpsych's ``ci.median`` standard error. NaN below
    :data:`MIN_MEDIAN_SE_INPUTS` effective inputs; 0 when those order statistics tie (most rows share one value)."""
    m = effective_inputs(values, clusters, strata, confidence)
    if m < MIN_MEDIAN_SE_INPUTS:
        return math.nan
    c = max(1, int(np.round(m / 2 - math.sqrt(m))))
    low, high = rank_bounds(values, m, c)
    return (high - low) / (2 * float(stats.norm.isf(stats.binom.cdf(c - 1, m, 0.5))))


def clopper_pearson_interval(successes: ArrayLike, n: ArrayLike, confidence: float = 0.95) -> Interval:
    """Clopper–Pearson ("exact") interval at level ``confidence`` (see :func:`beta_bounds`; tail α/2). Coverage is at
    least ``confidence`` for every p (conservative)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return beta_bounds(successes, n, (1 - confidence) / 2)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95, axis: int = 0) -> Interval:
    """Percentile bootstrap interval: the α/2 and 1 − α/2 quantiles of the replicates along ``axis``
    (NaN replicates, e.g. 0/0 ratios, are ignored; all-NaN gives NaN)."""
    a = 1 - confidence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(np.asarray(replicates, float), [a / 2, 1 - a / 2], axis=axis)
    return low, high


class Bootstrap:
    """A stratified cluster bootstrap design over the rows of a table.

    Each replicate draws, independently within every stratum, as many clusters as the stratum holds, uniformly with
    replacement; a row's weight is the number of times its cluster was drawn, so all samples of a drawn input come
    along (cluster bootstrap over inputs, not samples) and no group can vanish from a replicate (stratification).
    Without ``clusters`` every row is its own cluster; without ``strata`` the table is one stratum. Clusters must be
    nested in strata. The draws depend only on (seed, n_boot, strata sizes, sorted cluster ids), not on the row
    order, so two tables holding the same inputs in the same strata get identical replicates (a paired bootstrap).
    Weights are generated lazily in chunks of at most ``max_cells`` numbers and regenerated identically on every
    call, so every statistic computed from one design shares the same replicates.
    """

    def __init__(self, n_rows: int, strata: ArrayLike | None = None, clusters: ArrayLike | None = None,
                 n_boot: int = 2000, seed: int = 0, max_cells: int = 2_000_000) -> None:
        if n_boot < 1:
            raise ValueError("n_boot must be >= 1")
        self.n_rows, self.n_boot, self.seed, self.max_cells = int(n_rows), int(n_boot), int(seed), int(max_cells)
        s_codes = np.zeros(self.n_rows, int) if strata is None else pd.factorize(np.asarray(strata), sort=True)[0]
        c_codes = np.arange(self.n_rows) if clusters is None else pd.factorize(np.asarray(clusters), sort=True)[0]
        if len(s_codes) != self.n_rows or len(c_codes) != self.n_rows:
            raise ValueError("strata and clusters must have one entry per row")
        if (s_codes < 0).any() or (c_codes < 0).any():
            raise ValueError("strata and clusters must not be missing")
        n_clusters = int(c_codes.max()) + 1 if self.n_rows else 0
        stratum_of = np.full(n_clusters, -1)
        stratum_of[c_codes] = s_codes
        if np.any(stratum_of[c_codes] != s_codes):
            raise ValueError("every cluster must lie in a single stratum")
        order = np.lexsort((np.arange(n_clusters), stratum_of))  # clusters sorted by (stratum, id)
        rank = np.empty(n_clusters, int)
        rank[order] = np.arange(n_clusters)
        self.row_cluster = rank[c_codes]
        self.n_clusters = n_clusters
        first_row = np.unique(c_codes, return_index=True)[1]  # a row of each cluster, by cluster code
        ids = np.arange(self.n_rows) if clusters is None else np.asarray(clusters)
        self.cluster_keys = ids[first_row][order]  # cluster ids in draw order (compare designs for pairing)
        self.stratum_sizes = np.bincount(stratum_of[order]) if n_clusters else np.zeros(0, int)
        self._to_cluster = sparse.csr_matrix(
            (np.ones(self.n_rows), (self.row_cluster, np.arange(self.n_rows))), shape=(n_clusters, self.n_rows))

    def cluster_weights(self) -> Iterator[np.ndarray]:
        """Yield (b, n_clusters) float arrays of draw counts; the chunks stack to n_boot replicates."""
        rng = np.random.default_rng(self.seed)
        step = max(1, min(self.n_boot, self.max_cells // max(self.n_clusters, 1)))
        for start in range(0, self.n_boot, step):
            b = min(step, self.n_boot - start)
            w = np.empty((b, self.n_clusters))
            offset = 0
            for m in self.stratum_sizes:
                draws = rng.integers(0, m, size=(b, m)) + (np.arange(b) * m)[:, None]
                w[:, offset:offset + m] = np.bincount(draws.ravel(), minlength=b * m).reshape(b, m)
                offset += m
            yield w

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Replicates of column sums Σ_rows weight·value: (n_rows,) or (n_rows, m) finite values → (n_boot, m)."""
        v = np.asarray(values, float).reshape(self.n_rows, -1)
        per_cluster = np.asarray(self._to_cluster @ v)
        return np.concatenate([w @ per_cluster for w in self.cluster_weights()], axis=0)

    def map(self, statistic: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Replicates of a statistic of row weights: ``statistic(w)`` takes (b, n_rows) weights and returns (b, ...).

        The point estimate is ``statistic(np.ones((1, n_rows)))``. Rows are expanded in sub-chunks of at most
        ``max_cells`` weights, so memory stays bounded for large tables.
        """
        out = []
        step = max(1, self.max_cells // max(self.n_rows, 1))
        for w in self.cluster_weights():
            for start in range(0, len(w), step):
                out.append(np.asarray(statistic(w[start:start + step][:, self.row_cluster])))
        return np.concatenate(out, axis=0)


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], n_rows: int, strata: ArrayLike | None = None,
                       clusters: ArrayLike | None = None, n_boot: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile interval of any weight-vectorised statistic (see :meth:`Bootstrap.map`).

    Returns (estimate, low, high, replicates) with replicates of shape (n_boot, ...).
    """
    design = Bootstrap(n_rows, strata, clusters, n_boot, seed)
    replicates = design.map(statistic)
    estimate = np.asarray(statistic(np.ones((1, n_rows))))[0]
    low, high = percentile_interval(replicates, confidence)
    return estimate, low, high, replicates
