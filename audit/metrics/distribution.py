"""An observed label distribution, optionally against a reference (PR: output shares vs input shares; UCPR: outputs
of uninformative inputs vs the groups their average faces were made from): shares with intervals, divergences with
intervals, and a score test against a stated reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from audit.stats.clustered import clustered_mean
from audit.stats.divergences import DIVERGENCES
from audit.stats.intervals import (
    Bootstrap,
    cluster_rows,
    cluster_strata,
    effective_size_interval,
    least_effective_size,
    percentile_interval,
)
from audit.stats.tests import TestResult, score_max_test


def is_missing(labels: pd.Series) -> np.ndarray:
    """True where a label is NaN/None or the empty string (no face found, no label)."""
    return (labels.isna() | (labels.astype(str) == "")).to_numpy()


def one_hot(labels: pd.Series | np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """(n, k) 0/1 matrix; labels outside ``categories`` (or missing) give a zero row."""
    codes = pd.Index(list(categories), dtype=object).get_indexer(np.asarray(labels, dtype=object))
    out = np.zeros((len(codes), len(categories)))
    ok = codes >= 0
    out[np.flatnonzero(ok), codes[ok]] = 1.0
    return out


def reference_vector(reference: Mapping[str, float] | Sequence[float] | None, categories: Sequence[str]) -> np.ndarray:
    """Reference shares aligned to ``categories`` and normalised to sum 1 (missing categories get 0;
    None = uniform over the categories)."""
    if reference is None:
        r = np.ones(len(categories))
    elif isinstance(reference, Mapping):
        unknown = set(reference) - set(categories)
        if unknown:
            raise ValueError(f"reference has categories {sorted(unknown)} outside {list(categories)}")
        r = np.array([float(reference.get(c, 0.0)) for c in categories])
    else:
        r = np.asarray(reference, float)
    if r.shape != (len(categories),) or np.any(r < 0) or r.sum() <= 0:
        raise ValueError("reference must give non-negative shares for the categories")
    return r / r.sum()


def first_sample(data: pd.DataFrame, cluster: str | None, sample: str | None) -> np.ndarray:
    """Boolean mask keeping one row per cluster (the lowest ``sample``, ties and no ``sample``: the first row): the
    independent units that hypothesis tests use when an input has several samples."""
    if cluster is None:
        return np.ones(len(data), bool)
    pos = np.arange(len(data))
    order = pd.DataFrame({"c": data[cluster].to_numpy(), "s": data[sample].to_numpy() if sample else pos, "p": pos})
    order = order.sort_values(["c", "s", "p"], kind="stable")
    mask = np.zeros(len(data), bool)
    mask[order["p"].to_numpy()[~order["c"].duplicated().to_numpy()]] = True
    return mask


class DistributionFit:
    """Shares of ``labels`` over ``categories``, optionally against a reference distribution.

    Args:
        labels: one label per row (missing labels are excluded from the shares).
        categories: the vocabulary, in display order.
        reference: shares (mapping or vector aligned to categories), or None for a purely descriptive table.
        bootstrap: the design giving the divergences' percentile intervals (rows as in ``labels``).
        clusters, strata: the design of the share intervals (Clopper–Pearson at the effective sample size, from the
            stratified cluster-robust variance of :mod:`audit.stats.clustered`, at Korn & Graubard's degrees of
            freedom: Cochran's effective df of the stratified variance (Satterthwaite; Cochran 1977, eq. 5.16,
            :attr:`audit.stats.clustered.ClusteredMean.effective_df`; inputs − 1 without strata), and never
            below the size of the largest variance the clustering allows in the stratified share,
            :func:`audit.stats.intervals.least_effective_size`, so a share has an interval even with one input per
            stratum: :func:`audit.stats.intervals.effective_size_interval`, Korn & Graubard 1998).
        test: run the max-|T| score test of the shares against ``reference`` over every row (see
            :func:`audit.stats.tests.score_max_test`). Rows are then taken as independent draws, which holds under
            the null that every input's outputs follow the reference (uninformative inputs: UCPR). Categories with
            reference 0 are left out of the test with a note. Needs a reference that the data did not produce.
        kind: the test's kind; name: prefix of the test name.
    """

    def __init__(self, labels: pd.Series, categories: Sequence[str],
                 reference: Mapping[str, float] | Sequence[float] | None, bootstrap: Bootstrap,
                 clusters: np.ndarray | None = None, strata: np.ndarray | None = None, test: bool = False,
                 name: str = "shares", kind: str = "shares", confidence: float = 0.95, alpha: float = 0.05,
                 power: float = 0.8, seed: int = 0) -> None:
        self.categories, self.name, self.confidence = list(categories), name, confidence
        self.reference = None if reference is None else reference_vector(reference, self.categories)
        onehot = one_hot(labels, self.categories)
        self.counts = onehot.sum(axis=0)
        self.n = int(self.counts.sum())
        self.n_outside = int((~is_missing(pd.Series(labels)) & (onehot.sum(axis=1) == 0)).sum())
        sums = bootstrap.sums(onehot)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.shares = self.counts / self.n if self.n else np.full(len(self.categories), np.nan)
            self.replicates = sums / sums.sum(axis=1, keepdims=True)
        found = onehot.sum(axis=1) > 0
        self.low, self.high = np.full(len(self.categories), np.nan), np.full(len(self.categories), np.nan)
        if self.n:
            in_clusters = None if clusters is None else np.asarray(clusters)[found]
            cm = clustered_mean(onehot[found], in_clusters, None if strata is None else np.asarray(strata)[found])
            in_strata = None if strata is None else cluster_strata(in_clusters, np.asarray(strata)[found])
            least = least_effective_size(cluster_rows(in_clusters, self.n), in_strata)
            self.low, self.high = effective_size_interval(self.shares, cm.se**2, self.n, cm.n_clusters, confidence,
                                                          cm.effective_df, least)
        self.test = None
        if test and self.reference is not None:
            self.test = score_max_test(self.counts, self.reference, self.categories, name=f"{name}: shares vs "
                                       "reference", kind=kind, alpha=alpha, power=power, confidence=confidence,
                                       seed=seed)

    @property
    def table(self) -> pd.DataFrame:
        """Per category: count, share with its interval (Clopper–Pearson at the effective sample size) and reference
        share (NaN without a reference)."""
        reference = np.full(len(self.categories), np.nan) if self.reference is None else self.reference
        return pd.DataFrame({"count": self.counts, "share": self.shares, "ci_low": self.low, "ci_high": self.high,
                             "reference": reference}, index=pd.Index(self.categories, name="category"))

    @property
    def divergences(self) -> pd.DataFrame:
        """Each divergence of the shares from the reference with a percentile interval (intervals of divergences
        are biased away from 0 when the true divergence is near 0: read them with the tests). Empty without a
        reference."""
        rows = {}
        for key, f in DIVERGENCES.items():
            if self.reference is None:
                break
            low, high = percentile_interval(f(self.replicates, self.reference), self.confidence)
            rows[key] = dict(value=float(f(self.shares, self.reference)), ci_low=low, ci_high=high)
        return pd.DataFrame.from_dict(rows, orient="index", columns=["value", "ci_low", "ci_high"]
                                      ).rename_axis("divergence")

    def tests(self) -> list[TestResult]:
        return [] if self.test is None else [self.test]
