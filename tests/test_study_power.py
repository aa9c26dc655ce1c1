"""The study's primary family and its power: Holm-adjusted trend intervals (agreement with the adjusted test,
family-wise error), the slope-power formula against simulation, the split of the scatter of generators into
sampling noise and between-generator variation, and the power panel's expected output slope."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from audit.metrics.study import StudyRun, sampling_variance
from audit.stats.multitest import report_tests
from audit.stats.trend import slope_power

sm = pytest.importorskip("statsmodels.api")
multitests = pytest.importorskip("statsmodels.stats.multitest")

DOSES = np.repeat([0.15, 0.5, 0.85], 3)  # 3 compositions × 3 seeds


def _ols(doses: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and their standard errors of each row of ``y`` (replicates × generators) on ``doses``."""
    x = doses - doses.mean()
    slope = (y - y.mean(axis=-1, keepdims=True)) @ x / (x @ x)
    resid = y - y.mean(axis=-1, keepdims=True) - slope[..., None] * x
    return slope, np.sqrt((resid ** 2).sum(axis=-1) / (len(doses) - 2) / (x @ x))


def _slopes_tests(rng: np.random.Generator, slopes: list[float], sd: float, doses: np.ndarray) -> list:
    from scipy import stats

    from audit.stats.estimate import t_test_result

    y = np.array(slopes)[:, None] * doses + rng.normal(0, sd, (len(slopes), len(doses)))
    df = len(doses) - 2
    return [t_test_result(f"t{i}", b, se, df, 2 * stats.t.sf(abs(b / se), df), len(doses), math.nan, "OLS", "",
                          "°", 0.1, 0.95, "trend", "slope") for i, (b, se) in enumerate(zip(*_ols(doses, y)))]


def test_holm_adjusted_trend_intervals_agree_with_the_tests_and_hold_the_family_error():
    """Four trend tests per family (as the demo's primary family): the adjusted interval excludes 0 exactly when
    Holm rejects, adjusted p-values equal statsmodels' Holm, and under the global null the share of families with
    any finding stays within α (+ Monte-Carlo error: 600 families, SE 0.009)."""
    rng = np.random.default_rng(11)
    any_finding, planted_hits = 0, 0
    for rep in range(600):
        planted = rep % 2 == 1
        slopes = [0.0, 0.0, 0.0, 60.0 if planted else 0.0]  # planted: 6° per +10 pp, residual SD 8°
        table = report_tests(_slopes_tests(rng, slopes, 8.0, DOSES), method="holm", alpha=0.05)
        if rep < 20:  # statsmodels' multipletests runs gc.collect() on every call: a sample of families suffices
            reference = multitests.multipletests(table["p_value"], alpha=0.05, method="holm")[1]
            assert np.allclose(table["p_adjusted"], reference)
        excludes = (table["adjusted_ci_low"] > 0) | (table["adjusted_ci_high"] < 0)
        assert (excludes == table["reject"]).all()
        assert (table["adjusted_ci_low"] <= table["ci_low"] + 1e-12).all()  # never narrower than unadjusted
        if planted:
            planted_hits += bool(table["reject"].iloc[3])
        else:
            any_finding += bool(table["reject"].any())
    assert any_finding / 300 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 300)
    assert planted_hits / 300 > 0.5  # the planted slope is found often (power ≈ 0.7 at α/4 with 7 df)


@pytest.mark.parametrize("doses", [DOSES, np.concatenate([DOSES, np.repeat([0.15, 0.85], 3)])])
def test_slope_power_matches_simulated_power(doses):
    """The noncentral-t power of the between-generator slope test at level α/m equals the share of simulated
    designs that reject (4,000 replicates: SE ≤ 0.008), and grows when generators are added at the ends."""
    rng = np.random.default_rng(5)
    effect, sd, alpha, reps = 30.0, 9.0, 0.0125, 4000
    from scipy import stats

    slope, se = _ols(doses, effect * doses + rng.normal(0, sd, (reps, len(doses))))

    simulated = np.mean(2 * stats.t.sf(np.abs(slope / se), len(doses) - 2) < alpha)
    predicted = slope_power(effect, sd ** 2, doses, alpha)
    assert predicted == pytest.approx(simulated, abs=4 * math.sqrt(0.25 / reps))
    assert slope_power(effect, sd ** 2, np.concatenate([doses, [0.15, 0.85]]), alpha) > predicted
    assert math.isnan(slope_power(effect, 0.0, doses, alpha)) and math.isnan(slope_power(effect, 1.0, [0.5] * 4))


def _ucpr_values(rng: np.random.Generator, faces: int, seeds: int, face_effects: np.ndarray, shift: float,
                 within_sd: float) -> pd.Series:
    keys = [f"face{f}#{s}" for f in range(faces) for s in range(seeds)]
    values = np.repeat(face_effects, seeds) + shift + rng.normal(0, within_sd, faces * seeds)
    return pd.Series(values, index=keys)


def test_sampling_variance_is_the_pooled_within_input_variance_over_n():
    """Against statsmodels: the residual mean square of an OLS on input dummies (pooled within-input variance),
    divided by the number of units; one unit per input falls back to var/n."""
    rng = np.random.default_rng(2)
    values = _ucpr_values(rng, 6, 12, rng.normal(0, 20, 6), 0.0, 15.0)
    faces = [k.split("#")[0] for k in values.index]
    fit = sm.OLS(values.to_numpy(), pd.get_dummies(pd.Series(faces)).astype(float).to_numpy()).fit()
    assert sampling_variance(values) == pytest.approx(fit.mse_resid / len(values), rel=1e-10)
    plain = pd.Series(rng.normal(0, 3, 10), index=[f"i{k}" for k in range(10)])
    assert sampling_variance(plain) == pytest.approx(plain.var(ddof=1) / 10, rel=1e-12)
    assert math.isnan(sampling_variance(plain.iloc[:1])) and math.isnan(sampling_variance(None))


def test_scatter_of_generators_splits_into_sampling_and_between_generator_variance():
    """Simulation with a known answer: generators whose true means scatter with SD 6° around a line, each run on
    the same 6 inputs (large shared input effects) × 12 seeds with within-input SD 25°. Averaged over 300 studies,
    the mean sampling variance ≈ 25²/72 and the residual variance − sampling ≈ 6² (within Monte-Carlo error)."""
    rng = np.random.default_rng(9)
    faces, seeds, between_sd, within_sd = 6, 12, 6.0, 25.0
    sampling, between = [], []
    for _ in range(300):
        face_effects = rng.normal(0, 20, faces)  # shared by every generator: not noise of the slope
        runs = [_ucpr_values(rng, faces, seeds, face_effects, 30 * d + rng.normal(0, between_sd), within_sd)
                for d in DOSES]
        s = float(np.mean([sampling_variance(v) for v in runs]))
        _, se = _ols(DOSES, np.array([v.mean() for v in runs]))
        sampling.append(s)
        between.append(float(se) ** 2 * ((DOSES - DOSES.mean()) ** 2).sum() - s)  # residual variance − sampling
    assert np.mean(sampling) == pytest.approx(within_sd ** 2 / (faces * seeds), rel=0.03)
    se = np.std(between, ddof=1) / math.sqrt(len(between))
    assert abs(np.mean(between) - between_sd ** 2) < 4 * se


def _run(name: str, dose: float, design: str, prior_ita: float, aligned: float | None = None) -> StudyRun:
    return StudyRun(name, pd.DataFrame(), None, "pulse", name, 16, 32, "x", dose, design,
                    info={"prior_ita": {"detector": prior_ita, "aligned": aligned}})


def _panel_trends(comp: list[StudyRun], shift: list[StudyRun], doses: list[float]) -> list[dict]:
    """Primary composition and shift trends at ×16 over ``comp`` and ``shift`` (shift output slope +9° per SD)."""
    test = {"verdict": "nothing detected", "family_size": 2, "effect": 2.0, "ci_low": 6.0, "ci_high": 12.0}
    return [
        {"role": "primary", "design": "composition", "factor": 16, "condition": "×16", "metric": "ucpr_ita_aligned",
         "runs": [r.name for r in comp], "doses": doses, "n_units": 6, "residual_sd": 5.0, "per": "per +10 pp",
         "display_scale": 0.1, "alpha_family": 0.025, "mde_family": 4.0, "test": test,
         "sampling_variances": [4.0] * 6},
        {"role": "primary", "design": "shift", "factor": 16, "condition": "×16", "metric": "ucpr_ita_aligned",
         "runs": [r.name for r in shift], "doses": [-2.0, 0.0, 2.0], "n_units": 72, "residual_sd": 11.0,
         "per": "per SD", "display_scale": 1.0, "alpha_family": 0.025, "mde_family": 4.0, "slope": 9.0,
         "test": {**test, "effect": 9.0, "verdict": "finding"}, "sampling_variances": [1.0] * 3}]


def test_power_panel_sizes_the_composition_design_by_the_expected_output_slope():
    """The expected output slope is the generators' prior slope (cards) × the attenuation the shift design measured
    (its output slope / its prior slope); the power at α/m is the slope-power formula at the observed residual SD,
    and the sizing table adds generators at the ends of the dose range."""
    from reports.analysis import Settings
    from reports.study import power_panels

    doses = [0.15, 0.15, 0.5, 0.5, 0.85, 0.85]
    comp = [_run(f"c{i}", d, "composition", -60 + 100 * d) for i, d in enumerate(doses)]  # prior: +10° per 10 pp
    shift = [_run(f"s{a}", a, "shift", 30.0 * a) for a in (-2.0, 0.0, 2.0)]  # prior: +30° per SD
    panels = {p["design"]: p for p in power_panels([*comp, *shift], _panel_trends(comp, shift, doses), Settings())}
    panel = panels["composition"]
    assert panel["prior_instrument"] == "detector"  # no card has the aligned-frame measure
    assert panel["prior_slope"] == pytest.approx(10.0) and panel["attenuation"]["ratio"] == pytest.approx(0.3)
    assert panel["expected"] == pytest.approx(3.0) and panel["expected_low"] == pytest.approx(2.0)
    assert panel["power_expected"] == pytest.approx(slope_power(30.0, 25.0, doses, 0.025))
    assert panel["sampling_sd"] == pytest.approx(2.0) and panel["between_sd"] == pytest.approx(math.sqrt(21.0))
    first = [row["power"] for row in panel["sizing"] if row["samples_multiplier"] == 1]
    assert first[0] == pytest.approx(panel["power_expected"]) and np.all(np.diff(first) > 0)
    more_samples = [row["power"] for row in panel["sizing"] if row["added_at_ends"] == 0]
    assert np.all(np.diff(more_samples) > 0)  # less sampling noise helps, but only the sampling part
    assert more_samples[-1] < slope_power(30.0, 21.0, doses, 0.025) + 1e-12
    enough = [r["generators"] for r in panel["sizing"] if r["samples_multiplier"] == 1 and r["power"] >= 0.8]
    assert panel["generators_needed"] == enough[0]
    assert panels["shift"]["expected"] is None and panels["shift"]["prior_slope"] == pytest.approx(30.0)


def test_power_panel_takes_the_prior_from_the_aligned_frame_only_when_every_generator_has_it():
    """Prior slopes (composition and shift alike) come from the cards' aligned-frame sample ITA, the instrument the
    outputs are read with, when every generator of both trends has it; the detector-based slope is listed beside it.
    One generator without it sends both back to the detector-based measure, so the attenuation never divides slopes
    of two instruments."""
    from reports.analysis import Settings
    from reports.study import power_panels

    doses = [0.15, 0.15, 0.5, 0.5, 0.85, 0.85]
    comp = [_run(f"c{i}", d, "composition", -60 + 100 * d, -90 + 150 * d) for i, d in enumerate(doses)]
    shift = [_run(f"s{a}", a, "shift", 30.0 * a, 36.0 * a) for a in (-2.0, 0.0, 2.0)]
    panels = {p["design"]: p for p in power_panels([*comp, *shift], _panel_trends(comp, shift, doses), Settings())}
    panel = panels["composition"]
    assert panel["prior_instrument"] == "aligned" and panel["prior_slope"] == pytest.approx(15.0)
    assert panel["prior_slopes"] == pytest.approx({"aligned": 15.0, "detector": 10.0})
    assert panel["attenuation"]["ratio"] == pytest.approx(9.0 / 36.0)
    assert panel["expected"] == pytest.approx(15.0 * 9.0 / 36.0)
    assert panels["shift"]["prior_slope"] == pytest.approx(36.0)

    comp[0] = _run("c0", 0.15, "composition", -45.0)  # this card has only the detector-based measure
    panels = {p["design"]: p for p in power_panels([*comp, *shift], _panel_trends(comp, shift, doses), Settings())}
    panel = panels["composition"]
    assert panel["prior_instrument"] == "detector" and panel["prior_slope"] == pytest.approx(10.0)
    assert panel["attenuation"]["ratio"] == pytest.approx(0.3) and panels["shift"]["prior_slope"] == pytest.approx(30.0)


def _shift_runs(items: list[str], sampling: str, factor: int, seeds: int = 0) -> list[StudyRun]:
    """Three prior-shift runs (alpha −2, 0, +2) on ``items``: aligned-frame ΔITA for every input, detector-based ΔITA
    missing for the last one (its face not detected, as for the demo's darkest input), and with ``seeds`` > 0 that
    many outputs of each of 6 average faces (uninformative units)."""
    from audit.core.schema import DELTA_ITA, DELTA_ITA_ALIGNED
    from audit.metrics.columns import ITEM, SAMPLE, value_column

    rng = np.random.default_rng(factor)
    runs = []
    for alpha in (-2.0, 0.0, 2.0):
        aligned = rng.normal(0.5 * alpha, 1.0, len(items))
        faces = pd.DataFrame({ITEM: items, SAMPLE: 0, DELTA_ITA_ALIGNED: aligned,
                              DELTA_ITA: np.where(np.arange(len(items)) == len(items) - 1, np.nan, aligned)})
        ucpr = None
        if seeds:
            ucpr = pd.DataFrame({ITEM: np.repeat([f"average {g}" for g in range(6)], seeds),
                                 SAMPLE: np.tile(np.arange(seeds), 6)})
            ucpr[value_column("out", "skin-tone-aligned", "ita")] = rng.normal(5 * alpha, 3.0, len(ucpr))
        runs.append(StudyRun(f"alpha{alpha:+g}-x{factor}", faces, ucpr, "pulse", f"alpha{alpha:+g}", factor, 32,
                             '{"dataset": "demo"}', alpha, "shift", info={"sampling": sampling}))
    return runs


@pytest.mark.parametrize("per_group", [1, 2])
def test_shift_design_units_are_every_input_its_runs_searched(per_group):
    """The shift design's units are the inputs (or average face × seed) that all its runs searched, none dropped by
    the aligned-frame instrument: with the demo's sampling (1 input per skin-tone group, 6 groups) the ×4 test has
    6 units, 12 with 2 per group; the detector-based ΔITA loses the input without a detected face, and the page says
    which. ×16: 6 average faces × 12 seeds = 72 units."""
    from audit.facesets import load_faceset
    from audit.run.sampling import stratified_sample
    from reports.analysis import Settings
    from reports.study import build_study

    sample = stratified_sample(load_faceset("demo"), ("skin_tone",), per_group, 0)
    items, sampling = [item.item_id for item in sample.items], sample.summary()[0]
    assert len(items) == 6 * per_group and sampling.startswith(f"{6 * per_group} items: {per_group} per group")
    runs = _shift_runs(items, sampling, 4) + _shift_runs(items, sampling, 16, seeds=12)
    study = build_study(runs, Settings(n_boot=200), baseline=runs[0].name)
    trends = {(t["factor"], t["metric"]): t for t in study["trends"]}
    x4, x16 = trends[4, "delta_ita_aligned"], trends[16, "ucpr_ita_aligned"]
    assert x4["role"] == x16["role"] == "primary"
    assert x4["n_units"] == x4["units_searched"] == 6 * per_group
    assert f"{6 * per_group} units = all {6 * per_group} inputs every run searched ({sampling})" in x4["units_note"]
    detected = trends[4, "delta_ita"]
    assert detected["n_units"] == 6 * per_group - 1 and detected["units_searched"] == 6 * per_group
    assert f"{6 * per_group - 1} (with a value) of the {6 * per_group} inputs" in detected["units_note"]
    assert x16["n_units"] == x16["units_searched"] == 72
    assert ("all 72 (average face, seed) units every run searched (6 average faces × 12 search seeds)"
            in x16["units_note"])
