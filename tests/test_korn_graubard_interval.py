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


def _draws(rng: np.random.Generator, classes: int, inputs: int, samples: int, keep: float, rho: float,
           tables: int) -> np.ndarray:
    """(tables, classes·inputs, samples) output classes of ``inputs`` inputs per class (input k has class k //
    inputs) from the battery's generator (benchmarks/validity.py): keep the class with probability ``keep``, else
    one of the others uniformly (symmetric flows of equal shares); an input's samples repeat one draw with
    probability ``rho``."""
    from benchmarks.validity import _draw, conditional

    labels = np.repeat(np.arange(classes), inputs)
    cond = conditional(np.full(classes, 1 / classes), keep)
    return np.stack([_draw(rng, cond, labels, samples, rho) for _ in range(tables)])


def transition_coverage(inputs: int, samples: int, audits: int, seed: int, classes: int = 7, keep: float = 0.8,
                        rho: float = 0.5) -> dict[str, tuple[float, int, float]]:
    """(coverage, cells with an interval, mean width) of the transition rates P(out | in) of ``audits``
    ``AttributeAudit``s of :func:`_draws`, on the diagonal (true ``keep``) and off it (true (1 − keep)/(classes −
    1)). Also the measurement behind benchmarks/RESULTS.md."""
    rng = np.random.default_rng(seed)
    truth = {"diagonal": keep, "off-diagonal": (1 - keep) / (classes - 1)}
    hits = {key: [0, 0, 0.0] for key in truth}
    items = np.repeat([f"i{k}" for k in range(classes * inputs)], samples)
    labels = np.repeat([f"c{k // inputs}" for k in range(classes * inputs)], samples)
    for out in _draws(rng, classes, inputs, samples, keep, rho, audits):
        data = pd.DataFrame({"item_id": items, "sample": np.tile(np.arange(samples), classes * inputs),
                             "label": labels, "out": [f"c{g}" for g in out.ravel()]})
        rates = AttributeAudit(data, "label", "out", n_boot=2).transition_rates()
        for key, p in truth.items():
            cells = rates[(rates["input"] == rates["output"]) == (key == "diagonal")]
            low, high = cells["ci_low"].to_numpy(float), cells["ci_high"].to_numpy(float)
            given = np.isfinite(low)
            hits[key][0] += int(((low <= p) & (p <= high)).sum())
            hits[key][1] += int(given.sum())
            hits[key][2] += float((high - low)[given].sum())
    return {key: (covered / given, given, width / given) for key, (covered, given, width) in hits.items()}


def overall_preservation_coverage(groups: int, inputs: int, samples: int, tables: int, seed: int,
                                  keep: float = 0.8, rho: float = 0.5) -> tuple[float, int, float]:
    """(coverage, tables with an interval, mean width) of the overall preservation rate (stratified by input class)
    of ``tables`` draws of :func:`_draws` (one ``MetricFrame``, a rate column per draw); true rate ``keep``. A
    missing interval counts as a miss. Also the measurement behind benchmarks/RESULTS.md."""
    rng = np.random.default_rng(seed)
    kept = _draws(rng, groups, inputs, samples, keep, rho, tables) == np.repeat(np.arange(groups), inputs)[:, None]
    table = pd.DataFrame(kept.reshape(tables, -1).T.astype(float), columns=[f"y{t}" for t in range(tables)])
    table["group"] = np.repeat(np.arange(groups), inputs * samples)
    table["item"] = np.repeat(np.arange(groups * inputs), samples)
    overall = MetricFrame(table, {c: Metric(c, "rate") for c in table.columns[:tables]}, "group", "item",
                          n_boot=2).overall
    low, high = overall["ci_low"].to_numpy(float), overall["ci_high"].to_numpy(float)
    given = np.isfinite(low)
    return float(((low <= keep) & (keep <= high)).mean()), int(given.sum()), float((high - low)[given].mean())


def test_transition_rate_of_one_in_thirty_with_five_inputs_of_three_samples():
    """7 classes × 5 inputs × 3 samples, keep 0.8, ρ = ½ (the battery's small design 10): every off-diagonal
    transition has true rate 1/30. 150 audits (6,300 cells, Monte-Carlo SE ≈ 0.003 if independent): coverage ≥ 0.93
    (0.998 now, 0.919 before). Wilson at the size covered 0.912 in the battery: one input's 3 samples in one other
    class gave p̂ = 1/5 at the floor of 5 inputs, and Wilson(1 of 5) = 0.036–0.624 misses 1/30, where
    Clopper–Pearson(1 of 5) = 0.005–0.716 covers."""
    result = transition_coverage(5, 3, 150, 30)
    assert result["off-diagonal"][1] == 150 * 42, result
    assert result["off-diagonal"][0] >= 0.93 and result["diagonal"][0] >= 0.93, result


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
