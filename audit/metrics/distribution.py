"""An observed label distribution against a reference (PR: output shares vs input shares; UCPR: outputs of
uninformative inputs vs the prior): shares with intervals, divergences with intervals, χ² goodness of fit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from audit.stats.divergences import DIVERGENCES
from audit.stats.intervals import Bootstrap, percentile_interval
from audit.stats.tests import MIN_EXPECTED, TestResult, chi2_gof

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
    """Shares of ``labels`` over ``categories`` against a reference distribution.

    Args:
        labels: one label per row (missing labels are excluded from the shares).
        categories: the vocabulary, in display order.
        reference: shares (mapping or vector aligned to categories); None = uniform.
        bootstrap: the design giving the share intervals (rows as in ``labels``).
        test_mask: rows forming independent units for the χ² test (default all rows). Use one sample per input
            when outputs of one input are correlated (PR on a test set); all samples are valid when the null is
            that every input's output distribution equals the reference (UCPR).
        name: prefix of the test name.

    The χ² test treats the test rows' labels as independent draws from one distribution. When they are outputs of a
    fixed, stratified input set (e.g. 200 inputs per race) whose own shares are the reference, their counts vary
    less than a multinomial and the test is conservative (valid, low power: it rejected 0 of 300 unbiased synthetic
    runs in tests/test_metrics.py); the paired Stuart–Maxwell test of ``AttributeAudit`` is then the sharper check.
    """

    def __init__(self, labels: pd.Series, categories: Sequence[str],
                 reference: Mapping[str, float] | Sequence[float] | None, bootstrap: Bootstrap,
                 test_mask: np.ndarray | None = None, name: str = "shares", confidence: float = 0.95,
                 alpha: float = 0.05, power: float = 0.8, seed: int = 0) -> None:
        self.categories, self.name, self.confidence = list(categories), name, confidence
        self.reference = reference_vector(reference, self.categories)
        onehot = one_hot(labels, self.categories)
        self.counts = onehot.sum(axis=0)
        self.n = int(self.counts.sum())
        self.n_outside = int((~is_missing(pd.Series(labels)) & (onehot.sum(axis=1) == 0)).sum())
        sums = bootstrap.sums(onehot)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.shares = self.counts / self.n if self.n else np.full(len(self.categories), np.nan)
            self.replicates = sums / sums.sum(axis=1, keepdims=True)
        mask = np.ones(len(onehot), bool) if test_mask is None else np.asarray(test_mask, bool)
        self.test_counts = onehot[mask].sum(axis=0)
        self.test = chi2_gof(self.test_counts, self.reference, name=f"{name}: χ² goodness of fit vs reference",
                             alpha=alpha, power=power, seed=seed)

    @property
    def table(self) -> pd.DataFrame:
        """Per category: count, share (with percentile interval), reference share, the test's observed and
        expected counts, and ``small`` (expected < 5)."""
        low, high = percentile_interval(self.replicates, self.confidence)
        expected = self.test_counts.sum() * self.reference
        return pd.DataFrame({"count": self.counts, "share": self.shares, "ci_low": low, "ci_high": high,
                             "reference": self.reference, "test_count": self.test_counts, "expected": expected,
                             "small": expected < MIN_EXPECTED}, index=pd.Index(self.categories, name="category"))

    @property
    def divergences(self) -> pd.DataFrame:
        """Each divergence of the shares from the reference with a percentile interval (intervals of divergences
        are biased away from 0 when the true divergence is near 0: read them with the test)."""
        rows = {}
        for key, f in DIVERGENCES.items():
            low, high = percentile_interval(f(self.replicates, self.reference), self.confidence)
            rows[key] = dict(value=float(f(self.shares, self.reference)), ci_low=low, ci_high=high)
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("divergence")

    def tests(self) -> list[TestResult]:
        return [self.test]
