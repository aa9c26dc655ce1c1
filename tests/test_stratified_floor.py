"""The floor of a stratified share's interval (:func:`audit.stats.intervals.least_effective_size` with strata): the
overall rate row of ``MetricFrame`` (stratified by group) and the stratified shares of ``DistributionFit`` get
Clopper–Pearson (Korn & Graubard) at no less than M / max_h c_h, c_h = Σ_{i∈h} m_i² / M_h (the size at the largest
variance within-input dependence allows), so they have an interval even with one input per group (df = inputs − groups =
0; before: none) and are never wider than the clustering can justify. Checked against float64 references written here
(hand sums, CR1 variance, Kish size, Korn–Graubard factor, Clopper–Pearson bounds by root finding:
tests/beta_reference.py), against the exact variance of the stratified mean (the bound the floor rests on), and by a
known-answer coverage simulation with 1, 2, 3 and 5 inputs per group. The simulation imports only the frame and the
distribution fit, so it runs on older code too (the measurement behind benchmarks/RESULTS.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from beta_reference import beta_interval
from scipy import stats

from audit.metrics.distribution import DistributionFit
from audit.metrics.frame import Metric, MetricFrame
from audit.stats.intervals import Bootstrap

ArrayLike = np.ndarray | pd.Series
SIZES = [3, 1, 2, 2, 2, 5, 1, 1, 1, 4]  # rows of each input
STRATA = ["A", "A", "A", "B", "B", "C", "D", "D", "D", "D"]  # the group of each input


def _floor_by_hand(sizes: list[int], strata: list[str]) -> float:
    """M / max_h (Σ_{i∈h} m_i² / M_h) by plain sums."""
    total = sum(sizes)
    worst = 0.0
    for h in sorted(set(strata)):
        rows = sum(m for m, s in zip(sizes, strata) if s == h)
        squares = sum(m * m for m, s in zip(sizes, strata) if s == h)
        worst = max(worst, squares / rows)
    return total / worst


def _unfloored_size(values: list[list[float]], strata: list[str]) -> tuple[float, float]:
    """(share, Korn–Graubard adjusted Kish size or NaN where df < 1) of the 0/1 ``values`` of each input: the CR1
    variance per stratum of (t_i − p̂_h·m_i)/M, n_eff = p̂(1 − p̂)/V·M/(M − 1) (the inputs where p̂ ∈ {0, 1} or V = 0),
    at least 1, times (t_{M−1}/t_df)², df Cochran's ν = (Σ_h v_h)² / Σ_h v_h²/(n_h − 1) over the strata's variance terms
    v_h (inputs − strata with one stratum or no variance; tests/test_stratified_df.py)."""
    total = sum(len(v) for v in values)
    p = sum(sum(v) for v in values) / total
    var = weighed = 0.0
    for h in set(strata):
        members = [v for v, s in zip(values, strata) if s == h]
        if len(members) < 2:
            continue
        p_h = sum(sum(v) for v in members) / sum(len(v) for v in members)
        spread = sum(((sum(v) - p_h * len(v)) / total) ** 2 for v in members)
        var += len(members) / (len(members) - 1) * spread
        weighed += (len(members) / (len(members) - 1) * spread) ** 2 / (len(members) - 1)
    boundary = p in (0.0, 1.0) or var == 0
    n_eff = len(values) if boundary else max(p * (1 - p) / var * total / (total - 1), 1.0)
    df = len(values) - len(set(strata))
    if len(set(strata)) > 1 and weighed > 0:
        df = min(var * var / weighed, df)
    if df < 1:
        return p, math.nan
    return p, n_eff * (stats.t.ppf(0.975, total - 1) / stats.t.ppf(0.975, df)) ** 2


def _table(values: list[list[float]], strata: list[str]) -> pd.DataFrame:
    return pd.DataFrame([(s, f"i{k}", y) for k, (v, s) in enumerate(zip(values, strata)) for y in v],
                        columns=["group", "item", "y"])


def test_floor_against_hand_sums_for_unequal_inputs_in_several_strata():
    """The stratified floor of unequal inputs in four groups is M / max_h c_h by hand (22 / 5 here: group C's one
    input of 5 rows), whatever the order or labels of the strata; an empty input changes nothing."""
    from audit.stats.intervals import least_effective_size

    expected = _floor_by_hand(SIZES, STRATA)
    assert expected == pytest.approx(22 / 5, rel=1e-15)
    assert least_effective_size(SIZES, STRATA) == pytest.approx(expected, rel=1e-14)
    order = np.random.default_rng(0).permutation(len(SIZES))
    codes = {"A": 7, "B": 2, "C": 9, "D": 0}
    assert least_effective_size(np.asarray(SIZES)[order], [codes[STRATA[k]] for k in order]) == \
        pytest.approx(expected, rel=1e-14)
    assert least_effective_size(SIZES + [0], STRATA + ["E"]) == pytest.approx(expected, rel=1e-14)
    rng = np.random.default_rng(1)
    for _ in range(50):
        sizes = rng.integers(1, 6, rng.integers(2, 12)).tolist()
        strata = [f"g{s}" for s in rng.integers(0, 4, len(sizes))]
        assert least_effective_size(sizes, strata) == pytest.approx(_floor_by_hand(sizes, strata), rel=1e-13)


def test_floor_with_one_stratum_is_the_unstratified_floor():
    """One stratum (or none given): exactly rows² / Σ m_i², the floor of an unstratified share; equal inputs: their
    number."""
    from audit.stats.intervals import least_effective_size

    rng = np.random.default_rng(2)
    for _ in range(50):
        sizes = rng.integers(1, 9, rng.integers(1, 15))
        old = float(sizes.sum() ** 2 / np.sum(sizes.astype(float) ** 2))
        assert least_effective_size(sizes) == old
        assert least_effective_size(sizes, ["all"] * len(sizes)) == old
    assert least_effective_size([3] * 7, [0] * 7) == 7.0
    assert least_effective_size([3] * 7, list(range(7))) == 7.0  # one input per stratum, equal sizes


def _exact_variance(sizes: np.ndarray, strata: np.ndarray, rates: np.ndarray, agree: float) -> float:
    """Var of the row mean when each input's count is, with probability ``agree``, all its rows at once (m·Bernoulli
    (p_h)) and otherwise Binomial(m, p_h): λ·m²·p(1 − p) + (1 − λ)·m·p(1 − p), summed over inputs, over M²."""
    p = rates[strata]
    per_input = agree * sizes**2 * p * (1 - p) + (1 - agree) * sizes * p * (1 - p)
    return float(per_input.sum() / sizes.sum() ** 2)


def test_the_bound_the_floor_rests_on():
    """Var(θ̂) ≤ p(1 − p) / floor for the stratified row mean (p its expectation) under within-input dependence of
    any strength, different rates per stratum, unequal inputs; equal (the bound is the largest variance) when every
    input's rows agree, the strata share one rate and c_h is the same in each."""
    from audit.stats.intervals import least_effective_size

    rng = np.random.default_rng(3)
    for _ in range(200):
        strata = rng.integers(0, rng.integers(1, 6), rng.integers(2, 15))
        sizes = rng.integers(1, 5, len(strata)).astype(float)
        rates = rng.uniform(0, 1, strata.max() + 1)
        p = float(np.sum(sizes * rates[strata]) / sizes.sum())
        bound = p * (1 - p) / least_effective_size(sizes, strata)
        for agree in (0.0, 0.5, 1.0):
            assert _exact_variance(sizes, strata, rates, agree) <= bound * (1 + 1e-12)
    strata, sizes = np.repeat([0, 1, 2], 2), np.array([1.0, 3, 3, 1, 2, 2])  # c_h = 10/4, 10/4, 8/4: not equal
    assert _exact_variance(sizes, strata, np.full(3, 0.3), 1.0) < 0.3 * 0.7 / least_effective_size(sizes, strata)
    sizes = np.array([1.0, 3, 3, 1, 1, 3])  # c_h = 10/4 in each
    assert _exact_variance(sizes, strata, np.full(3, 0.3), 1.0) == \
        pytest.approx(0.3 * 0.7 / least_effective_size(sizes, strata), rel=1e-12)


def test_overall_rate_and_stratified_share_match_the_hand_computed_interval():
    """The overall row of a rate (stratified by group) and a stratified share: Clopper–Pearson at max(Korn–Graubard
    adjusted Kish size, M / max_h c_h). One input per group (df = 0): at the floor; several: both regimes occur."""
    rng = np.random.default_rng(4)
    one_each = [[1, 1, 0], [0], [1, 1], [0, 0, 1, 0, 0]]
    cases = [(one_each, ["a", "b", "c", "d"]),
             ([rng.integers(0, 2, m).tolist() for m in SIZES], STRATA),
             ([[1, 1, 1], [0, 0, 0], [1, 1], [1], [0, 1], [0, 0, 0, 0]], ["a", "a", "b", "b", "c", "c"]),
             ([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], ["a", "a", "a", "b", "b", "b"])]
    regimes = set()
    for values, strata in cases:
        p, adjusted = _unfloored_size(values, strata)
        least = _floor_by_hand([len(v) for v in values], strata)
        regimes.add("floor" if not adjusted >= least else "estimated")
        expected = beta_interval(p, np.fmax(adjusted, least))
        table = _table(values, strata)
        overall = MetricFrame(table, {"r": Metric("y", "rate")}, "group", "item", n_boot=5).overall.loc["r"]
        assert overall["value"] == pytest.approx(p, rel=1e-14)
        assert (overall["ci_low"], overall["ci_high"]) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        labels = table["y"].map({1: "yes", 0: "no"})
        design = Bootstrap(len(table), table["group"], table["item"], 5, 0)
        fit = DistributionFit(labels, ["yes", "no"], None, design, table["item"].to_numpy(), table["group"].to_numpy())
        assert (fit.low[0], fit.high[0]) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert (fit.low[1], fit.high[1]) == pytest.approx(beta_interval(1 - p, np.fmax(adjusted, least)),
                                                          rel=1e-9, abs=1e-12)
    assert regimes == {"floor", "estimated"}


def test_the_floor_only_caps_the_width():
    """The property the floor guarantees, on random tables (2–6 groups of 1–4 inputs of 1–4 rows): the overall
    interval is never wider than Clopper–Pearson at the floor (the largest variance within-input dependence allows);
    where the unfloored interval exists at a size at or above the floor (a variance within what clustering allows) it is
    unchanged, and otherwise it is Clopper–Pearson at the floor, inside the unfloored one."""
    rng = np.random.default_rng(5)
    capped = unchanged = 0
    for _ in range(120):
        groups, inputs = int(rng.integers(2, 7)), int(rng.integers(1, 5))
        rates = rng.uniform(0.1, 0.9, groups)
        strata = [f"g{h}" for h in range(groups) for _ in range(inputs)]
        values = [(rng.uniform(size=int(rng.integers(1, 5))) < rates[int(s[1:])] + rng.normal(0, 0.2)).astype(float)
                  .tolist() for s in strata]
        p, adjusted = _unfloored_size(values, strata)
        least = _floor_by_hand([len(v) for v in values], strata)
        overall = MetricFrame(_table(values, strata), {"r": Metric("y", "rate")}, "group", "item",
                              n_boot=2).overall.loc["r"]
        low, high = float(overall["ci_low"]), float(overall["ci_high"])
        widest = beta_interval(p, least)
        assert widest[0] - 1e-9 <= low <= high <= widest[1] + 1e-9
        if adjusted >= least:
            unchanged += 1
            assert (low, high) == pytest.approx(beta_interval(p, adjusted), rel=1e-9, abs=1e-12)
        else:
            capped += 1
            assert (low, high) == pytest.approx(widest, rel=1e-9, abs=1e-12)
            if not math.isnan(adjusted):
                unfloored = beta_interval(p, adjusted)
                assert unfloored[0] - 1e-12 <= low <= high <= unfloored[1] + 1e-12
    assert capped >= 20 and unchanged >= 20, (capped, unchanged)


def _draw(groups: int, inputs: int, tables: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray, np.ndarray]:
    """``tables`` draws of one design: ``groups`` groups of ``inputs`` inputs of 2 or 3 samples (alternating), a
    sample y = 1{μ_g + u_i + e > 0} with input effect u_i ~ N(0, 1.2²) and sample noise e ~ N(0, 1): samples of an
    input correlate (latent ρ = 0.59), group rates Φ(μ_g/√2.44) from 0.30 to 0.63. Returns (group of each row, input
    of each row, latent values (tables, rows), group rates)."""
    sizes = 2 + np.arange(groups * inputs) % 2
    row_input = np.repeat(np.arange(groups * inputs), sizes)
    row_group = row_input // inputs
    mu = np.linspace(-0.8, 0.5, groups)
    latent = (mu[row_group] + rng.normal(0, 1.2, (tables, groups * inputs))[:, row_input]
              + rng.normal(0, 1.0, (tables, len(row_input))))
    return row_group, row_input, latent, stats.norm.cdf(mu / math.hypot(1.2, 1.0))


def stratified_coverage(groups: int, inputs: int, tables: int, seed: int, shares: int = 0) -> dict[str, tuple]:
    """(coverage, tables with an interval, mean width) of the overall rate of y (one MetricFrame holding ``tables``
    independent draws of :func:`_draw` as columns: same design, stratified by group) and, for the first ``shares``
    draws, of the share of each of three labels (latent < −0.5, in [−0.5, 0.5), ≥ 0.5) in a stratified
    ``DistributionFit``. True values: Σ_g (M_g/M)·p_g with the group row counts M_g fixed. A missing interval
    counts as a miss. Also the measurement behind benchmarks/RESULTS.md."""
    rng = np.random.default_rng(seed)
    row_group, row_input, latent, rates = _draw(groups, inputs, tables, rng)
    weights = np.bincount(row_group) / len(row_group)
    table = pd.DataFrame((latent > 0).T.astype(float), columns=[f"y{r}" for r in range(tables)])
    table["group"], table["item"] = row_group, row_input
    overall = MetricFrame(table, {c: Metric(c, "rate") for c in table.columns[:tables]}, "group", "item",
                          n_boot=2).overall
    result = {"rate": _score(overall["ci_low"], overall["ci_high"], float(weights @ rates))}
    if shares:
        sd = math.hypot(1.2, 1.0)
        mu = np.linspace(-0.8, 0.5, groups)
        cuts = stats.norm.cdf((np.array([-0.5, 0.5])[None, :] - mu[:, None]) / sd)  # P[latent < cut] per group
        truth = weights @ np.column_stack([cuts[:, 0], cuts[:, 1] - cuts[:, 0], 1 - cuts[:, 1]])
        bounds = []
        for r in range(shares):
            labels = pd.Series(np.digitize(latent[r], [-0.5, 0.5]).astype(str))
            fit = DistributionFit(labels, ["0", "1", "2"], None, Bootstrap(len(labels), row_group, row_input, 1, 0),
                                  row_input, row_group)
            bounds.append(np.column_stack([fit.low, fit.high, truth]))
        b = np.concatenate(bounds)
        result["share"] = _score(b[:, 0], b[:, 1], b[:, 2])
    return result


def _score(low: ArrayLike, high: ArrayLike, truth: ArrayLike) -> tuple[float, int, float]:
    low, high = np.asarray(low, float), np.asarray(high, float)
    given = np.isfinite(low) & np.isfinite(high)
    covered = given & (low <= truth) & (truth <= high)
    return float(covered.mean()), int(given.sum()), float((high - low)[given].mean()) if given.any() else math.nan


@pytest.mark.parametrize(("groups", "inputs"), [(7, 1), (6, 2), (5, 3), (4, 5)])
def test_coverage_of_the_stratified_overall_rate_and_shares_with_few_inputs_per_group(groups, inputs):
    """Known answer: 800 tables per design of ``groups`` groups × ``inputs`` inputs × 2–3 correlated samples, group
    rates 0.30–0.63: the overall rate covers Σ_g (M_g/M)·p_g in at least 0.93 of tables and every table has an
    interval, also with one input per group (df = 0: before, none in any table); so do the three shares of 200
    stratified label distributions."""
    result = stratified_coverage(groups, inputs, 800, 100 + inputs, shares=200)
    assert result["rate"][1] == 800 and result["share"][1] == 600, result
    assert result["rate"][0] >= 0.93 and result["share"][0] >= 0.93, result
