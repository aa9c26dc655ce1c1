"""Between-group intervals of medians and means (max − min and min / max over groups): Price–Bonett standard errors
against the documented results of statpsych (Bonett's R package) and a float64 reference, the range interval
against scipy's studentized range, clustered copies, "none (too few inputs)", a known-answer coverage simulation in
small clustered groups, the report's printed interval; the declared age range and its minimum-detectable-effect
wording."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.core import schema
from audit.core.vocabulary import AGE_YEARS
from audit.metrics.frame import Metric, MetricFrame
from audit.stats.between import range_interval, ratio_interval
from audit.stats.intervals import MIN_MEDIAN_SE_INPUTS, median_se
from reports.analysis import Settings, build_report
from reports.formatting import ci
from reports.run_data import Run

# statpsych 1.x documentation, ci.median and ci.median2 examples (y, expected SE; y1, y2, SE, LL, UL)
CI_MEDIAN = ([30.2, 20.4, 15.1, 10.2, 10.5, 60.8, 20.8, 25.0, 20.7, 30.9, 10.8, 5.1, 50.9, 40.0, 20.9, 10.8, 0,
              20.5, 50.8], 4.292277)
CI_MEDIAN2 = (([32, 39, 26, 35, 43, 27, 40, 37, 34, 29], [36, 44, 47, 42, 49, 39, 46, 31, 33, 48],
               4.316291, -16.95977, -0.04022524),
              ([70, 394, 43, 95, 62, 128, 2, 203, 81, 436, 85, 35, 156, 1, 3, 27, 63, 181, 184, 18],
               [102, 120, 78, 78, 417, 124, 86, 171, 176, 129, 230, 194, 100, 157, 306, 411, 164, 103, 193, 312],
               37.11502, -157.7441, -12.25589))


def test_price_bonett_standard_errors_and_two_group_interval_match_statpsych():
    """One row per input: the standard error of a median and the 95 % interval of a difference of two medians are
    statpsych's documented values; the range interval of two groups is that interval folded to |m1 − m2|."""
    assert median_se(CI_MEDIAN[0]) == pytest.approx(CI_MEDIAN[1], abs=1e-6)
    for y1, y2, se, ll, ul in CI_MEDIAN2:
        s1, s2 = median_se(y1), median_se(y2)
        assert math.hypot(s1, s2) == pytest.approx(se, abs=1e-5)
        low, high = range_interval([np.median(y1), np.median(y2)], [s1, s2])
        assert (low, high) == pytest.approx((-ul, -ll), abs=1e-5)  # m1 < m2: |m1 − m2| ∈ [−UL, −LL]


@pytest.mark.parametrize("n", [6, 7, 10, 17, 30, 61])
def test_median_se_with_one_row_per_input_equals_a_float64_reference(n):
    """Reference written here from the paper's recipe: c = max(1, round(n/2 − √n)) (R rounds halves to even),
    se = (x_(n−c+1) − x_(c)) / (2 z) with z = Φ⁻¹(1 − P[Bin(n, ½) ≤ c − 1]); values with ties."""
    rng = np.random.default_rng(n)
    for _ in range(5):
        x = np.round(rng.gamma(2.0, 3.0, n), 0)
        c = max(1, round(n / 2 - math.sqrt(n)))
        tail = sum(math.comb(n, i) for i in range(c)) / 2.0**n
        s = sorted(x.tolist())
        ref = (s[n - c] - s[c - 1]) / (2 * stats.norm.ppf(1 - tail))
        assert median_se(x, np.arange(n)) == pytest.approx(ref, rel=1e-12, abs=1e-12)
    assert math.isnan(median_se(np.arange(MIN_MEDIAN_SE_INPUTS - 1.0)))


def test_median_se_of_identical_samples_does_not_shrink_with_their_number():
    """m identical samples per input carry the information of one input: the clustered standard error stays
    about that of the inputs, where rows taken as independent shrink it."""
    x = np.random.default_rng(4).normal(size=40)
    one = median_se(x)
    for m in (2, 4, 8):
        clustered = median_se(np.repeat(x, m), np.repeat(np.arange(40), m))
        assert 0.95 * one <= clustered <= 1.35 * one, (m, clustered, one)
    assert median_se(np.repeat(x, 4)) < 0.7 * one


@pytest.mark.parametrize("groups,df", [(3, math.inf), (5, math.inf), (4, 12.0)])
def test_range_interval_of_equal_standard_errors_is_the_studentized_range(groups, df):
    """With k groups of equal se s the simultaneous pairwise intervals are Tukey's: max − min ± q·s with q the
    studentized range quantile (scipy), so the interval is [max(0, R − q·s), R + q·s] (Monte-Carlo critical value:
    20,000 draws)."""
    estimates = np.linspace(0.0, 3.0, groups)
    q = stats.studentized_range.ppf(0.95, groups, 1e6 if math.isinf(df) else df)
    low, high = range_interval(estimates, np.full(groups, 0.5), 0.95, df)
    assert high == pytest.approx(3.0 + q * 0.5, rel=0.02)
    assert low == pytest.approx(max(0.0, 3.0 - q * 0.5), rel=0.05)
    ratio = ratio_interval(np.log([2.0, 4.0]), [0.1, 0.1])
    folded = range_interval(np.log([2.0, 4.0]), [0.1, 0.1])
    assert ratio == pytest.approx((math.exp(-folded[1]), math.exp(-folded[0])))
    assert ratio[0] < 0.5 < ratio[1]


@pytest.mark.parametrize("x1,n1,x2,n2", [(18, 30, 9, 31), (29, 30, 30, 30), (0, 25, 3, 25), (40, 100, 47, 100)])
def test_rate_difference_of_two_groups_is_mover_of_two_clopper_pearson_intervals(x1, n1, x2, n2):
    """Independent reference: the MOVER interval of p1 − p2 (Newcombe 1998's recipe, Zou & Donner 2008) built by hand
    from statsmodels' two Clopper–Pearson intervals (``method="beta"``), folded to |p1 − p2|; one row per input, so
    the effective sizes are the counts, and two groups, so the critical value is z at 97.5 %."""
    from statsmodels.stats.proportion import proportion_confint

    values = {"a": np.r_[np.ones(x1), np.zeros(n1 - x1)], "b": np.r_[np.ones(x2), np.zeros(n2 - x2)]}
    row = MetricFrame(_table(values, 1), {"rate": Metric("y", "rate")}, "group", "item", n_boot=20).difference()
    (l1, u1), (l2, u2) = (proportion_confint(x, n, method="beta") for x, n in ((x1, n1), (x2, n2)))
    p1, p2 = x1 / n1, x2 / n2
    low = p1 - p2 - math.hypot(p1 - l1, u2 - p2)
    high = p1 - p2 + math.hypot(u1 - p1, p2 - l2)
    expected = (max(0.0, low, -high), max(abs(low), abs(high)))
    assert (row.loc["rate", "ci_low"], row.loc["rate", "ci_high"]) == pytest.approx(expected, abs=1e-9)
    assert row.loc["rate", "ci_method"].startswith("Clopper–Pearson (effective n, Korn–Graubard df), MOVER")


def _table(groups: dict[str, np.ndarray], samples: int) -> pd.DataFrame:
    rows = [(g, f"{g}-{i // samples}", v) for g, values in groups.items() for i, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["group", "item", "y"])


def test_frame_differences_none_below_the_stated_size_and_ratios_need_positive_values():
    """A group of 3 inputs × 3 correlated samples has under 6 effective inputs: no difference interval ("none (too
    few inputs)"), where 30 inputs per group give one that contains the estimate; a ratio of medians needs every
    value positive; medians have no bootstrap replicates."""
    rng = np.random.default_rng(8)

    def draws(inputs: int, centre: float) -> np.ndarray:
        return np.repeat(centre + rng.normal(0, 4, inputs), 3) + rng.normal(0, 3, 3 * inputs)

    few = MetricFrame(_table({"a": draws(3, 0.0), "b": draws(30, 0.0)}, 3), {"median": Metric("y", "median")},
                      "group", "item", n_boot=20)
    row = few.difference().loc["median"]
    assert row["ci_method"] == "none (too few inputs)" and math.isnan(row["ci_low"])
    data = _table({"a": draws(30, 10.0), "b": draws(30, 14.0), "c": draws(30, 0.0)}, 3)
    frame = MetricFrame(data, {"median": Metric("y", "median"), "mean": Metric("y")}, "group", "item", n_boot=20)
    for row in frame.difference().to_dict("records"):
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and "simultaneous over pairs" in row["ci_method"]
    assert frame.ratio().loc["median", "ci_method"] == "none (a value is not positive)"  # some values are < 0
    positive = MetricFrame(data.assign(y=np.exp(data["y"] / 10)), {"median": Metric("y", "median")}, "group",
                           "item", n_boot=20)
    ratio = positive.ratio().loc["median"]
    assert ratio["ci_low"] <= ratio["value"] <= ratio["ci_high"] <= 1.0
    with pytest.raises(ValueError, match="no bootstrap replicates"):
        frame.replicates("median")


def test_between_group_intervals_cover_in_small_clustered_groups():
    """Known answer (benchmarks/validity.py's between-group generator, 150 tables per design): max − min of the
    group medians, means and rates, and min / max of the medians, in skewed, tied and normal clustered data (3
    samples per input), covered in ≥ 0.90 of the tables that give an interval (goal 0.93; 3 Monte-Carlo SE ≈ 0.053
    at 0.95)."""
    from benchmarks.validity import SmallGroups, run_small_groups

    designs = (SmallGroups("ΔITA-like (normal)", 2, 10), SmallGroups("distance-like (lognormal, skewed)", 4, 30,
                                                                     planted=True),
               SmallGroups("age-like (whole years, tied)", 2, 30, planted=True))
    for i, design in enumerate(designs):
        result = run_small_groups(design, 150, seed=300 + i, n_boot=20)
        for key, (coverage, count, _, method, _) in result["coverage"].items():
            assert count >= 110 and coverage >= 0.90, (design.name, key, coverage, count, method)


def _age_run(shifts: list[float]) -> Run:
    """A run table with one age classifier's readings of 4 inputs (2 samples each) and no other quantity."""
    rows = []
    for i, d in enumerate(shifts):
        for k in range(2):
            before = 60.0
            rows.append({schema.ITEM: f"img{i}", schema.SAMPLE: k, schema.INPUT_KIND: "face", schema.ERROR: "",
                         schema.label_column("race"): "c0" if i % 2 else "c1",
                         schema.value_column("in", "ages", "age_years"): before,
                         schema.value_column("out", "ages", "age_years"): before + d + (k - 0.5)})
    meta = {"run_id": "age-range", "config": {"group_by": ["race"], "samples": 2},
            "dataset": {"name": "age range test", "labels": {"race": {"values": ["c0", "c1"], "source": "annotated"}}},
            "classifiers": [{"name": "ages", "attributes": {}}]}
    return Run(Path("/nonexistent/age-range"), meta, pd.DataFrame(rows))


def test_age_shift_has_a_declared_range_and_impossible_mdes_are_worded_as_none():
    """Ages lie in 0–116 years (UTKFace's label span, containing every classifier's readings), so an age shift
    lies within ±116 years: its tests carry that bound, a minimum detectable effect beyond it is worded "no shift
    within the possible range" (never "… years or more"), and its intervals are clipped to it."""
    assert AGE_YEARS == (0.0, 116.0)
    report = build_report(_age_run([-55.0, 50.0, 45.0, -52.0]), Settings(n_boot=20))
    tests = [t for t in report["tests"] if t["kind"] == "shift"]
    assert tests and all(t["effect_bound"] == 116 for t in tests)
    beyond = [t for t in tests if t["verdict"] == "nothing detected" and t["mde"] > 116]
    assert beyond
    text = {f["test"]: f["text"] for f in report["findings"]["not_found"]}
    for t in beyond:
        assert "No shift within the possible range (up to 116 years in any one " in text[t["id"]]
        assert "years or more" not in text[t["id"]]
    (shift,) = report["shifts"]
    assert [float(b) for b in shift["bounds"]] == [-116.0, 116.0]
    for r in shift["table"] + [shift["overall"][0]]:
        assert r["ci_low"] is None or -116.0 <= r["ci_low"] <= r["ci_high"] <= 116.0
    for r in shift["differences"]:
        assert r["ci_low"] is None or 0.0 <= r["ci_low"] <= r["ci_high"] <= 232.0


def test_report_prints_the_frames_between_group_interval():
    """The identity-distance section of a report (a distance: compared between groups, no test beside it) prints
    each difference row's interval exactly as the metric frame computed it, with its method."""
    from reports.html import render
    from reports.report import report_figures

    rng = np.random.default_rng(3)
    rows = []
    for i in range(60):
        effect = rng.gamma(4.0, 0.08) * (1.4 if i % 2 else 1.0)
        for k in range(2):
            rows.append({schema.ITEM: f"img{i}", schema.SAMPLE: k, schema.INPUT_KIND: "face", schema.ERROR: "",
                         schema.label_column("race"): f"c{i % 2}",
                         schema.IDENTITY_DISTANCE: effect * math.exp(rng.normal(0, 0.2))})
    meta = {"run_id": "distance", "config": {"group_by": ["race"], "samples": 2},
            "dataset": {"name": "distance test", "labels": {"race": {"values": ["c0", "c1"], "source": "annotated"}}},
            "classifiers": []}
    run = Run(Path("/nonexistent/distance"), meta, pd.DataFrame(rows))
    report = build_report(run, Settings(n_boot=20))
    (shift,) = report["shifts"]
    frame = MetricFrame(run.faces.assign(_shift=run.faces[schema.IDENTITY_DISTANCE]),
                        {"mean": Metric("_shift", bounds=(0.0, math.inf)),
                         "median": Metric("_shift", "median", (0.0, math.inf))},
                        [schema.label_column("race")], schema.ITEM, n_boot=20).difference()
    html = render("report.html.j2", r=report, figures=report_figures(report, run.root))
    for r in shift["differences"]:
        expected = frame.loc[r["metric"]]
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((expected["ci_low"], expected["ci_high"]))
        assert "simultaneous over pairs" in r["ci_method"]
        assert f"<td>{ci(r['ci_low'], r['ci_high'])}</td>" in html and r["ci_method"] in html
