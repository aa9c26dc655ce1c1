"""A MetricFrame in the spirit of Fairlearn's: metrics overall and by group (intersections: several group columns),
max − min differences and min/max ratios, every number with an interval.

Rates get a Clopper–Pearson interval at their effective sample size (adjusted for the degrees of freedom of few inputs:
Korn & Graubard 1998) and means a cluster-robust t interval (both from the stratified cluster design of
:mod:`audit.stats.clustered`, so every sample is used and samples of one input count as correlated); medians the
sign-test interval at the effective number of inputs (:func:`audit.stats.intervals.median_interval`, same design).
Between groups, differences (max − min) and ratios (min / max) get intervals simultaneous over all pairs of groups
(:mod:`audit.stats.between`) from each group's own interval or standard error: cluster-robust t for means; by MOVER,
Clopper–Pearson at the effective size (adjusted for the degrees of freedom of few inputs) for rates and the interpolated
sign-test interval at the effective number of inputs for medians."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from audit.stats.between import range_interval, ratio_interval
from audit.stats.clustered import clustered_mean, indicator_floor
from audit.stats.intervals import (
    Bootstrap,
    cluster_rows,
    cluster_strata,
    effective_size,
    effective_size_bounds,
    effective_size_interval,
    interpolated_median_bounds,
    least_effective_size,
    median_interval,
    median_se,
)

MIN_N = 30  # groups with fewer independent units (inputs) are flagged "small"
RATE_METHOD = "Clopper–Pearson (effective n, Korn–Graubard df)"  # ci_method of a rate (and the shares of distributions)
Bounds = Callable[[float], tuple[np.ndarray, np.ndarray]]  # per-group interval at a critical value


@dataclass(frozen=True)
class Metric:
    """A per-row column summarised by ``statistic``: "rate" (mean of a 0/1 or bool column: Clopper–Pearson interval
    at the effective sample size), "mean" (cluster-robust t interval) or "median" (sign-test interval, effective n).
    NaN values are missing for this metric only. A rate is declared, never inferred from the
    values: a continuous column that happens to hold only 0s and 1s is still a mean. ``bounds`` is the range the
    values can take (e.g. ±180° for a change of ITA°): intervals are clipped to it (a t interval of a few inputs can
    reach beyond what any mean could be)."""

    column: str
    statistic: str = "mean"
    bounds: tuple[float, float] = (-math.inf, math.inf)

    def __post_init__(self) -> None:
        if self.statistic not in ("rate", "mean", "median"):
            raise ValueError(f"statistic must be 'rate', 'mean' or 'median', got {self.statistic!r}")


def group_codes(data: pd.DataFrame, groups: Sequence[str]) -> tuple[np.ndarray, pd.Index]:
    """Integer group code per row (sorted by the group values) and the matching group labels (Index, or MultiIndex
    for intersections). Without group columns every row is in one group labelled "all"."""
    if not groups:
        return np.zeros(len(data), int), pd.Index(["all"], name="group")
    codes = data.groupby(list(groups), sort=True, observed=True).ngroup().to_numpy()
    first = np.unique(codes, return_index=True)[1]  # a row of each group, in code order
    keys = data[list(groups)].iloc[first]
    if len(groups) == 1:
        return codes, pd.Index(keys[groups[0]].to_numpy(), name=groups[0])
    return codes, pd.MultiIndex.from_frame(keys.reset_index(drop=True))


def _as_float(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").astype(float).to_numpy()


class MetricFrame:
    """Metrics of a run table overall and per group, with intervals.

    Rows whose group value is missing (NaN or "") are dropped (counted in ``n_dropped``). Designs are stratified by
    group and clustered by ``cluster`` (several samples of one input belong together). A rate's interval is Korn &
    Graubard's (1998): Clopper–Pearson at the effective sample size (rows / design effect; the number of inputs when the
    rate is 0 or 1) adjusted by their degrees of freedom, df = inputs − 1 in a group and, overall (stratified by group),
    Cochran's effective df of the stratified variance (Satterthwaite; Cochran 1977, eq. 5.16:
    :attr:`audit.stats.clustered.ClusteredMean.effective_df`, at most inputs − strata), and never below the size of the
    largest variance the inputs' clustering allows (in a group; overall, stratified by group:
    :func:`audit.stats.intervals.least_effective_size`; :func:`audit.stats.intervals.effective_size_interval`), so every
    rate with rows has one, even with one input per group (df = 0); a mean's is mean ± t·se with the cluster-robust se
    and df = inputs − strata (the overall row is stratified by group), a median's is the sign-test interval at the
    effective number of inputs (see :func:`audit.stats.intervals.median_interval`; none, marked "none (too few inputs)",
    below 6 effective inputs at 95 %). A mean without variation (every value equal, or one input) keeps its point as the
    interval, marked ``ci_method`` "none (no variation)" (printed as not estimable). Rates and means keep bootstrap
    replicates (for callers such as the RDP distribution); medians have none. ``n`` counts the rows with a value,
    ``n_clusters`` the independent units (inputs); ``small`` flags n_clusters < ``min_n``. ``se`` and ``df`` of means
    and rates are kept (see :meth:`design`) so that tests can use the same estimator; a median's ``se`` per group is
    Price–Bonett's at the effective number of inputs (:func:`audit.stats.intervals.median_se`)."""

    def __init__(self, data: pd.DataFrame, metrics: Mapping[str, Metric | str],
                 groups: str | Sequence[str] | None = None, cluster: str | None = None, n_boot: int = 2000,
                 seed: int = 0, confidence: float = 0.95, min_n: int = MIN_N) -> None:
        self.groups = [groups] if isinstance(groups, str) else list(groups or [])
        self.metrics = {k: Metric(v) if isinstance(v, str) else v for k, v in metrics.items()}
        keep = pd.Series(True, index=data.index)
        for g in self.groups:
            keep &= data[g].notna() & (data[g].astype(str) != "")
        self.data, self.n_dropped = data.loc[keep], int((~keep).sum())
        if self.data.empty:
            raise ValueError("no rows to summarise (empty table, or every group value missing)")
        self.cluster, self.confidence, self.min_n = cluster, confidence, min_n
        self.codes, self.group_index = group_codes(self.data, self.groups)
        clusters = self.data[cluster].to_numpy() if cluster else None
        self.bootstrap = Bootstrap(len(self.data), self.codes, clusters, n_boot, seed)
        self._cluster = self.bootstrap.row_cluster
        self._results = {name: self._estimate(m) for name, m in self.metrics.items()}

    @property
    def n_groups(self) -> int:
        return len(self.group_index)

    def _design(self, v: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(se, df, effective df) of the row mean of ``v`` per column of ``masks``: groups one by one, the overall
        (last) column stratified by group. df = inputs − strata; the effective df is Cochran's
        (:attr:`audit.stats.clustered.ClusteredMean.effective_df`), df itself for a group (one stratum)."""
        se, df, nu = (np.full(masks.shape[1], np.nan) for _ in range(3))
        for j, m in enumerate(masks.T):
            if not m.any():
                continue
            strata = self.codes[m] if j == masks.shape[1] - 1 else None
            cm = clustered_mean(v[m], self._cluster[m], strata)
            se[j], df[j], nu[j] = cm.se[0], cm.df, cm.effective_df[0]
        return se, df, nu

    def _estimate(self, metric: Metric) -> dict[str, np.ndarray]:
        v = _as_float(self.data[metric.column])
        valid = np.isfinite(v)
        if metric.statistic == "rate" and not np.isin(v[valid], (0.0, 1.0)).all():
            raise ValueError(f"rate metric {metric.column!r} holds values other than 0 and 1")
        masks = np.stack([(self.codes == g) & valid for g in range(self.n_groups)] + [valid], axis=1)  # last = overall
        n = masks.sum(axis=0)
        n_clusters = np.array([len(np.unique(self._cluster[m])) for m in masks.T])
        se = df = np.full(len(n), np.nan)
        if metric.statistic in ("rate", "mean"):
            both = np.concatenate([masks * np.where(valid, v, 0.0)[:, None], masks], axis=1).astype(float)
            sums = self.bootstrap.sums(both)
            k = masks.shape[1]
            with np.errstate(invalid="ignore", divide="ignore"):
                point = np.where(n > 0, both[:, :k].sum(axis=0) / n, np.nan)
                reps = sums[:, :k] / sums[:, k:]
            se, df, effective_df = self._design(np.where(valid, v, 0.0), masks)
            if metric.statistic == "rate":
                df = effective_df
                least = [least_effective_size(np.bincount(self._cluster[m])) for m in masks.T[:-1]]
                overall = self._cluster[valid]  # stratified by group: the floor of the stratified mean
                least.append(least_effective_size(cluster_rows(overall, len(overall)),
                                                  cluster_strata(overall, self.codes[valid])))
                low, high = effective_size_interval(point, se**2, n, n_clusters, self.confidence, df, least)
                method = RATE_METHOD
            else:
                with np.errstate(invalid="ignore"):
                    half = stats.t.ppf(0.5 + self.confidence / 2, np.where(df >= 1, df, np.nan)) * se
                low, high = point - half, point + half
                method = "t (cluster-robust)"
        else:
            cols = [np.flatnonzero(m) for m in masks.T]
            point = np.array([np.median(v[c]) if len(c) else np.nan for c in cols])
            reps = None  # the median's bootstrap is not used: its percentile intervals under-covered
            bounds = np.array([median_interval(v[c], self._cluster[c], self.codes[c] if j == len(cols) - 1 else None,
                                               self.confidence) if len(c) else (np.nan, np.nan)
                               for j, c in enumerate(cols)]).reshape(-1, 2)
            low, high = bounds[:, 0], bounds[:, 1]
            se = np.array([median_se(v[c], self._cluster[c], None, self.confidence) if len(c) else np.nan
                           for c in cols[:-1]] + [np.nan])
            method = "sign test (effective n)"
        low, high = np.clip(low, *metric.bounds), np.clip(high, *metric.bounds)
        methods = np.full(len(point), method, dtype=object)
        if metric.statistic == "mean":  # every value equal (or one input): the interval is the point, not estimated
            flat = ~(se > 0) & (n > 0)
            low, high = np.where(flat, point, low), np.where(flat, point, high)
            methods[flat] = "none (no variation)"
        if metric.statistic == "median":  # too few (effective) inputs for a distribution-free interval
            methods[np.isnan(low) & (n > 0)] = "none (too few inputs)"
        return {"point": point, "replicates": reps, "low": low, "high": high, "n": n, "n_clusters": n_clusters,
                "ci_method": methods, "se": se, "df": df}

    def design(self, metric: str) -> pd.DataFrame:
        """Per group and overall (last row): the estimate, its cluster-robust se and df (means and rates)."""
        r = self._results[metric]
        index = list(self.group_index) + ["overall"]
        return pd.DataFrame({"value": r["point"], "se": r["se"], "df": r["df"], "n": r["n"],
                             "n_clusters": r["n_clusters"]}, index=index)

    def replicates(self, metric: str) -> np.ndarray:
        """Bootstrap replicates (n_boot, n_groups) of a rate or mean per group (columns in ``group_index`` order)."""
        reps = self._results[metric]["replicates"]
        if reps is None:
            raise ValueError(f"{metric!r} is a median: medians have no bootstrap replicates")
        return reps[:, :-1]

    def _table(self, sl: slice, index: pd.Index) -> pd.DataFrame:
        frames = []
        for name, r in self._results.items():
            frames.append(pd.DataFrame({
                "metric": name, "value": r["point"][sl], "ci_low": r["low"][sl], "ci_high": r["high"][sl],
                "n": r["n"][sl], "n_clusters": r["n_clusters"][sl], "ci_method": r["ci_method"][sl],
                "small": r["n_clusters"][sl] < self.min_n}, index=index))
        return pd.concat(frames)

    @property
    def overall(self) -> pd.DataFrame:
        """One row per metric: value, ci_low, ci_high, n, n_clusters, ci_method, small."""
        return self._table(slice(-1, None), pd.Index(["overall"], name="group")).set_index("metric")

    @property
    def by_group(self) -> pd.DataFrame:
        """Tidy table, one row per (metric, group): the group columns, value, ci_low, ci_high, n, n_clusters,
        ci_method, small."""
        return self._table(slice(0, -1), self.group_index).reset_index()

    def value(self, metric: str) -> pd.Series:
        """Point estimates of one metric per group (index = group labels)."""
        return pd.Series(self._results[metric]["point"][:-1], index=self.group_index, name=metric)

    def _groups_between(self, name: str, kind: str) -> tuple[np.ndarray, np.ndarray, float, str, Bounds | None]:
        """What :mod:`audit.stats.between` needs of a metric per group, on the scale of ``kind`` (as is for
        differences, logs for ratios): (estimates, standard errors, df, method, interval at a critical value or
        None for estimate ± c·se). Means: cluster-robust se (NaN with one input), ratios by the delta method se/θ.
        Rates: the Clopper–Pearson interval at the effective sample size, each group's bounds at c's tail probability
        from :func:`audit.stats.intervals.effective_size_bounds` (the function behind every rate interval), so MOVER
        combines two Clopper–Pearson intervals at the critical value c,
        at the size adjusted for the few inputs behind its design effect (Korn & Graubard's degrees of freedom at
        c's tail probability, :func:`audit.stats.intervals.df_adjusted_size`), never below the size of the largest
        variance the inputs' clustering allows (:func:`audit.stats.intervals.least_effective_size`); its se floored
        at :func:`audit.stats.clustered.indicator_floor` for c. Medians: the sign-test interval at the effective
        number of inputs interpolated to c's level (:func:`audit.stats.intervals.interpolated_median_bounds`; exact
        sign-test bounds count ties on both sides, where the Price–Bonett standard error shrank with heavily tied
        values), with c from equal standard errors (Tukey's studentized range, conservative for unequal ones by
        Hayter 1984); for ratios from the logs of the values. Estimates are NaN where a ratio's scale has no log (a
        value, mean or rate ≤ 0)."""
        metric, r = self.metrics[name], self._results[name]
        point, se, df, n, clusters = (r[k][:-1] for k in ("point", "se", "df", "n", "n_clusters"))
        has = n > 0
        v = _as_float(self.data[metric.column])
        rows = [(self.codes == g) & np.isfinite(v) for g in range(self.n_groups)]
        with np.errstate(invalid="ignore", divide="ignore"):
            log_point = np.log(np.where(point > 0, point, np.nan))
            if metric.statistic == "mean":
                se = np.where(df >= 1, se, np.nan)
                df_min = float(np.min(df[has])) if has.any() else math.nan
                method = "t (cluster-robust), simultaneous over pairs of groups"
                return (point, se, df_min, method, None) if kind == "difference" else \
                    (log_point, se / point, df_min, method, None)
            if metric.statistic == "rate":
                p = np.clip(point, 0, 1)
                n_eff = effective_size(p, se**2, n, clusters)
                least = np.array([least_effective_size(np.bincount(self._cluster[m])) for m in rows])
                se = np.sqrt(np.maximum(se**2, indicator_floor(p * n, n, clusters)))
                method = f"{RATE_METHOD}, MOVER, simultaneous over pairs of groups"

                def beta(c: float) -> tuple[np.ndarray, np.ndarray]:
                    return effective_size_bounds(p, n_eff, n, df, float(stats.norm.sf(c)), least)

                def log_beta(c: float) -> tuple[np.ndarray, np.ndarray]:
                    low, high = beta(c)
                    with np.errstate(divide="ignore"):
                        return np.log(low), np.log(high)

                return (point, se, math.inf, method, beta) if kind == "difference" else \
                    (log_point, se / p, math.inf, method, log_beta)
            if kind == "difference":
                estimate, values = point, v
            else:
                estimate = np.array([log_point[g] if has[g] and (v[m] > 0).all() else np.nan
                                     for g, m in enumerate(rows)])
                values = np.log(np.where(v > 0, v, np.nan))

        def sign_bounds(c: float) -> tuple[np.ndarray, np.ndarray]:
            level = 2 * float(stats.norm.cdf(c)) - 1
            b = np.array([interpolated_median_bounds(values[m], self._cluster[m], level) if np.isfinite(estimate[g])
                          else (np.nan, np.nan) for g, m in enumerate(rows)]).reshape(-1, 2)
            return b[:, 0], b[:, 1]

        equal = np.where(np.isfinite(estimate), 1.0, np.nan)
        method = "sign test (effective n, interpolated), MOVER, simultaneous over pairs of groups"
        return estimate, equal, math.inf, method, sign_bounds

    def _between(self, kind: str) -> pd.DataFrame:
        rows = {}
        for name, r in self._results.items():
            point = r["point"][:-1]
            if self.n_groups < 2 or np.isnan(point).all():
                rows[name] = dict(value=np.nan, ci_low=np.nan, ci_high=np.nan, group_min=None, group_max=None,
                                  ci_method="none (fewer than two groups)")
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.nanmax(point) - np.nanmin(point) if kind == "difference" else \
                    np.nanmin(point) / np.nanmax(point)
            estimate, se, df, method, bounds = self._groups_between(name, kind)
            if kind == "difference":  # within the widest difference the metric's bounds allow
                widest = self.metrics[name].bounds[1] - self.metrics[name].bounds[0]
                low, high = np.clip(range_interval(estimate, se, self.confidence, df, bounds), 0, widest)
            else:
                low, high = ratio_interval(estimate, se, self.confidence, df, bounds)
            if kind == "ratio" and np.isnan(estimate[np.isfinite(point)]).any():
                low = high = math.nan
                method = "none (a value is not positive)"
            elif math.isnan(low):
                method = "none (too few inputs)"
            elif low == high:
                method = "none (no variation)"
            rows[name] = dict(value=value, ci_low=low, ci_high=high, group_min=self.group_index[np.nanargmin(point)],
                              group_max=self.group_index[np.nanargmax(point)], ci_method=method)
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("metric")

    def difference(self) -> pd.DataFrame:
        """Per metric: max − min over groups with an interval, the groups at the min and max, and ``ci_method``:
        simultaneous over all pairs of groups (:func:`audit.stats.between.range_interval`; the percentile bootstrap
        of max − min almost never covers 0 when groups are equal). None when a group has too few effective inputs
        for a sign-test interval at the simultaneous level (medians: 6 at 95 % with two groups, 8 with four) or a
        single input (means)."""
        return self._between("difference")

    def ratio(self) -> pd.DataFrame:
        """Per metric: min/max over groups (Aequitas-style disparity, fair if ≥ τ = 0.8) with an interval: exp(−·)
        of the range interval of the logs; none unless every group's rate or mean, resp. every value of a median,
        is positive."""
        return self._between("ratio")
