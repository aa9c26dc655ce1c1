"""The study: trend tests against statsmodels/scipy and by simulation, contrasts, the refusal to pair runs of
different conditions, the study plan TOML, and a study rendered from synthetic runs."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.metrics.study import StudyRun, condition_trend, contrast, pair_units
from audit.stats.contrasts import paired_contrast, welch_contrast
from audit.stats.estimate import detectable_ncp, t_power
from audit.stats.trend import (
    generator_trend,
    generators_for_power,
    inputs_for_power,
    paired_trend,
    permutation_trend,
    unit_slopes,
)
from pulse_engine.errors import PulseAuditError
from reports.markdown_text import md as md_escape

sm = pytest.importorskip("statsmodels.api")

DOSES = np.repeat([0.15, 0.5, 0.85], 3)  # 3 compositions × 3 seeds


# ------------------------------------------------------------------ against independent computations
def test_generator_trend_matches_statsmodels_ols():
    rng = np.random.default_rng(1)
    y = 4.0 * DOSES + rng.normal(0, 1.0, DOSES.size)
    trend = generator_trend(DOSES, y)
    fit = sm.OLS(y, sm.add_constant(DOSES)).fit()
    assert trend.slope == pytest.approx(fit.params[1], rel=1e-10)
    assert trend.intercept == pytest.approx(fit.params[0], rel=1e-10)
    assert trend.se == pytest.approx(fit.bse[1], rel=1e-10)
    assert trend.p_value == pytest.approx(fit.pvalues[1], rel=1e-8)
    low, high = fit.conf_int(0.05)[1]
    assert (trend.ci_low, trend.ci_high) == pytest.approx((low, high), rel=1e-8)
    assert trend.df == fit.df_resid == 7
    assert trend.residual_sd == pytest.approx(math.sqrt(fit.scale), rel=1e-10)
    assert trend.p_value == pytest.approx(stats.linregress(DOSES, y).pvalue, rel=1e-8)


def test_permutation_trend_matches_brute_force_enumeration():
    rng = np.random.default_rng(2)
    x, y = np.array([0.1, 0.1, 0.5, 0.5, 0.9, 0.9]), rng.normal(0, 1, 6) + np.arange(6) * 0.4
    observed = abs(stats.linregress(x, y).slope)
    slopes = [abs(stats.linregress(x[list(p)], y).slope) for p in itertools.permutations(range(6))]
    assert permutation_trend(x, y) == pytest.approx(np.mean(np.array(slopes) >= observed - 1e-12))
    assert math.isnan(permutation_trend([0.1, 0.2], [1.0, 2.0]))  # two generators: nothing to permute over


def test_paired_trend_is_a_t_test_of_per_input_slopes():
    rng = np.random.default_rng(3)
    doses = np.array([-1.0, 0.0, 1.0, 2.0])
    values = rng.normal(0, 5, (20, 1)) + 1.5 * doses + rng.normal(0, 2, (20, 4))  # big per-input offsets
    values[0, 1] = np.nan  # a missing cell: that input's slope uses its other doses
    slopes = [np.polyfit(doses[np.isfinite(v)], v[np.isfinite(v)], 1)[0] for v in values]
    np.testing.assert_allclose(unit_slopes(doses, values), slopes, rtol=1e-10)
    trend = paired_trend(doses, values)
    reference = stats.ttest_1samp(slopes, 0.0)
    assert trend.slope == pytest.approx(np.mean(slopes))
    assert trend.p_value == pytest.approx(reference.pvalue, rel=1e-8)
    assert (trend.ci_low, trend.ci_high) == pytest.approx(tuple(reference.confidence_interval(0.95)), rel=1e-8)


def test_contrasts_match_scipy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 25), rng.normal(0.4, 1.5, 25)
    paired = paired_contrast(a, b)
    assert paired.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-10)
    assert (paired.ci_low, paired.ci_high) == pytest.approx(
        tuple(stats.ttest_rel(b, a).confidence_interval(0.95)), rel=1e-10)
    welch = welch_contrast(a, b[:18])
    reference = stats.ttest_ind(b[:18], a, equal_var=False)
    assert welch.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert welch.df == pytest.approx(reference.df, rel=1e-10)
    assert (welch.ci_low, welch.ci_high) == pytest.approx(tuple(reference.confidence_interval(0.95)), rel=1e-10)


def test_power_functions_agree_with_statsmodels():
    from statsmodels.stats.power import TTestPower

    ncp = detectable_ncp(19, 0.05, 0.8)  # one-sample t with n = 20: effect size d = ncp/√20
    assert TTestPower().power(ncp / math.sqrt(20), 20, 0.05) == pytest.approx(0.8, abs=1e-6)
    assert t_power(0.0, 10) == pytest.approx(0.05, abs=1e-12)
    n = inputs_for_power(1.0, 2.0)  # d = 0.5 needs 34 (statsmodels: 33.4 → 34)
    assert n == math.ceil(TTestPower().solve_power(0.5, power=0.8, alpha=0.05))
    g = generators_for_power(10.0, 2.0, [0.15, 0.5, 0.85])
    assert g is not None and g % 3 == 0


def test_untestable_designs_say_why():
    assert not generator_trend([0.2, 0.8], [1.0, 2.0]).testable
    assert "≥ 3" in generator_trend([0.2, 0.8], [1.0, 2.0]).notes
    assert "same dose" in generator_trend([0.5] * 4, [1.0, 2.0, 3.0, 4.0]).notes
    assert "standard error 0" in generator_trend([0.1, 0.5, 0.9], [1.0, 5.0, 9.0]).notes
    assert not paired_contrast([1.0], [2.0]).testable


# ------------------------------------------------------------------ by simulation
def _rejections(p_values: np.ndarray, alpha: float = 0.05) -> float:
    return float(np.mean(np.asarray(p_values) < alpha))


def test_trend_over_generators_holds_alpha_where_inputs_as_units_would_not():
    """Null: composition has no effect, but every generator (training seed) has its own offset. Treating the
    shared inputs as units rejects far too often; treating generators as units holds α."""
    rng = np.random.default_rng(5)
    n_sim, n_inputs = 1500, 30
    ours, naive = [], []
    for _ in range(n_sim):
        seed_effect = rng.normal(0, 2.0, DOSES.size)
        values = seed_effect[:, None] + rng.normal(0, 4.0, (DOSES.size, n_inputs))
        ours.append(generator_trend(DOSES, values.mean(axis=1)).p_value)
        naive.append(stats.linregress(np.repeat(DOSES, n_inputs), values.ravel()).pvalue)
    assert abs(_rejections(ours) - 0.05) < 3 * math.sqrt(0.05 * 0.95 / n_sim) + 0.005
    assert _rejections(naive) > 0.3


def test_planted_slope_is_detected_with_the_stated_power():
    rng = np.random.default_rng(6)
    sd, n_sim = 1.0, 1500
    sxx = float(((DOSES - DOSES.mean()) ** 2).sum())
    slope = detectable_ncp(DOSES.size - 2) * sd / math.sqrt(sxx)  # the MDE at the true SD
    p = [generator_trend(DOSES, slope * DOSES + rng.normal(0, sd, DOSES.size)).p_value for _ in range(n_sim)]
    assert abs(_rejections(p) - 0.8) < 3 * math.sqrt(0.8 * 0.2 / n_sim)
    trends = [generator_trend(DOSES, slope * DOSES + rng.normal(0, sd, DOSES.size)) for _ in range(400)]
    covered = np.mean([t.ci_low <= slope <= t.ci_high for t in trends])
    assert abs(covered - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 400)


def test_paired_trend_null_and_planted():
    rng = np.random.default_rng(7)
    doses = np.array([0.0, 1.0, 2.0])
    null = [paired_trend(doses, rng.normal(0, 10, (15, 1)) + rng.normal(0, 1, (15, 3))).p_value for _ in range(1000)]
    assert abs(_rejections(null) - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 1000) + 0.005
    planted = [paired_trend(doses, rng.normal(0, 10, (15, 1)) + 0.6 * doses + rng.normal(0, 1, (15, 3))).slope
               for _ in range(200)]
    assert np.mean(planted) == pytest.approx(0.6, abs=0.05)
    hits = [paired_trend(doses, 0.6 * doses + rng.normal(0, 1, (15, 3))).p_value < 0.05 for _ in range(400)]
    expected = t_power(0.6 / (math.sqrt(0.5) / math.sqrt(15)), 14)  # slope SD = 1/√Sxx = √0.5, 15 inputs
    assert abs(np.mean(hits) - expected) < 3 * math.sqrt(expected * (1 - expected) / 400)


def test_permutation_trend_holds_alpha():
    rng = np.random.default_rng(8)
    x = np.repeat([0.1, 0.5, 0.9], 2)  # 6 generators: 720 permutations, enumerated
    p = np.array([permutation_trend(x, rng.standard_cauchy(6)) for _ in range(800)])
    assert _rejections(p) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 800)


# ------------------------------------------------------------------ conditions: never paired across factors
def _study_run(name: str, factor: int, values: dict[str, float], dose: float = math.nan,
               design: str = "composition") -> StudyRun:
    faces = pd.DataFrame({"item_id": list(values), "sample": 0, "delta_ita": list(values.values()),
                          "group": "g"})
    return StudyRun(name, faces, None, "pulse", name, factor, 32, "same inputs", dose, design)


def test_runs_at_different_factors_are_never_paired():
    a = _study_run("a", 4, {"i1": 1.0, "i2": 2.0, "i3": 3.0})
    b = _study_run("b", 8, {"i1": 2.0, "i2": 3.5, "i3": 3.9})
    va, vb = a.faces.set_index("item_id")["delta_ita"], b.faces.set_index("item_id")["delta_ita"]
    with pytest.raises(PulseAuditError, match="differ in downscale factor.*cannot be paired"):
        pair_units(a, b, va, vb)
    unpaired = contrast(a, b, va, vb)
    assert unpaired.method.startswith("Welch")
    assert unpaired.p_value == pytest.approx(stats.ttest_ind(vb, va, equal_var=False).pvalue)
    same = contrast(a, _study_run("c", 4, {"i1": 2.0, "i2": 3.5, "i3": 3.9}), va, vb)
    assert same.method.startswith("paired")
    with pytest.raises(PulseAuditError, match="within one condition"):
        condition_trend([a, b], [va, vb])


def test_shift_design_uses_inputs_as_units():
    rng = np.random.default_rng(9)
    offsets = rng.normal(0, 10, 12)
    runs, values = [], []
    for dose in (0.0, 1.0, 2.0):
        v = {f"i{i}": offsets[i] + 2.0 * dose + rng.normal(0, 0.5) for i in range(12)}
        runs.append(_study_run(f"shift{dose}", 16, v, dose, "shift"))
        values.append(pd.Series(v))
    ct = condition_trend(runs, values)
    assert ct.design == "shift" and ct.trend.n_units == 12
    assert ct.trend.slope == pytest.approx(2.0, abs=0.5) and ct.trend.p_value < 1e-6


# ------------------------------------------------------------------ the plan and the rendered study
def test_study_plan_from_toml(tmp_path):
    from audit.commands.study_config import read_plan

    path = tmp_path / "study.toml"
    path.write_text('dataset = "demo"\nclassifiers = "skin-tone"\nper-group = 2\n[study]\nbaseline = "b"\n'
                    '[[study.runs]]\nname = "a"\nfactor = 4\ndose = 0.2\n'
                    '[[study.runs]]\nname = "b"\nfactor = 16\ndesign = "shift"\n')
    plan = read_plan(path, tmp_path / "out")
    assert [r.name for r in plan.runs] == ["a", "b"] and plan.baseline == "b"
    assert plan.runs[0].config.per_group == 2 and plan.runs[1].config.factor == 16
    assert plan.runs[0].dose == 0.2 and plan.runs[1].design == "shift"
    assert plan.runs[1].config.out == str(tmp_path / "out" / "runs" / "b")
    path.write_text('[study]\n[[study.runs]]\nname = "a"\nfactr = 4\n')
    with pytest.raises(PulseAuditError, match="unknown option 'factr'"):
        read_plan(path, tmp_path)
    path.write_text('dataset = "demo"\n')
    with pytest.raises(PulseAuditError, match=r"\[study\] table"):
        read_plan(path, tmp_path)


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    from synthetic_run import Plant, synthetic_run

    from audit.facesets.fairface import RACE7

    root = tmp_path_factory.mktemp("study-runs")
    shifts = (0.0, 8.0, 16.0, 2.0, 10.0, 18.0)  # ΔITA grows with the dose, plus a seed offset
    return [synthetic_run(root / f"g{i}", inputs=28, seed=i, ucpr=2, image_side=8,
                          plant=Plant(ita_shift=dict.fromkeys(RACE7, s))) for i, s in enumerate(shifts)]


def test_study_renders_from_synthetic_runs(synthetic_runs, tmp_path):
    from dataclasses import replace

    from reports.analysis import Settings
    from reports.study import PRIMARY_METRICS, build_study, load_study_runs, write_study

    doses = {f"g{i}": d for i, d in enumerate((0.1, 0.5, 0.9, 0.1, 0.5, 0.9))}
    runs = load_study_runs(synthetic_runs, doses)
    # with uninformative inputs the pre-specified primary metric is their output ITA (first of the list measured),
    # chosen by what was measured, not by a result: here it has no variation, so the lead says it was not testable
    with_ucpr = build_study(runs, Settings(n_boot=200), "g0")
    primary = [t for t in with_ucpr["trends"] if t["role"] == "primary"]
    assert [t["metric"] for t in primary] == ["ucpr_ita"] and not with_ucpr["tests"]["primary"][0]["family_size"]
    assert with_ucpr["answer"]["lead"][0].endswith("no dose–response could be tested (reasons below).")
    # without them it is ΔITA on the real inputs, where the planted slope is
    paths = write_study([replace(r, ucpr=None) for r in runs], tmp_path / "study", Settings(n_boot=200),
                        baseline="g0")
    study = json.loads(paths["json"].read_text())
    assert study["schema"] == "pulse-audit-study/1"
    primary = [t for t in study["trends"] if t["role"] == "primary"]
    assert [t["metric"] for t in primary] == ["delta_ita"] and PRIMARY_METRICS[-1] == "delta_ita"
    delta = primary[0]
    assert [r["id"] for r in study["tests"]["primary"]] == [delta["test"]["id"]]
    assert delta["design"] == "composition" and delta["n_units"] == 6 and delta["test"]["family_size"] == 1
    assert delta["test"]["verdict"] == "finding" and delta["slope"] > 0 and "rises with the dose" in delta["sentence"]
    assert study["answer"]["primary"] == [delta["sentence"]]  # the first screen: primary sentences only
    lead = study["answer"]["lead"]
    assert len(lead) == 1 and lead[0].startswith(
        "Generators trained on different skin-tone compositions (6 generators per factor): the outputs' skin tone "
        "follows the dose at ×4")
    assert f"{delta['test']['effect']:+.3g}"[1:] in lead[0]
    # every other metric is in the secondary family, adjusted on its own
    secondary = study["tests"]["secondary"]
    m = sum(r["verdict"] != "not testable" for r in secondary)
    assert m >= 5 and all(r["family_size"] == m for r in secondary)
    assert f": {m} tests adjusted together by Holm" in study["families"]["secondary"]
    assert set(study["answer"]["secondary_found"]) == {
        t["sentence"] for t in study["trends"] if t["role"] == "secondary" and t["test"]["verdict"] == "finding"}
    for t in study["trends"]:  # every verdict is one of three, and "not testable" is never counted
        test = t["test"]
        assert test["verdict"] in ("finding", "nothing detected", "not testable")
        assert (test["p_value"] is None) == (test["verdict"] == "not testable")
        if test["verdict"] != "not testable":  # the interval at the adjusted level agrees with the verdict
            low, high = test["adjusted_ci_low"], test["adjusted_ci_high"]
            assert (low > 0 or high < 0) == (test["verdict"] == "finding")
            # one unit per row: the slope, its intervals and the detectable slope are all per displayed dose step
            assert test["effect"] == pytest.approx(t["slope"] * t["display_scale"])
            assert test["ci_low"] < test["effect"] < test["ci_high"] and low <= test["ci_low"] + 1e-9
            assert t["mde_family"] >= test["mde"] - 1e-9  # α/m is stricter than α
    assert {c["run"] for c in study["contrasts"]} == {f"g{i}" for i in range(1, 6)}
    assert all(c["paired"] for c in study["contrasts"])  # one condition: paired over shared inputs
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert delta["sentence"].split("(")[0] in html and html.count("data:image/png;base64") >= 5
    assert md_escape(study["families"]["primary"]) in md and md_escape(delta["sentence"]) in md


def test_study_command(synthetic_runs, tmp_path):
    from typer.testing import CliRunner

    from audit.commands.cli import app

    done = CliRunner().invoke(app, ["study", *map(str, synthetic_runs[:3]), "--out", str(tmp_path / "s"),
                                    "--n-boot", "100", "--baseline", "g1"])
    assert done.exit_code == 0, done.output
    study = json.loads((tmp_path / "s" / "study.json").read_text())
    assert study["baseline"] == "g1"
    assert all(t["test"]["verdict"] == "not testable" for t in study["trends"]) or not study["trends"]
    alone = CliRunner().invoke(app, ["study", str(synthetic_runs[0]), "--out", str(tmp_path / "s1")])
    assert alone.exit_code != 0


def test_demo_plan_is_data_driven(monkeypatch):
    from audit.commands import demo_audit

    monkeypatch.setattr(demo_audit, "STUDY_GENERATORS", {"a": "dcgan-file:A", "b": "dcgan-file:B",
                                                         "digiface-shift-alpha+0": "shifted:S"})
    plan = demo_audit.demo_plan(quick=False)
    study = [r for r in plan if r.study]
    assert {(r.model, r.factor) for r in study} == {(g, f) for g in ("a", "b", "digiface-shift-alpha+0")
                                                    for f in demo_audit.STUDY_FACTORS}
    assert "digiface-x4" not in {r.name for r in plan}  # the shift family's alpha+0 member is that run
    counts = {r.name: demo_audit.uninformative_count(r, quick=False) for r in study}
    top = max(demo_audit.STUDY_FACTORS)
    assert all((n > 0) == name.endswith(f"-x{top}") for name, n in counts.items())
    assert {r.ucpr_size for r in study if r.model.startswith("digiface-shift")} == {4}


def test_validation_summary_quotes_the_report():
    from reports.study import validation_summary

    report = {"instrument_validation": {"sides": [32, 256], "planted": [
        {"instrument": "skin-tone", "side": 32, "slope": 0.95, "slope_ci": [0.8, 1.1], "bias": -3.2,
         "bias_ci": [-6.0, -1.0], "faces_measured": 11, "faces": 12}], "resolution": [
        {"instrument": "skin-tone", "side": 32, "paired_difference": 0.8, "share_measured": 0.8},
        {"instrument": "skin-tone", "side": 256, "paired_difference": 0.0, "share_measured": 0.9}]}}
    text = validation_summary(report)
    assert "slope 0.95 (95% CI 0.8 to 1.1" in text and "bias −3.2°" in text and "11 of 12 images" in text
    assert "32 px vs 256 px: paired change +0.8°" in text and "256 px vs 256 px" not in text
    assert validation_summary({}) == ""


def test_doses_come_from_the_generator_cards(tmp_path):
    from types import SimpleNamespace

    from reports.study import composition_dose, generator_card, shift_dose

    (tmp_path / "base").mkdir()
    (tmp_path / "member").mkdir()
    (tmp_path / "base" / "card.json").write_text(json.dumps(
        {"name": "balanced", "training_data": {"composition_requested": {"light": 0.5, "dark": 0.5}}}))
    (tmp_path / "member" / "card.json").write_text(json.dumps({"name": "balanced-shift-alpha+2", "alpha": 2.0}))
    weights = [tmp_path / "base" / "weights.pt", tmp_path / "base" / "card.json", tmp_path / "direction.pt",
               tmp_path / "member" / "card.json"]  # a shift member lists its base's files, then its own card
    run = SimpleNamespace(meta={"generator": {"weights": [{"path": str(p)} for p in weights]}})
    assert shift_dose(generator_card(run)) == 2.0
    run.meta["generator"]["weights"] = [{"path": str(p)} for p in weights[:1]]  # only weights: the card beside them
    card = generator_card(run)
    assert shift_dose(card) is None and composition_dose(card) == (0.5, "light 50% · dark 50%")
    assert composition_dose(None, "5600 images: light 4760 (85%), dark 840 (15%)") == (0.85, "light 85% · dark 15%")


def test_demo_uses_every_committed_training_seed():
    """The composition design of the demo is every skew-3x3 generator with a card (seeds in numeric order), and the
    study's doses come from those cards: 15 % / 50 % / 85 % light faces."""
    from audit.commands import demo_audit
    from reports.study import composition_dose

    folders = sorted(p.parent for p in demo_audit.REPLICATES.glob("*-seed*/card.json"))
    composition = {n: s for n, s in demo_audit.known_answer_generators().items() if s.startswith("dcgan-file:")}
    assert len(folders) >= 9 and set(composition) == {f.name for f in folders}
    for prefix in {n.rsplit("-seed", 1)[0] for n in composition}:
        seeds = [int(n.rsplit("seed", 1)[1]) for n in composition if n.rsplit("-seed", 1)[0] == prefix]
        assert seeds == sorted(seeds)
    doses = {round(composition_dose(json.loads((f / "card.json").read_text()))[0], 2) for f in folders}
    assert doses == {0.15, 0.5, 0.85}
