"""Two runs on the same inputs, paired: the difference B − A of a per-input quantity (preservation rate, ΔITA …)
with a test and an interval from the same estimator.

Each run contributes, per input, the mean over all its samples (so every sample is used, and an input's samples
count once); d_i = B_i − A_i over the inputs both runs have. The estimate is the mean of d with the stratified
(by sampling group) cluster-robust se of :mod:`audit.stats.clustered`, tested against 0 by a Wald t test with
df = inputs − strata; its interval excludes 0 exactly when the test rejects at the same level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.stats.clustered import clustered_mean
from audit.stats.tests import TestResult, not_testable, wald_max_test


@dataclass(frozen=True)
class PairedDifference:
    """``a_value`` / ``b_value``: means over the shared inputs of each run's per-input means; ``difference`` =
    b − a; ``test``: its Wald t test with the interval of the difference (in the test's unit)."""

    n: int
    a_value: float
    b_value: float
    difference: float
    test: TestResult


def per_input_mean(frame: pd.DataFrame, values: pd.Series, item: str) -> pd.Series:
    """Mean of the finite ``values`` of each input's rows (indexed by input id)."""
    v = pd.to_numeric(values, errors="coerce").astype(float)
    return v[np.isfinite(v.to_numpy())].groupby(frame.loc[np.isfinite(v.to_numpy()), item].to_numpy()).mean()


def paired_difference(a: pd.Series, b: pd.Series, strata: pd.Series | None, *, name: str, kind: str,
                      effect_label: str, scale: float = 1.0, unit: str = "", confidence: float = 0.95,
                      alpha: float = 0.05, power: float = 0.8,
                      bounds: tuple[float, float] = (-math.inf, math.inf)) -> PairedDifference:
    """B − A over the inputs present in both ``a`` and ``b`` (per-input values indexed by input id); ``strata``
    (indexed by input id, e.g. the sampling group) stratifies the variance. Fewer than two shared inputs or no
    variation is not testable. ``bounds``: the difference's possible range in the test's unit (e.g. ±100 pp)."""
    both = a.index.intersection(b.index)
    va, vb = a.loc[both].to_numpy(float), b.loc[both].to_numpy(float)
    n = len(both)
    a_mean, b_mean = (float(va.mean()), float(vb.mean())) if n else (np.nan, np.nan)
    if n < 2:
        test = not_testable(name, kind, "fewer than two shared inputs", n, unit=unit, effect_label=effect_label)
        return PairedDifference(n, a_mean, b_mean, b_mean - a_mean, test)
    s = None if strata is None else strata.reindex(both).fillna("").astype(str).to_numpy()
    if s is not None and np.unique(s, return_counts=True)[1].min() < 2:
        s = None  # a stratum of one input shows no variance: fall back to the (conservative) unstratified design
    cm = clustered_mean(vb - va, None, s)
    if not cm.se[0] > 0 or cm.df < 1:
        reason = "every input has the same difference: no variance to test against" if cm.df >= 1 else \
            "fewer than two inputs per stratum"
        test = not_testable(name, kind, reason, n, unit=unit, effect_label=effect_label)
    else:
        test = wald_max_test(cm.estimate, cm.cov, ["B − A"], name=name, kind=kind, effect_label=effect_label, n=n,
                             df=cm.df, scale=scale, unit=unit, confidence=confidence, alpha=alpha, power=power,
                             bounds=bounds)
    return PairedDifference(n, a_mean, b_mean, b_mean - a_mean, test)
