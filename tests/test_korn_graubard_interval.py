"""Known-answer coverage of the rate and share interval of clustered rows (Korn & Graubard's Clopper–Pearson interval at
the df-adjusted effective size, :func:`audit.stats.intervals.effective_size_interval`) in the three cases where Wilson's
interval at the same size fell short in benchmarks/RESULTS.md ("small-group designs", and the correction after the
"clustering floor" section): a transition rate of 1/30 with 5 inputs of 3 samples (Wilson: 0.912), a group of one input
with 4 samples at a rate of 0.8 (Wilson: 0.899 exactly) and the overall rate of 7 groups of one input whose samples
always agree at 0.02 and 0.98 (Wilson: 0.868 exactly). Each goes through the public classes only (``AttributeAudit``,
``MetricFrame``), so it runs on the old code too, where it fails. Where the interval depends on the data only through a
count, the coverage is exact: the binomial probabilities of every count times whether the frame's interval at that
count covers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from audit.metrics.attribute import AttributeAudit
from audit.metrics.frame import Metric, MetricFrame


def _transition_table(rng: np.random.Generator, classes: int, inputs: int, samples: int, keep: float,
                      rho: float) -> pd.DataFrame:
    """``inputs`` inputs per class × ``samples`` samples; a sample keeps its input's class with probability ``keep``,
    else goes to one of the other classes uniformly; with probability ``rho`` an input's samples repeat one draw (the
    battery's generator, benchmarks/validity.py)."""
    labels = np.repeat(np.arange(classes), inputs)
    flip = (1 - keep) / (classes - 1)
    cond = np.full((classes, classes), flip) + np.eye(classes) * (keep - flip)
    cum = np.cumsum(cond[labels], axis=1)
    shared = (rng.uniform(size=(len(labels), 1)) > cum).sum(axis=1)
    own = (rng.uniform(size=(len(labels), samples, 1)) > cum[:, None, :]).sum(axis=2)
    out = np.where(rng.uniform(size=(len(labels), 1)) < rho, shared[:, None], own)
    return pd.DataFrame({"item_id": np.repeat([f"i{k}" for k in range(len(labels))], samples),
                         "sample": np.tile(np.arange(samples), len(labels)),
                         "label": np.repeat([f"c{g}" for g in labels], samples),
                         "out": [f"c{g}" for g in out.ravel()]})


def test_transition_rate_of_one_in_thirty_with_five_inputs_of_three_samples():
    """7 classes × 5 inputs × 3 samples, keep 0.8, ρ = ½ (the battery's small design 10): every off-diagonal
    transition has true rate 1/30. 150 audits (6,300 cells, Monte-Carlo SE ≈ 0.003 if independent): coverage ≥ 0.93.
    Wilson at the size covered 0.912: one input's 3 samples in one other class gave p̂ = 1/5 at the floor of 5
    inputs, and Wilson(1 of 5) = 0.036–0.624 misses 1/30, where Clopper–Pearson(1 of 5) = 0.005–0.716 covers."""
    rng = np.random.default_rng(30)
    covered = given = 0
    for _ in range(150):
        rates = AttributeAudit(_transition_table(rng, 7, 5, 3, 0.8, 0.5), "label", "out", n_boot=2).transition_rates()
        off = rates[rates["input"] != rates["output"]]
        low, high = off["ci_low"].to_numpy(float), off["ci_high"].to_numpy(float)
        given += int(np.isfinite(low).sum())
        covered += int(((low <= 1 / 30) & (1 / 30 <= high)).sum())
    assert given == 150 * 42, given
    assert covered / given >= 0.93, covered / given


def _rate_table(values_per_input: list[list[int]], groups: list[str]) -> pd.DataFrame:
    return pd.DataFrame([(g, f"i{k}", y) for k, (g, values) in enumerate(zip(groups, values_per_input))
                         for y in values], columns=["group", "item", "y"])


def test_group_of_one_input_with_four_samples_at_a_rate_of_0_8_exactly():
    """One input × 4 samples, rate 0.8, ρ = ½ (an age bin of the battery's design 11): the interval depends only on
    the count k of 4, P(k) = ½·(0.2·[k = 0] + 0.8·[k = 4]) + ½·Bin(k; 4, 0.8). Exact coverage ≥ 0.95 (each
    count's interval from the frame, one group per count). Wilson at the floor of 1 input: (0 of 1) = 0–0.79 misses
    0.8 with probability 0.1008, coverage 0.899; Clopper–Pearson (0 of 1) = 0–0.975."""
    counts = np.arange(5)
    table = _rate_table([[1] * k + [0] * (4 - k) for k in counts], [f"k{k}" for k in counts])
    by = MetricFrame(table, {"r": Metric("y", "rate")}, "group", "item", n_boot=2).by_group.set_index("group")
    covers = np.array([by.loc[f"k{k}", "ci_low"] <= 0.8 <= by.loc[f"k{k}", "ci_high"] for k in counts])
    prob = 0.5 * stats.binom.pmf(counts, 4, 0.8) + 0.5 * np.array([0.2, 0, 0, 0, 0.8])
    assert abs(prob.sum() - 1) < 1e-12
    assert float(prob @ covers) >= 0.95, (covers, float(prob @ covers))


def test_overall_rate_of_seven_groups_of_one_input_near_0_and_1_exactly():
    """7 groups × 1 input whose 3 samples always agree (the worst case of the clustering floor, size 7): the overall
    (stratified) rate's interval depends only on the number x of inputs at 1, x ~ Bin(7, p). Exact coverage at p =
    0.02, 0.98 and 0.5 ≥ 0.95 (each x's interval from the frame). Wilson at the floor covered 0.868 at 0.02 and 0.98:
    Clopper–Pearson covers at least 95 % at every p for independent rows, which is what the floor's worst case is."""
    groups = [f"g{h}" for h in range(7)]
    covers_at = {}
    for x in range(8):
        table = _rate_table([[1, 1, 1]] * x + [[0, 0, 0]] * (7 - x), groups)
        overall = MetricFrame(table, {"r": Metric("y", "rate")}, "group", "item", n_boot=2).overall.loc["r"]
        covers_at[x] = (float(overall["ci_low"]), float(overall["ci_high"]))
    for p in (0.02, 0.98, 0.5):
        coverage = sum(stats.binom.pmf(x, 7, p) * (low <= p <= high) for x, (low, high) in covers_at.items())
        assert coverage >= 0.95, (p, coverage, covers_at)
