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


def report_tests(*sources: object, method: str = "holm", alpha: float = 0.05) -> pd.DataFrame:
    """One table of every test of a report with adjusted p-values.

    ``sources`` are TestResults, iterables of them, or objects with a ``tests()`` method (e.g. ``AttributeAudit``);
    all of them form one family. Columns: the TestResult fields, ``p_adjusted``, ``reject`` (p_adjusted < alpha),
    ``adjustment`` (method name) and ``family_size`` (number of tests with a finite p-value).
    """
    results = _collect(sources)
    table = pd.DataFrame([r.as_dict() for r in results], columns=list(TestResult.__dataclass_fields__))
    table["p_adjusted"] = adjust(table["p_value"].to_numpy(float), method)
    table["reject"] = table["p_adjusted"] < alpha
    table["adjustment"] = {"holm": "Holm", "bh": "Benjamini–Hochberg"}[method]
    table["family_size"] = int(np.isfinite(table["p_value"].to_numpy(float)).sum())
    return table
