"""audit.metrics against independent computations (pandas, scipy, statsmodels, skimage) on synthetic run tables,
and by simulation with a known answer (end-to-end false-positive rate, cluster-bootstrap coverage, power)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from statsmodels.stats.contingency_tables import SquareTable
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from audit.metrics import (
    NO_FACE,
    AttributeAudit,
    Metric,
    MetricFrame,
    PairedShift,
    corrected_shares,
    noise_floor,
    project_to_simplex,
    psnr,
    report_tests,
    ssim,
    upsampler_metrics,
)
from audit.metrics.columns import classifier_column, label_column, probability_columns, split_inputs, truth_column
from audit.stats import divergences

RACES = ["Asian", "Black", "Indian", "White"]


def run_table(n_per_race: int = 60, samples: int = 3, flip: float = 0.3, to_white: float = 0.7, seed: int = 0,
              no_face: float = 0.03) -> pd.DataFrame:
    """A synthetic run table: non-White inputs flip with probability ``flip``, towards White w.p. ``to_white``."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(RACES, n_per_race)
    gender = rng.choice(["Female", "Male"], len(truth))
    n = len(truth) * samples
    t, g = np.repeat(truth, samples), np.repeat(gender, samples)
    flips = (t != "White") & (rng.uniform(size=n) < flip)
    out = np.where(flips, np.where(rng.uniform(size=n) < to_white, "White", rng.choice(RACES, n)), t).astype(object)
    out[rng.uniform(size=n) < no_face] = ""
    return pd.DataFrame({
        "item_id": np.repeat([f"img{i:04d}" for i in range(len(truth))], samples),
        "sample": np.tile(np.arange(samples), len(truth)), "label_race": t, "label_gender": g,
        "out_ff_race": out, "in_ff_race": t, "delta_ita": rng.normal(np.where(t == "White", 0.0, 4.0), 6.0),
        "ups_success": rng.uniform(size=n) < 0.9, "ups_lr_l2": rng.gamma(2.0, 0.01, n)})


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return run_table()


@pytest.fixture(scope="module")
def audit(table) -> AttributeAudit:
    return AttributeAudit(table, "label_race", "out_ff_race", positive="White", n_boot=500)


# ---------------------------------------------------------------- image quality ---------------------------------------
def test_psnr_and_ssim_match_skimage():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(32, 40, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert psnr(b, a) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1))
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
                                channel_axis=-1)
    assert ssim(b, a) == pytest.approx(ref, abs=1e-12)
    chw = np.moveaxis(a, -1, 0), np.moveaxis(b, -1, 0)
    assert ssim(chw[1], chw[0], channel_axis=0) == pytest.approx(ref, abs=1e-12)
    gray = structural_similarity(a[..., 0], b[..., 0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1)
    assert ssim(b[..., 0], a[..., 0], channel_axis=None) == pytest.approx(gray, abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0) and psnr(a, a) == math.inf


# ---------------------------------------------------------------- MetricFrame -----------------------------------------
def test_metric_frame_matches_pandas_and_clopper_pearson(table):
    one = table[table["sample"] == 0]
    frame = MetricFrame(one, {"success": Metric("ups_success", "rate"), "lr": Metric("ups_lr_l2", "median")},
                        "label_race",
                        "item_id", n_boot=300)
    by = frame.by_group.set_index(["metric", "label_race"])
    ref = one.groupby("label_race")["ups_success"].agg(["mean", "sum", "count"])
    np.testing.assert_allclose(by.loc["success", "value"], ref["mean"])
    low, high = proportion_confint(ref["sum"], ref["count"], method="beta")
    np.testing.assert_allclose(by.loc["success", "ci_low"], low)
    np.testing.assert_allclose(by.loc["success", "ci_high"], high)
    # one row per input: plain Clopper–Pearson
    assert (by.loc["success", "ci_method"] == "Clopper–Pearson (effective n, Korn–Graubard df)").all()
    np.testing.assert_allclose(by.loc["lr", "value"], one.groupby("label_race")["ups_lr_l2"].median())
    for race, values in one.groupby("label_race")["ups_lr_l2"]:  # one row per input: the exact sign-test interval
        exact = stats.quantile_test(values.to_numpy(), q=0.0).confidence_interval(0.95)
        np.testing.assert_allclose(by.loc[("lr", race), ["ci_low", "ci_high"]].to_numpy(float), exact)
    assert (by.loc["lr", "ci_method"] == "sign test (effective n)").all()
    diff, ratio = frame.difference().loc["success"], frame.ratio().loc["success"]
    assert diff["value"] == pytest.approx(ref["mean"].max() - ref["mean"].min())
    assert ratio["value"] == pytest.approx(ref["mean"].min() / ref["mean"].max())
    assert diff["group_max"] == ref["mean"].idxmax() and diff["ci_low"] <= diff["ci_high"]
    assert frame.overall.loc["success", "value"] == pytest.approx(one["ups_success"].mean())


def test_metric_frame_intersections_clusters_and_missing_groups(table):
    data = table.copy()
    data.loc[data.index[:3], "label_gender"] = ""  # one input without a gender label
    frame = MetricFrame(data, {"success": Metric("ups_success", "rate")}, ["label_race", "label_gender"], "item_id",
                        n_boot=300)
    assert frame.n_dropped == 3 and frame.n_groups == 8
    by = frame.by_group.set_index(["label_race", "label_gender"])
    kept = data.iloc[3:]
    ref = kept.groupby(["label_race", "label_gender"])["ups_success"].mean()
    np.testing.assert_allclose(by.loc[ref.index, "value"], ref)
    # 3 samples per input: Clopper–Pearson at the effective size
    assert (by["ci_method"] == "Clopper–Pearson (effective n, Korn–Graubard df)").all()
    np.testing.assert_array_equal(by.loc[ref.index, "n_clusters"],
                                  kept.groupby(["label_race", "label_gender"])["item_id"].nunique())
    small = MetricFrame(data.iloc[:30], {"success": Metric("ups_success", "rate")}, "label_race", "item_id",
                        n_boot=50).by_group
    assert small["small"].all()


# ---------------------------------------------------------------- AttributeAudit --------------------------------------
def test_transition_preservation_and_shares_match_pandas(table, audit):
    seen = table[table["out_ff_race"] != ""]
    ref = pd.crosstab(seen["label_race"], seen["out_ff_race"]).reindex(index=RACES, columns=RACES, fill_value=0)
    np.testing.assert_array_equal(audit.transition().to_numpy(), ref.to_numpy())
    rates = audit.transition_rates().set_index(["input", "output"])
    np.testing.assert_allclose(rates["rate"].unstack().loc[RACES, RACES], ref.div(ref.sum(axis=1), axis=0))
    assert ((rates["ci_low"] <= rates["rate"] + 1e-12) & (rates["rate"] <= rates["ci_high"] + 1e-12)).all()
    rdp = audit.rdp().set_index("label_race")
    acc = (seen["label_race"] == seen["out_ff_race"]).groupby(seen["label_race"]).mean()
    np.testing.assert_allclose(rdp["value"], acc)
    np.testing.assert_allclose(rdp["p_rdp"], acc / acc.sum())
    assert rdp.loc["White", "value"] == 1.0 and rdp["p_rdp"].sum() == pytest.approx(1)
    shares = audit.shares()
    np.testing.assert_allclose(shares["share"], seen["out_ff_race"].value_counts(normalize=True)[RACES])
    np.testing.assert_allclose(shares["input_share"], 0.25)
    no_face = audit.by_group().query("metric == 'no_face'").set_index("label_race")["value"]
    np.testing.assert_allclose(no_face, (table["out_ff_race"] == "").groupby(table["label_race"]).mean())


def test_divergences_use_the_stats_definitions(audit):
    table = audit.divergences().set_index(["target", "divergence"])
    expected = divergences(audit.pr.shares, audit.pr.reference)
    for name, value in expected.items():
        assert table.loc[("PR", name), "value"] == pytest.approx(float(value))
    tv, l1 = table.loc[("PR", "total_variation"), "value"], np.abs(audit.pr.shares - audit.pr.reference).sum()
    assert tv == pytest.approx(l1 / 2)
    p_rdp = audit.rdp()["p_rdp"].to_numpy()
    assert table.loc[("P_RDP", "pearson_chi2"), "value"] == pytest.approx(4 * np.sum((p_rdp - 0.25) ** 2))


def test_audit_tests_match_statsmodels_on_one_sample_per_input(table, audit):
    """One sample per input, no strata: the margins covariance is Bhapkar's (statsmodels) up to N/(N − 1), the
    preservation variance per group is the binomial's, and the whole family's adjustment is statsmodels' Holm."""
    from audit.stats.clustered import clustered_mean

    first = table[(table["sample"] == 0) & (table["out_ff_race"] != "")]
    paired = pd.crosstab(first["label_race"], first["out_ff_race"]).reindex(index=RACES, columns=RACES, fill_value=0)
    one = AttributeAudit(first, "label_race", "out_ff_race", positive="White", n_boot=50)
    np.testing.assert_array_equal(one.paired_table(), paired.to_numpy())
    d = pd.get_dummies(first["out_ff_race"]).reindex(columns=RACES, fill_value=0).to_numpy(float) - \
        pd.get_dummies(first["label_race"]).reindex(columns=RACES, fill_value=0).to_numpy(float)
    cm = clustered_mean(d)  # unstratified: the Bhapkar (unrestricted Wald) covariance
    n = len(first)
    wald = float(cm.estimate[:-1] @ np.linalg.solve(cm.cov[:-1, :-1], cm.estimate[:-1]))
    bhapkar = SquareTable(paired.to_numpy(), shift_zeros=False).homogeneity(method="bhapkar").statistic
    assert wald == pytest.approx(bhapkar * (n - 1) / n, rel=1e-9)
    tests = {t.kind: t for t in one.tests()}
    margins = tests["margins"]
    np.testing.assert_allclose([c["effect"] for c in margins.components],
                               100 * (paired.sum(axis=0) - paired.sum(axis=1)).to_numpy() / n)
    assert margins.component == "White" and margins.n == n == margins.n_samples
    gap = tests["preservation_gap"]
    kept = (first["label_race"] == first["out_ff_race"]).groupby(first["label_race"]).agg(["mean", "count"])
    pooled = (first["label_race"] == first["out_ff_race"]).mean()
    np.testing.assert_allclose([c["effect"] for c in gap.components], 100 * (kept["mean"] - pooled).to_numpy())
    assert all(t.p_value < 1e-3 for t in one.tests())  # the planted drift towards White is found
    report = one.report_tests()
    np.testing.assert_allclose(report["p_adjusted"], multipletests(report["p_value"], method="holm")[1])
    assert {"mde", "effect", "unit", "kind", "verdict", "ci_low", "ci_high"} <= set(report.columns)
    assert (report["verdict"] == "finding").all()


def test_preservation_gap_uses_the_null_variance_the_pooled_two_proportion_z_test():
    """Two groups, one sample per input, rates 0.45 and 0.55: each group's variance is floored at the pooled rate's
    (score-type), so the gap test is statsmodels' pooled z-test up to the CR1 factor (m − 1)/m of the variances."""
    from statsmodels.stats.proportion import proportions_ztest

    m, kept = 200, {"A": 90, "B": 110}
    data = pd.DataFrame([{"item_id": f"{g}{i}", "sample": 0, "label": g, "out": g if i < kept[g] else other}
                         for g, other in (("A", "B"), ("B", "A")) for i in range(m)])
    gap = AttributeAudit(data, "label", "out", n_boot=20).preservation_test()
    z, p_value = proportions_ztest([90, 110], [m, m])
    assert gap.statistic == pytest.approx(abs(z) * math.sqrt((m - 1) / m), rel=1e-9)
    assert gap.p_value == pytest.approx(p_value, abs=0.01)
    assert [c["effect"] for c in gap.components] == pytest.approx([-5.0, 5.0])


def test_every_test_interval_agrees_with_its_test_at_every_level(audit):
    """Reject at level γ ⇔ the effect's interval at 1 − γ excludes 0 (same estimator, same draws)."""
    for t in audit.tests():
        for gamma in (1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5):
            lows, highs = t.interval_at(1 - gamma)
            excluded = any(lo > 0 or hi < 0 for lo, hi in zip(lows, highs) if np.isfinite(lo))
            assert excluded == (t.p_value < gamma), (t.name, gamma, t.p_value)


def test_ucpr_missing_category_and_column_adapter(table):
    rng = np.random.default_rng(1)
    uninformative = pd.DataFrame({"item_id": np.repeat(RACES, 100), "sample": np.tile(np.arange(100), 4),
                                  "label_race": np.repeat(RACES, 100),
                                  "out_ff_race": rng.choice(RACES, 400, p=[0.15, 0.15, 0.15, 0.55])})
    audit = AttributeAudit.from_run(table, "race", "ff", uninformative=uninformative, missing_output="category",
                                    n_boot=200)
    assert audit.truth == label_column("race") == truth_column("race", "ff")
    assert audit.output == classifier_column("out", "ff", "race") and audit.name == "race/ff"
    assert NO_FACE in audit.categories and audit.transition()[NO_FACE].sum() == (table["out_ff_race"] == "").sum()
    assert all(t.kind != "ucpr" for t in audit.tests())  # no stated reference: descriptive only
    assert any("descriptive" in w for w in audit.warnings())
    stated = AttributeAudit.from_run(table, "race", "ff", uninformative=uninformative, prior=dict.fromkeys(RACES, 1),
                                     n_boot=200)
    ucpr = stated.tests()[-1]
    assert ucpr.kind == "ucpr" and ucpr.n == 400 and ucpr.component == "White" and ucpr.p_value < 1e-3
    assert ucpr.effect == pytest.approx(100 * ((uninformative["out_ff_race"] == "White").mean() - 0.25))
    assert "UCPR" in set(stated.divergences()["target"])
    assert audit.ucpr.table["ci_low"].lt(audit.ucpr.table["share"]).all()
    probs = pd.DataFrame(columns=["out_ff_race_p_White", "out_ff_race_p_Black", "out_ff_race"])
    assert probability_columns(probs, "out", "ff", "race") == {"White": "out_ff_race_p_White",
                                                               "Black": "out_ff_race_p_Black"}
    with pytest.raises(KeyError):
        AttributeAudit(table, "label_race", "out_missing")
    mixed = pd.concat([table.assign(input_kind="face"), uninformative.assign(input_kind="ucpr")], ignore_index=True)
    faces, ucpr_rows = split_inputs(mixed)
    assert len(faces) == len(table) and len(ucpr_rows) == 400
    assert split_inputs(table)[0] is table and split_inputs(table)[1] is None


def test_noise_floor_and_confusion_correction(table):
    rng = np.random.default_rng(2)
    oracle = table[table["sample"] == 0].copy()
    oracle["out_ff_race"] = np.where(rng.uniform(size=len(oracle)) < 0.9, oracle["label_race"], "White")
    run = AttributeAudit(table, "label_race", "out_ff_race", n_boot=300)
    floor = AttributeAudit(oracle, "label_race", "out_ff_race", n_boot=300)
    result = noise_floor(run, floor).set_index("label_race")
    flip = 1 - run.frame.value("preservation")
    oracle_flip = (oracle["label_race"] != oracle["out_ff_race"]).groupby(oracle["label_race"]).mean()
    np.testing.assert_allclose(result["excess"], flip - oracle_flip)
    assert result["paired"].all()  # same inputs, strata and seed: replicates are paired
    confusion = np.array([[0.9, 0.05, 0.0, 0.05], [0.0, 0.8, 0.1, 0.1], [0.05, 0.05, 0.85, 0.05], [0, 0, 0, 1.0]])
    truth = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(corrected_shares(confusion.T @ truth, confusion), truth)
    assert project_to_simplex(np.array([0.6, 0.6, -0.1])) == pytest.approx([0.5, 0.5, 0.0])
    v = rng.normal(size=6)
    x = project_to_simplex(v)
    for _ in range(200):  # the projection is the closest simplex point
        y = rng.dirichlet(np.ones(6))
        assert np.sum((v - x) ** 2) <= np.sum((v - y) ** 2) + 1e-12


def test_paired_shift_and_upsampler_metrics(table):
    shift = PairedShift(table, "delta_ita", "label_race", unit="°", n_boot=300)
    means = shift.table.query("metric == 'mean'").set_index("label_race")["value"]
    np.testing.assert_allclose(means, table.groupby("label_race")["delta_ita"].mean())
    per_input = table.groupby("item_id").agg(d=("delta_ita", "mean"), g=("label_race", "first"))
    tests = {t.name: t for t in shift.tests()}
    black = tests["delta_ita: shift ≠ 0, Black"]
    ref = stats.ttest_1samp(per_input.loc[per_input["g"] == "Black", "d"], 0.0)  # equal samples per input
    assert black.p_value == pytest.approx(ref.pvalue) and black.n == 60 and black.unit == "°"
    assert black.n_samples == 180 and black.kind == "shift" and black.df == 59
    white = tests["delta_ita: shift ≠ 0, White"]
    row = shift.table.query("metric == 'mean' and label_race == 'White'").iloc[0]
    assert (white.ci_low, white.ci_high) == pytest.approx((row["ci_low"], row["ci_high"]))  # same interval
    assert white.effect == pytest.approx(per_input.loc[per_input["g"] == "White", "d"].mean())
    pairs = table.assign(before=0.0, after=table["delta_ita"])
    assert PairedShift(pairs, ("before", "after"), "label_race", n_boot=50).table["value"].iloc[0] == pytest.approx(
        means.iloc[0])
    assert PairedShift(table, "delta_ita", test_zero=False, n_boot=50).tests() == []
    ups = upsampler_metrics(table, "label_race", n_boot=300).by_group.set_index(["metric", "label_race"])
    np.testing.assert_allclose(ups.loc["success_rate", "value"], table.groupby("label_race")["ups_success"].mean())
    assert set(ups.index.get_level_values(0)) == {"success_rate", "lr_error_mean", "lr_error_median"}
    family = report_tests(shift, AttributeAudit(table, "label_race", "out_ff_race", n_boot=50))
    assert family["family_size"].iloc[0] == len(family) == 5 + 3


# ---------------------------------------------------------------- simulations -----------------------------------------
def test_end_to_end_false_positive_rate_without_bias():
    """No bias: outputs flip to a uniformly random race with the same probability for every input (so margins stay
    equal, flips are symmetric and preservation is equal). Each test of the audit (every sample, clustered) rejects
    at ≤ α + 3 SE over 300 run tables."""
    rejections = np.zeros(3)
    for seed in range(300):
        data = run_table(n_per_race=50, samples=2, flip=0.0, seed=seed, no_face=0.0)
        rng = np.random.default_rng(seed + 1000)
        noisy = rng.uniform(size=len(data)) < 0.25
        data.loc[noisy, "out_ff_race"] = rng.choice(RACES, noisy.sum())
        audit = AttributeAudit(data, "label_race", "out_ff_race", n_boot=1, seed=seed)
        rejections += [t.p_value < 0.05 for t in audit.tests()]
    fpr = rejections / 300
    assert (fpr < 0.05 + 3 * math.sqrt(0.05 * 0.95 / 300)).all(), fpr


def test_cluster_bootstrap_coverage_of_preservation_with_heterogeneous_inputs():
    """Known truth: each input has its own preservation probability ~ Beta(2, 1) (mean 2/3) and 4 samples, so
    samples of one input are correlated. Over 200 run tables the 95 % interval of the per-group preservation covers
    2/3 in [0.90, 0.985] of cases (tolerance: 3 SE ≈ 0.046 plus the percentile method's bias)."""
    covered, trials = 0, 200
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        p = rng.beta(2, 1, 120)
        keep = rng.uniform(size=(120, 4)) < p[:, None]
        truth = np.repeat(np.repeat(["Black", "White"], 60), 4)
        data = pd.DataFrame({"item_id": np.repeat(np.arange(120), 4), "sample": np.tile(np.arange(4), 120),
                             "truth": truth, "out": np.where(keep.ravel(), truth, "Other")})
        frame = AttributeAudit(data, "truth", "out", n_boot=400, seed=seed).rdp().set_index("truth")
        covered += frame.loc["Black", "ci_low"] <= 2 / 3 <= frame.loc["Black", "ci_high"]
    assert 0.90 <= covered / trials <= 0.985, covered / trials


def test_a_continuous_column_of_zeros_is_a_mean_not_a_rate():
    """ΔITA of an oracle run is exactly 0 everywhere: a mean with no spread (its interval is the point, marked as not
    estimated and printed as such), and its test is not testable rather than "nothing detected"."""
    from reports.formatting import ci

    data = pd.DataFrame({"shift": np.zeros(40), "g": ["a", "b"] * 20, "item_id": np.arange(40)})
    row = MetricFrame(data, {"shift": Metric("shift")}, "g", "item_id", n_boot=200).by_group.iloc[0]
    assert (row["value"], row["ci_low"], row["ci_high"]) == (0.0, 0.0, 0.0)
    assert row["ci_method"] == "none (no variation)" and ci(row["ci_low"], row["ci_high"]) == "not estimable"
    tests = PairedShift(data, "shift", "g", n_boot=50).tests()
    assert all(not t.testable and "no variance" in t.reason for t in tests)
    with pytest.raises(ValueError):
        _ = MetricFrame(data.assign(shift=0.5), {"shift": Metric("shift", "rate")}, "g", "item_id").by_group


def test_a_constant_rate_with_several_samples_per_input_keeps_a_real_interval():
    """0 of 12 inputs (2 samples each): the bootstrap collapses to [0, 0]; Clopper–Pearson at n = 12 inputs does
    not."""
    from statsmodels.stats.proportion import proportion_confint

    data = pd.DataFrame({"ok": np.zeros(24), "g": "a", "item_id": np.repeat(np.arange(12), 2)})
    row = MetricFrame(data, {"ok": Metric("ok", "rate")}, "g", "item_id", n_boot=200).by_group.iloc[0]
    low, high = proportion_confint(0, 12, method="beta")
    assert row["value"] == 0 and row["ci_low"] == pytest.approx(low, abs=1e-12)
    assert row["ci_high"] == pytest.approx(high, rel=1e-9) and row["ci_high"] > 0.2
