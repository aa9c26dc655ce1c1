"""Paired continuous changes per group (ΔITA, age shift, identity distance) and the upsampler's own diagnostics
(success rate, LR-consistency error, PSNR/SSIM columns) per group."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from audit.core.schema import LR_ERROR, SUCCESS
from audit.metrics.columns import ITEM, require
from audit.metrics.frame import MIN_N, Metric, MetricFrame
from audit.stats.tests import TestResult, not_testable, wald_max_test


class PairedShift:
    """Per-row paired change d (``value`` column, or ``after − before`` for a (before, after) pair of columns).

    ``table`` gives mean (cluster-robust t interval) and median (sign-test interval) of d overall and per group
    (stratified by group, clustered by input). ``tests()`` runs a Wald t test that the mean of d is 0, overall and
    per group, with every sample and the same cluster-robust se as the table's interval, so that the interval
    excludes 0 exactly when the test rejects at the same level; each with its MDE in ``unit``. Set
    ``test_zero=False`` for quantities that are not signed changes (identity distance ≥ 0): then there are no tests
    and groups are compared through ``frame.difference()``. ``bounds`` are the values d can take (e.g. ±180° for a
    change of ITA°, which lies in [−90°, 90°]; ±116 years for an age shift; ≥ 0 for a distance): the intervals of
    the mean and median and of their differences between groups are clipped to them and the tests carry the largest
    possible |d| as their ``effect_bound``.
    """

    def __init__(self, data: pd.DataFrame, value: str | tuple[str, str], groups: str | Sequence[str] | None = None,
                 cluster: str | None = ITEM, *, name: str | None = None, unit: str = "", test_zero: bool = True,
                 n_boot: int = 2000, seed: int = 0, confidence: float = 0.95, alpha: float = 0.05,
                 power: float = 0.8, min_n: int = MIN_N,
                 bounds: tuple[float, float] = (-math.inf, math.inf)) -> None:
        columns = (value,) if isinstance(value, str) else tuple(value)
        groups_list = [groups] if isinstance(groups, str) else list(groups or [])
        require(data, *columns, cluster, *groups_list)
        d = data.copy()
        if isinstance(value, str):
            d["_shift"] = pd.to_numeric(d[value], errors="coerce")
        else:
            before, after = value
            d["_shift"] = pd.to_numeric(d[after], errors="coerce") - pd.to_numeric(d[before], errors="coerce")
        self.name = name or (value if isinstance(value, str) else f"{value[1]} − {value[0]}")
        self.unit, self.test_zero, self.alpha, self.power, self.bounds = unit, test_zero, alpha, power, bounds
        self.frame = MetricFrame(d, {"mean": Metric("_shift", bounds=bounds), "median": Metric("_shift", "median",
                                                                                                bounds)},
                                 groups_list, cluster, n_boot, seed, confidence, min_n)

    @property
    def table(self) -> pd.DataFrame:
        """Tidy by-group table (metric ∈ {mean, median}) as in ``MetricFrame.by_group``."""
        return self.frame.by_group

    def tests(self) -> list[TestResult]:
        """Mean change ≠ 0 for all inputs and per group (kind "shift"); a group whose per-input means cannot show a
        variance (one input, or every value equal) is not testable."""
        if not self.test_zero:
            return []
        design = self.frame.design("mean")
        labels = ["all inputs"] + [str(g) for g in self.frame.group_index] if self.frame.groups else ["all inputs"]
        rows = [design.iloc[-1]] + ([design.iloc[g] for g in range(self.frame.n_groups)] if self.frame.groups else [])
        out = []
        for label, row in zip(labels, rows):
            name = f"{self.name}: shift ≠ 0, {label}"
            what = f"mean per-input change {self.name} (positive = the output is higher)"
            if not row["n"] or not row["se"] > 0 or not row["df"] >= 1:
                reason = ("no values" if not row["n"] else "one input only" if row["n_clusters"] < 2 else
                          "every value equal: no variance to test against")
                out.append(not_testable(name, "shift", reason, int(row["n_clusters"]), int(row["n"]), self.unit,
                                        what))
                continue
            out.append(wald_max_test([row["value"]], [[row["se"] ** 2]], [label], name=name, kind="shift",
                                     effect_label=what, n=int(row["n_clusters"]), n_samples=int(row["n"]),
                                     df=float(row["df"]), scale=1.0, unit=self.unit, alpha=self.alpha,
                                     bounds=self.bounds,
                                     power=self.power, confidence=self.frame.confidence))
        return out


def upsampler_metrics(data: pd.DataFrame, groups: str | Sequence[str] | None = None, cluster: str | None = ITEM, *,
                      success: str | None = SUCCESS, lr_error: str | None = LR_ERROR,
                      extra: Mapping[str, Metric | str] | None = None, **kwargs: object) -> MetricFrame:
    """MetricFrame of the upsampler's diagnostics per group: ``success_rate`` (mean of the bool ``success`` column;
    Clopper–Pearson interval with one sample per input), ``lr_error_mean`` / ``lr_error_median`` (LR-consistency error,
    in the unit of the column, e.g. mean squared error of the downscaled output against the LR input), plus ``extra``
    metrics, e.g. ``{"psnr": Metric("psnr"), "ssim": Metric("ssim")}`` (see :mod:`audit.vision.image_quality`). Keyword
    arguments go to ``MetricFrame`` (n_boot, seed, confidence, min_n)."""
    metrics: dict[str, Metric | str] = {}
    if success is not None:
        metrics["success_rate"] = Metric(success, "rate")
    if lr_error is not None:
        metrics["lr_error_mean"] = Metric(lr_error)
        metrics["lr_error_median"] = Metric(lr_error, "median")
    metrics.update(extra or {})
    require(data, *(m.column if isinstance(m, Metric) else m for m in metrics.values()))
    return MetricFrame(data, metrics, groups, cluster, **kwargs)


def mean_per_input(data: pd.DataFrame, column: str, cluster: str = ITEM) -> pd.Series:
    """Mean of ``column`` over each input's samples (NaN ignored), indexed by input id."""
    return pd.to_numeric(data[column], errors="coerce").groupby(data[cluster].to_numpy()).mean()

