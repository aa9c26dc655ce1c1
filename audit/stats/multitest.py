"""Multiple-testing adjustment across every test of a report: Holm (family-wise error, default) or
Benjamini–Hochberg (false discovery rate)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from audit.stats.tests import TestResult

METHODS = ("holm", "bh")


def holm(p_values: np.ndarray | list) -> np.ndarray:
    """Holm step-down adjusted p-values: with p_(1) ≤ … ≤ p_(m),
    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)). NaN entries are left out of the family and stay NaN."""
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def benjamini_hochberg(p_values: np.ndarray | list) -> np.ndarray:
    """Benjamini–Hochberg step-up adjusted p-values (FDR): p̃_(i) = min_{j ≥ i} min(1, m·p_(j)/j).
    NaN entries are left out of the family and stay NaN."""
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    scaled = m * p[order] / np.arange(1, m + 1)
    out[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return out


def adjust(p_values: np.ndarray | list, method: str = "holm") -> np.ndarray:
    """Adjusted p-values by ``method`` ("holm" or "bh")."""
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _collect(sources: Iterable) -> list[TestResult]:
    results: list[TestResult] = []
    for source in sources:
        if isinstance(source, TestResult):
            results.append(source)
        elif hasattr(source, "tests"):
            results.extend(source.tests())
        else:
            results.extend(_collect(source))
    return results


def adjusted_levels(p_values: np.ndarray, adjusted: np.ndarray, alpha: float) -> np.ndarray:
    """Per test, the unadjusted level γ_i = α·p_i/p̃_i at which its own test (and interval) must be read for the
    decision "p̃_i < α" to be "p_i < γ_i": an interval at level 1 − γ_i excludes the null exactly when the adjusted
    test rejects. For Bonferroni, and for Holm's smallest p, γ = α/m and the intervals are simultaneous over the
    family; for the other Holm steps and for BH they are compatible with the decisions but not simultaneous.
    p = 0 uses γ = α/m; NaN where p̃ is NaN."""
    p, q = np.asarray(p_values, float), np.asarray(adjusted, float)
    m = max(int(np.isfinite(q).sum()), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.where(p > 0, alpha * p / q, alpha / m)
    return np.where(np.isfinite(q), np.clip(gamma, 0, alpha), np.nan)


def verdicts(table: pd.DataFrame) -> np.ndarray:
    """"finding" (adjusted p < α), "nothing detected" (tested, not rejected) or "not testable" (with a reason)."""
    testable = (table["reason"].fillna("") == "") & np.isfinite(table["p_value"].to_numpy(float))
    return np.where(~testable, "not testable", np.where(table["reject"], "finding", "nothing detected"))


def report_tests(*sources: object, method: str = "holm", alpha: float = 0.05) -> pd.DataFrame:
    """One table of every test of a report with adjusted p-values and verdicts.

    ``sources`` are TestResults, iterables of them, or objects with a ``tests()`` method (e.g. ``AttributeAudit``);
    all of them form one family, except the tests that are not testable (no p-value), which stay out of it.
    Columns: the TestResult fields, ``p_adjusted``, ``reject`` (p_adjusted < alpha), ``verdict`` (see
    :data:`audit.stats.tests.VERDICTS`), ``adjustment`` (method name), ``family_size`` (testable tests),
    ``adjusted_level`` (see :func:`adjusted_levels`) and ``adjusted_ci_low`` / ``adjusted_ci_high`` (the effect's
    interval at that level: excludes the null exactly when ``reject``) and ``adjusted_components`` (every
    component's interval at that level).
    """
    results = _collect(sources)
    names = [f for f in TestResult.__dataclass_fields__ if f != "interval_at"]
    table = pd.DataFrame([r.as_dict() for r in results], columns=names)
    table["p_adjusted"] = adjust(table["p_value"].to_numpy(float), method)
    table["reject"] = table["p_adjusted"] < alpha
    table["verdict"] = verdicts(table) if len(table) else []
    table["adjustment"] = {"holm": "Holm", "bh": "Benjamini–Hochberg"}[method]
    table["family_size"] = int(np.isfinite(table["p_adjusted"].to_numpy(float)).sum())
    table["adjusted_level"] = adjusted_levels(table["p_value"].to_numpy(float), table["p_adjusted"].to_numpy(float),
                                              alpha)
    low, high, parts = [], [], []
    for r, gamma in zip(results, table["adjusted_level"]):
        if r.interval_at is None or not np.isfinite(gamma) or gamma <= 0:
            low.append(np.nan), high.append(np.nan), parts.append([])
            continue
        lows, highs = r.interval_at(1 - float(gamma))
        i = next((j for j, c in enumerate(r.components) if c["label"] == r.component), 0)
        low.append(float(lows[i])), high.append(float(highs[i]))
        parts.append([{"label": c["label"], "ci_low": float(lo), "ci_high": float(hi)}
                      for c, lo, hi in zip(r.components, lows, highs)])
    table["adjusted_ci_low"], table["adjusted_ci_high"], table["adjusted_components"] = low, high, parts
    return table
