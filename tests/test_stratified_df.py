"""Cochran's effective degrees of freedom of a stratified variance (Satterthwaite 1946; Cochran 1977, *Sampling
Techniques*, 3rd ed., eq. 5.16), :attr:`audit.stats.clustered.ClusteredMean.effective_df`, used in Korn & Graubard's
factor of the stratified overall rate of ``MetricFrame`` and the stratified shares of ``DistributionFit``: checked
against a float64 hand computation written here (unequal strata, a stratum without variance, a stratum of one input),
unchanged with one stratum, and by a known-answer coverage simulation of the overall rate with 4 groups × 3 inputs × 4
samples, where inputs − strata (8) overstated what the variance knows and the interval covered 0.90."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.metrics.frame import Metric, MetricFrame
from audit.stats.clustered import clustered_mean


def _cochran_by_hand(values: list[list[float]], strata: list[str]) -> tuple[float, float]:
    """(variance, ν) of the stratified row mean by plain sums: u_i = (t_i − p̂_h·m_i)/M, the term of stratum h
    v_h = n_h/(n_h − 1)·Σ_{i∈h} u_i² (strata of ≥ 2 inputs), ν = (Σ_h v_h)² / Σ_h v_h²/(n_h − 1)."""
    total = sum(len(v) for v in values)
    terms = []
    for h in sorted(set(strata)):
        members = [v for v, s in zip(values, strata) if s == h]
        if len(members) < 2:
            continue
        p_h = sum(sum(v) for v in members) / sum(len(v) for v in members)
        spread = sum(((sum(v) - p_h * len(v)) / total) ** 2 for v in members)
        terms.append((len(members) / (len(members) - 1) * spread, len(members) - 1))
    variance, spread = sum(t for t, _ in terms), sum(t * t / d for t, d in terms)
    return variance, variance**2 / spread if spread > 0 else float("nan")


def _arrays(values: list[list[float]], strata: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.array([x for v in values for x in v], float)
    item = np.repeat(np.arange(len(values)), [len(v) for v in values])
    return y, item, np.array(strata, dtype=object)[item]


def test_effective_df_against_a_hand_computation():
    """Unequal strata (4, 2, 3 and 1 inputs of 1–4 rows), one of them without variance (every row 1): ν from plain
    sums, below inputs − strata; the stratum terms add up to the variance; the one-input stratum contributes 0."""
    values = [[1, 0, 1], [0, 0], [1, 1, 1, 0], [0],  # a: four inputs
              [1, 1], [1, 1, 1],  # b: no variance
              [0, 1, 0, 0], [1], [1, 1, 0],  # c
              [0, 1]]  # d: one input
    strata = ["a"] * 4 + ["b"] * 2 + ["c"] * 3 + ["d"]
    variance, nu = _cochran_by_hand(values, strata)
    cm = clustered_mean(*_arrays(values, strata))
    assert cm.cov[0, 0] == pytest.approx(variance, rel=1e-13)
    assert cm.stratum_variance.sum() == pytest.approx(variance, rel=1e-13)
    assert cm.stratum_variance[1, 0] == 0 and cm.stratum_variance[3, 0] == 0
    assert cm.effective_df[0] == pytest.approx(nu, rel=1e-12)
    assert 2 < nu < cm.df == 6
    rng = np.random.default_rng(7)
    for _ in range(40):
        strata = [f"g{s}" for s in rng.integers(0, 5, rng.integers(4, 16))]
        values = [rng.integers(0, 2, rng.integers(1, 5)).astype(float).tolist() for _ in strata]
        variance, nu = (np.nan, np.nan) if len(set(strata)) < 2 else _cochran_by_hand(values, strata)
        cm = clustered_mean(*_arrays(values, strata))
        if len(set(strata)) >= 2 and variance > 0:
            assert cm.effective_df[0] == pytest.approx(nu, rel=1e-12)
            assert cm.effective_df[0] <= cm.df
        else:
            assert cm.effective_df[0] == cm.df


def test_equal_strata_give_inputs_minus_strata_and_no_variance_keeps_it():
    """Strata contributing equally per degree of freedom: ν = inputs − strata; no variance anywhere: df itself
    (nothing to weigh; the rate's size then follows :func:`audit.stats.intervals.effective_size`)."""
    values = [[1, 0], [0, 0], [1, 1], [0, 1], [1, 1], [0, 0]]
    cm = clustered_mean(*_arrays(values, ["a", "a", "a", "b", "b", "b"]))
    assert cm.effective_df[0] == pytest.approx(cm.df, rel=1e-12)
    cm = clustered_mean(*_arrays([[1, 1], [1], [1, 1, 1], [1]], ["a", "a", "b", "b"]))
    assert cm.effective_df[0] == cm.df == 2


def test_one_stratum_is_unchanged():
    """One stratum (no strata given, or a single label): ν = clusters − 1 exactly, and a group's rate interval (one
    stratum) is the same as at df = inputs − 1."""
    rng = np.random.default_rng(8)
    values = [rng.integers(0, 2, 3).astype(float).tolist() for _ in range(9)]
    y, item, _ = _arrays(values, ["a"] * 9)
    assert clustered_mean(y, item).effective_df[0] == 8.0
    assert clustered_mean(y, item, np.zeros(len(y))).effective_df[0] == 8.0
    k = clustered_mean(np.column_stack([y, 1 - y]), item)
    assert list(k.effective_df) == [8.0, 8.0]
    table = pd.DataFrame({"group": "a", "item": item, "y": y})
    frame = MetricFrame(table, {"r": Metric("y", "rate")}, "group", "item", n_boot=2)
    assert list(frame.design("r")["df"]) == [8.0, 8.0]


def overall_coverage(tables: int, seed: int, sizes: tuple[int, ...], samples: int = 4, rate: float = 0.8,
                     rho: float = 0.5) -> tuple[float, float]:
    """(coverage, mean width) of the overall rate (stratified by group) over ``tables`` draws held as columns of one
    MetricFrame: groups of ``sizes`` inputs × ``samples`` samples, each sample 1 with probability ``rate``; an input's
    samples all repeat one draw with probability ``rho`` (the validity battery's generator, benchmarks/validity.py,
    where every class keeps its label with probability 0.8). Truth: ``rate``."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    shared = rng.uniform(size=(tables, n, 1)) < rate
    own = rng.uniform(size=(tables, n, samples)) < rate
    y = np.where(rng.uniform(size=(tables, n, 1)) < rho, shared, own).reshape(tables, -1).astype(float)
    table = pd.DataFrame(y.T, columns=[f"y{t}" for t in range(tables)])
    table["item"] = np.repeat(np.arange(n), samples)
    table["group"] = np.repeat(np.repeat(np.arange(len(sizes)), sizes), samples)
    overall = MetricFrame(table, {c: Metric(c, "rate") for c in table.columns[:tables]}, "group", "item",
                          n_boot=1).overall
    low, high = overall["ci_low"].to_numpy(float), overall["ci_high"].to_numpy(float)
    return float(np.mean((low <= rate) & (rate <= high))), float(np.mean(high - low))


@pytest.mark.parametrize("sizes", [(3,) * 4, (2, 2, 2, 1, 1, 1, 1, 1, 1)], ids=["race 4x3", "age 12 in 9 bins"])
def test_coverage_of_the_overall_rate_with_3_inputs_per_group(sizes):
    """Known answer: the validity battery's design 11 (4 groups × 3 inputs × 4 samples), its race attribute (4 strata
    of 3 inputs) and its age attribute (12 inputs in 9 age bins: 3 of 2 inputs, 6 of 1), 3000 tables each: the overall
    rate covers in at least 0.93 of tables. With df = inputs − strata the age strata covered 0.904 (benchmarks/
    RESULTS.md)."""
    coverage, width = overall_coverage(3000, 11, sizes)
    assert coverage >= 0.93, (coverage, width)
