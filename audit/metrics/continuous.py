"""Paired continuous changes per group (ΔITA, age shift, identity distance) and the upsampler's own diagnostics
(success rate, LR-consistency error, PSNR/SSIM columns) per group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from audit.metrics.columns import ITEM, require
from audit.metrics.frame import MIN_N, Metric, MetricFrame
from audit.stats.tests import TestResult, wilcoxon_signed_rank


class PairedShift:
    """Per-row paired change d (``value`` column, or ``after − before`` for a (before, after) pair of columns).

    ``table`` gives mean and median of d overall and per group with bootstrap intervals (stratified by group,
    clustered by input). ``tests()`` runs a Wilcoxon signed-rank test of d against 0 per group and overall, on
    per-input means of d (samples of one input are not independent), each with its MDE in ``unit``. Set
    ``test_zero=False`` for quantities that are not signed changes (identity distance ≥ 0): then there are no tests
    and groups are compared through ``frame.difference()``.
    """

    def __init__(self, data: pd.DataFrame, value: str | tuple[str, str], groups: str | Sequence[str] | None = None,
                 cluster: str | None = ITEM, *, name: str | None = None, unit: str = "", test_zero: bool = True,
                 n_boot: int = 2000, seed: int = 0, confidence: float = 0.95, alpha: float = 0.05,
                 power: float = 0.8, min_n: int = MIN_N) -> None:
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
        self.unit, self.test_zero, self.alpha, self.power = unit, test_zero, alpha, power
        self.frame = MetricFrame(d, {"mean": Metric("_shift"), "median": Metric("_shift", "median")}, groups_list,
                                 cluster, n_boot, seed, confidence, min_n)

    @property
    def table(self) -> pd.DataFrame:
        """Tidy by-group table (metric ∈ {mean, median}) as in ``MetricFrame.by_group``."""
        return self.frame.by_group

    def _per_input(self) -> pd.DataFrame:
        data = self.frame.data.assign(_code=self.frame.codes, _cluster=self.frame.bootstrap.row_cluster)
        return data.groupby("_cluster").agg(shift=("_shift", "mean"), code=("_code", "first"))

    def tests(self) -> list[TestResult]:
        if not self.test_zero:
            return []
        per_input = self._per_input()
        out = [wilcoxon_signed_rank(per_input["shift"], f"{self.name}: shift ≠ 0, all inputs", self.unit,
                                    self.alpha, self.power)]
        if self.frame.groups:
            for code, label in enumerate(self.frame.group_index):
                shift = per_input.loc[per_input["code"] == code, "shift"]
                out.append(wilcoxon_signed_rank(shift, f"{self.name}: shift ≠ 0, {label}", self.unit, self.alpha,
                                                self.power))
        return out


def upsampler_metrics(data: pd.DataFrame, groups: str | Sequence[str] | None = None, cluster: str | None = ITEM, *,
                      success: str | None = "ups_success", lr_error: str | None = "ups_lr_l2",
                      extra: Mapping[str, Metric | str] | None = None, **kwargs: object) -> MetricFrame:
    """MetricFrame of the upsampler's diagnostics per group: ``success_rate`` (mean of the bool ``success`` column;
    Wilson interval with one sample per input), ``lr_error_mean`` / ``lr_error_median`` (LR-consistency error, in
    the unit of the column, e.g. mean squared error of the downscaled output against the LR input), plus ``extra``
    metrics, e.g. ``{"psnr": Metric("psnr"), "ssim": Metric("ssim")}`` (see :mod:`audit.metrics.image_quality`).
    Keyword arguments go to ``MetricFrame`` (n_boot, seed, confidence, min_n)."""
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

