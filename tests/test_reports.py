"""Reports, model cards and comparisons: numbers equal the metrics computed directly from the parquet, findings
on a planted bias, provenance in every document, the nine card sections with valid front matter, paired
comparisons, and the three commands end to end on runs made by the real harness."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from synthetic_run import Plant, synthetic_run

from audit.facesets.fairface import RACE7
from audit.metrics import AttributeAudit, PairedShift
from audit.stats.multitest import holm
from pulse_engine.errors import PulseAuditError
from reports.analysis import Settings
from reports.card import SECTIONS, write_card
from reports.card_info import ensure_info
from reports.compare import compare_runs
from reports.formatting import pct, pval
from reports.report import write_report
from reports.run_data import load_run

SETTINGS = Settings(n_boot=300)
MCT_FIELDS = {"schema_version", "model_details", "model_parameters", "quantitative_analysis", "considerations",
              "name", "overview", "documentation", "owners", "version", "licenses", "references", "citations", "path",
              "contact", "date", "diff", "identifier", "custom_text", "reference", "style", "citation",
              "model_architecture", "data", "input_format", "input_format_map", "output_format", "output_format_map",
              "key", "value", "link", "sensitive", "sensitive_data", "graphics", "description", "collection", "image",
              "performance_metrics", "type", "slice", "confidence_interval", "lower_bound", "upper_bound", "users",
              "use_cases", "limitations", "tradeoffs", "ethical_considerations", "mitigation_strategy"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A synthetic run in the real schema: Black inputs come out White in 41% of cases, ΔITA +6° for Black."""
    root = synthetic_run(tmp_path_factory.mktemp("planted") / "run", inputs=560, samples=2, ucpr=3)
    paths = write_report(root, None, SETTINGS)
    return root, json.loads(paths["json"].read_text()), paths


def cli(*args):
    return subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_json_numbers_equal_direct_metrics(planted):
    root, report, _ = planted
    run = load_run(root)
    direct = AttributeAudit.from_run(run.faces, "race", "fairface", categories=list(RACE7), positive="White",
                                     uninformative=run.ucpr, prior=dict.fromkeys(RACE7, 1.0), n_boot=300, seed=0)
    section = next(a for a in report["attributes"] if a["key"] == "race/fairface")
    table = pd.read_parquet(root / "results.parquet").query("input_kind == 'face'")
    found = table[table["out_fairface_race"].fillna("") != ""]
    crosstab = pd.crosstab(found["label_race"], found["out_fairface_race"]).reindex(index=RACE7, columns=RACE7,
                                                                                    fill_value=0)
    assert section["transition"]["counts"] == crosstab.to_numpy().tolist() == direct.transition().to_numpy().tolist()
    by_group = direct.by_group().query("metric == 'preservation'").set_index("label_race")
    for row in section["by_group"]:
        if row["metric"] == "preservation":
            expected = by_group.loc[row["group"]]
            assert row["value"] == pytest.approx(expected["value"]) and row["n"] == expected["n"]
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected["ci_low"], expected["ci_high"]))
    mine = [t for t in report["tests"] if t["source"] == "race/fairface"]
    assert [t["p_value"] for t in mine] == pytest.approx([t.p_value for t in direct.tests()])
    assert [t["kind"] for t in mine] == ["margins", "positive_share", "flip_symmetry", "preservation_gap", "ucpr"]
    assert section["ucpr_reference"].startswith("the groups the average faces were made from")
    gender = next(a for a in report["attributes"] if a["key"] == "gender/fairface")
    assert gender["ucpr_reference"].startswith("none stated") and not any(  # not a grouping attribute: no test
        t["kind"] == "ucpr" for t in report["tests"] if t["source"] == "gender/fairface")
    p_values = np.array([np.nan if t["p_value"] is None else t["p_value"] for t in report["tests"]])
    adjusted = [t["p_adjusted"] for t in report["tests"]]
    assert [a for a in adjusted if a is not None] == pytest.approx(holm(p_values)[np.isfinite(p_values)].tolist())
    shift = PairedShift(run.faces, "delta_ita", ["label_race"], unit="°", n_boot=300, seed=0)
    expected = shift.table.query("metric == 'mean'").set_index("label_race")["value"]
    got = {r["group"]: r["value"] for s in report["shifts"] if s["key"] == "delta_ita" for r in s["table"]
           if r["metric"] == "mean"}
    assert got == pytest.approx(expected.to_dict())


def test_findings_state_the_planted_flip_with_its_numbers(planted):
    root, report, _ = planted
    table = pd.read_parquet(root / "results.parquet").query("input_kind == 'face'")
    found = table[table["out_fairface_race"].fillna("") != ""]
    share = (found["out_fairface_race"] == "White").mean()
    positive = next(t for t in report["tests"] if t["kind"] == "positive_share")
    sentence = next(f["text"] for f in report["findings"]["found"] if f["test"] == positive["id"])
    assert f"White is {pct(share)} of the outputs" in sentence
    assert f"{pval(positive['p_adjusted'])} after Holm" in sentence
    assert positive["verdict"] == "finding" and positive["component"] == "White" and positive["effect"] > 0
    assert positive["adjusted_ci_low"] > 0 and positive["ci_low"] > 0  # intervals agree with the rejection
    gap = next(t for t in report["tests"] if t["kind"] == "preservation_gap" and t["source"] == "race/fairface")
    assert gap["verdict"] == "finding" and gap["component"] == "Black" and gap["effect"] < 0
    shifts = [f["text"] for f in report["findings"]["found"] if f["kind"] == "shift"]
    assert any(text.startswith("ΔITA for inputs in group Black (") and "mean +" in text for text in shifts)
    supported = {f["test"] for f in report["findings"]["found"]}
    assert supported == {t["id"] for t in report["tests"] if t["verdict"] == "finding"}
    for t in report["tests"]:  # every interval excludes the null exactly when its test is a finding
        if t["verdict"] != "not testable":
            assert (t["adjusted_ci_low"] > 0 or t["adjusted_ci_high"] < 0) == (t["verdict"] == "finding"), t["name"]


def test_nothing_found_states_the_minimum_detectable_effect(tmp_path):
    root = synthetic_run(tmp_path / "null", inputs=140, plant=Plant(to_white={}, ita_shift={}))
    report = json.loads(write_report(root, None, SETTINGS)["json"].read_text())
    positive = next(t for t in report["tests"] if t["kind"] == "positive_share")
    assert positive["verdict"] == "nothing detected"
    assert not any(f["test"] == positive["id"] for f in report["findings"]["found"])
    line = next(f["text"] for f in report["findings"]["not_found"] if f["test"] == positive["id"])
    assert f"{positive['mde']:.1f} percentage points or more in any one category would have been detected" in line


def test_a_detectable_effect_beyond_the_possible_range_is_worded_as_none(tmp_path):
    """14 inputs: some tests could only detect a difference of shares above 100 pp. Their sentences and table cells
    say that no effect within the possible range is detectable instead of printing the impossible size; the others
    keep their MDE. ΔITA tests are bounded by ±180° (ITA° ∈ [−90°, 90°]) and their mean intervals clipped to it;
    a distance's mean interval never goes below 0."""
    from reports.compare import verdict
    from reports.formatting import detectable, mde

    root = synthetic_run(tmp_path / "tiny", inputs=14, samples=2)
    paths = write_report(root, None, Settings(n_boot=50))
    report = json.loads(paths["json"].read_text())
    text = {f["test"]: f["text"] for f in report["findings"]["not_found"]}
    beyond = [t for t in report["tests"] if t["verdict"] == "nothing detected" and t["mde"] > t["effect_bound"]]
    within = [t for t in report["tests"] if t["verdict"] == "nothing detected" and t["mde"] <= t["effect_bound"]]
    assert beyond and within
    for t in beyond:
        assert t["unit"] == "pp" and t["effect_bound"] == 100
        assert "No effect within the possible range (up to 100 percentage points in any one " in text[t["id"]]
        assert f"{t['mde']:.1f}" not in text[t["id"]]
    for t in within:
        assert f"{mde(t['mde'], t['unit'])} or more in any one" in text[t["id"]]
    md = paths["md"].read_text()
    assert md.count("| none within ±100 pp |") == len(beyond)
    shifts = [t for t in report["tests"] if t["kind"] == "shift"]
    assert shifts and all(t["effect_bound"] == 180 for t in shifts)
    for s in report["shifts"]:
        low, high = s["bounds"]
        assert all(float(low) <= r["ci_low"] <= r["ci_high"] <= float(high) for r in s["table"]
                   if r["ci_low"] is not None), s["key"]
    assert detectable(127.0, 100.0) == "none within ±100" and detectable(12.5, "inf") == "12.5"
    pair = {"kind": "preservation", "metric": "race", "b_value": 0.5, "a_value": 0.4, "n": 3, "difference": 0.1,
            "ci_low": -60.0, "ci_high": 80.0}
    test = {"verdict": "nothing detected", "p_adjusted": 0.6, "adjustment": "Holm", "confidence": 0.95,
            "adjusted_ci_low": -90.0, "adjusted_ci_high": 100.0, "mde": 130.0, "unit": "pp", "effect_bound": 100.0}
    assert verdict(pair, test, ("A", "B")).endswith(
        "smallest detectable difference none within the possible range (±100 percentage points)).")


def test_tests_without_data_are_not_testable_and_stay_out_of_the_family(tmp_path):
    """Every output lost its face: no test says "nothing detected", none enlarges the Holm family."""
    root = synthetic_run(tmp_path / "faceless", inputs=70, plant=Plant(no_face=1.0))
    report = json.loads(write_report(root, None, SETTINGS)["json"].read_text())
    label_tests = [t for t in report["tests"] if t["kind"] != "shift"]
    assert label_tests and all(t["verdict"] == "not testable" and t["reason"] for t in label_tests)
    assert all(t["p_adjusted"] is None for t in label_tests)
    testable = [t for t in report["tests"] if t["verdict"] != "not testable"]
    assert all(t["family_size"] == len(testable) for t in report["tests"])
    texts = [f["text"] for f in report["findings"]["not_testable"]]
    assert len(texts) == len([t for t in report["tests"] if t["verdict"] == "not testable"])
    assert all("not testable" in x and "nothing detected" not in x for x in texts)


def test_documents_show_provenance_and_are_self_contained(planted):
    _, report, paths = planted
    html, md = paths["html"].read_text(), paths["md"].read_text()
    provenance = "synthetic readings drawn by tests/synthetic_run.py, not a model (fairface)"
    for text, shown in ((html, provenance), (md, provenance.replace("_", "\\_"))):  # Markdown escapes _
        assert "Where the labels come from" in text and "annotated" in text
        assert shown in text
        assert report["findings"]["found"][0]["text"].split(":")[0] in text
    assert "Content-Security-Policy" in html and "<script" not in html
    assert 'src="http' not in html and "<link" not in html and html.count('src="data:image/png;base64,') >= 8


def test_card_has_nine_sections_front_matter_and_mct_fields(planted, tmp_path):
    root, report, _ = planted
    paths, created = write_card([root], tmp_path / "card", None, SETTINGS)
    assert created and (tmp_path / "card" / "card.yaml").exists()
    text = paths["md"].read_text()
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads == [f"## {i}. {name}" for i, name in enumerate(SECTIONS, 1)]
    assert "[More Information Needed]" in text
    front = yaml.safe_load(text.split("---\n")[1])
    metrics = front["model-index"][0]["results"][0]["metrics"]
    black = next(m for m in metrics if m["name"] == "race/fairface preservation, Black")
    expected = next(r["value"] for a in report["attributes"] if a["key"] == "race/fairface" for r in a["by_group"]
                    if r["metric"] == "preservation" and r["group"] == "Black")
    assert float(black["value"]) == pytest.approx(expected)


def test_front_matter_reads_the_same_in_pyyaml(planted, tmp_path):
    text = write_card([planted[0]], tmp_path / "card", None, SETTINGS)[0]["md"].read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] > 0


def _keys(value, found):
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(key)
            _keys(item, found)
    elif isinstance(value, list):
        for item in value:
            _keys(item, found)
    return found


def test_intersectional_groups_in_report_and_card(tmp_path):
    root = synthetic_run(tmp_path / "run", inputs=140, group_by=("race", "gender"))
    report = json.loads(write_report(root, None, SETTINGS)["json"].read_text())
    race = next(a for a in report["attributes"] if a["key"] == "race/fairface")
    groups = {r["group"] for r in race["intersectional"]["by_group"]}
    assert "Black × Female" in groups and len(groups) == 14
    kinds = [t["kind"] for t in report["tests"] if t["id"] in race["intersectional"]["tests"]]
    assert kinds == ["preservation_gap_intersectional"]
    text = write_card([root], tmp_path / "card", None, SETTINGS)[0]["md"].read_text()
    intersectional = text.split("### Intersectional results")[1].split("## 8.")[0]
    assert "race by race × gender" in intersectional and "| Black × Female" in intersectional


def test_card_uses_the_info_file_and_nothing_else(planted, tmp_path):
    root, _, _ = planted
    info = tmp_path / "card.yaml"
    info.write_text('model:\n  name: "Synthetic GAN"\n  licence: MIT\nintended_use:\n  primary_uses:\n'
                    '  - research on upsampler bias\nethical_considerations:\n- name: Skin lightening\n'
                    '  mitigation: report ΔITA per group\n')
    paths, created = write_card([root], tmp_path / "out", info, SETTINGS)
    text, card = paths["md"].read_text(), json.loads(paths["json"].read_text())
    assert not created and text.startswith("---\nlicense: MIT\n")
    assert "# Model card: Synthetic GAN" in text and "research on upsampler bias" in text
    assert "**Skin lightening.** Mitigation: report ΔITA per group" in text
    assert card["model_details"]["licenses"] == [{"identifier": "MIT"}]
    assert card["considerations"]["ethical_considerations"] == [{"name": "Skin lightening",
                                                                 "mitigation_strategy": "report ΔITA per group"}]
    assert _keys(card, set()) <= MCT_FIELDS and "owners" not in card["model_details"]
    metric = card["quantitative_analysis"]["performance_metrics"][0]
    assert isinstance(metric["value"], str) and set(metric["confidence_interval"]) == {"lower_bound", "upper_bound"}
    info.write_text("modle:\n  name: x\n")
    with pytest.raises(PulseAuditError, match="unknown key 'modle'"):
        ensure_info(info)


def test_compare_pairs_shared_inputs(tmp_path):
    fair = synthetic_run(tmp_path / "fair", inputs=210, plant=Plant(to_white={}, ita_shift={}))
    biased = synthetic_run(tmp_path / "biased", inputs=210, seed=1, plant=Plant(to_white={"Black": 0.8,
                                                                                       "East Asian": 0.8}))
    runs = [load_run(fair), load_run(biased)]
    result = compare_runs(runs, SETTINGS)
    pair = next(p for p in result["paired"] if p["metric"] == "race/fairface")
    a, b = (load_run(r).faces for r in (fair, biased))
    kept = [(f["out_fairface_race"] == f["label_race"]).where(f["out_fairface_race"].fillna("") != "")
            .groupby(f["item_id"]).mean().dropna() for f in (a, b)]
    both = kept[0].index.intersection(kept[1].index)
    d = kept[1][both] - kept[0][both]
    assert pair["n"] == len(both) and pair["difference"] == pytest.approx(d.mean()) and pair["difference"] < 0
    test = next(t for t in result["tests"] if t["id"] == pair["test"])
    assert test["kind"] == "preservation_paired" and test["verdict"] == "finding"
    assert pair["ci_high"] < 0 and test["adjusted_ci_high"] < 0  # the interval (pp) agrees with the test
    verdict = next(v["text"] for v in result["verdicts"] if v["test"] == pair["test"])
    assert verdict.startswith("race/fairface preservation: pulse · synthetic-gan (") and "less often than" in verdict
    assert any(v["text"].startswith("ΔITA: ") for v in result["verdicts"])
    assert result["shared_inputs"] == 210 and len(result["verdicts"]) == len(result["tests"])


@pytest.fixture(scope="module")
def harness_runs(tmp_path_factory):
    """Two real runs of `pulse-audit run` on the embedded demo set (oracle and bicubic, skin tone + identity)."""
    base = tmp_path_factory.mktemp("harness")
    runs = []
    for upsampler in ("oracle", "bicubic"):
        out = base / upsampler
        done = cli("run", "--dataset", "demo", "--upsampler", upsampler, "--classifiers", "skin-tone,identity",
                   "--per-group", "3", "--group-by", "skin_tone", "--factor", "4", "--device", "cpu", "--out", out)
        assert done.returncode == 0, done.stderr
        runs.append(out)
    return runs


def test_commands_end_to_end_on_harness_runs(harness_runs, tmp_path):
    oracle, bicubic = harness_runs
    done = cli("report", bicubic, "--oracle", oracle, "--n-boot", "200")
    assert done.returncode == 0, done.stderr
    report = json.loads((bicubic / "report" / "report.json").read_text())
    assert report["oracle"] and any(a["noise_floor"] for a in report["attributes"])
    assert {s["key"] for s in report["shifts"]} == {"delta_ita", "identity_distance"}
    assert (bicubic / "report" / "report.html").stat().st_size > 50_000
    done = cli("card", bicubic, "--n-boot", "200")
    assert done.returncode == 0 and "wrote the template" in done.stderr, done.stderr
    assert (bicubic / "card" / "README.md").read_text().startswith("---\n")
    done = cli("compare", oracle, bicubic, "--out", tmp_path / "cmp", "--n-boot", "200")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["verdicts"]
    done = cli("report", tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and "is not a run folder" in lines[0]


def test_validity_battery_fast_subset():
    """The battery of benchmarks/validity.py (its own generator, whole reports) with 8 reports per design instead
    of 200. Thresholds allow for that Monte-Carlo error: pooled over the 7 null designs (56 reports) the share of
    reports stating any finding is ≤ α + 0.02 + 3 SE ≈ 0.17; every interval kind pooled over designs covers ≥ 0.88
    (rates and shares, whose per-report intervals are correlated) or ≥ 0.85 (test intervals, counted per test,
    simultaneous over its components); no zero-width interval; the planted ΔITA shift is found in most reports and
    names the shifted group; the planted flip is found and, in most reports where it is, named right (the class
    that gains or the group that loses)."""
    from benchmarks.validity import NULLS, PLANTED, run_design

    reports = 8
    nulls = [run_design(d, reports, seed=1000) for d in NULLS]
    found = sum(r["finding_rate"] * reports for r in nulls) / (reports * len(NULLS))
    assert found <= 0.07 + 3 * math.sqrt(0.07 * 0.93 / (reports * len(NULLS))), found
    pooled: dict[str, list[float]] = {}
    for r in nulls:
        for kind, (cov, count, _) in r["coverage"].items():
            if not count:  # a kind the reports gave no interval of (counted apart; see the small-design test)
                continue
            hits = pooled.setdefault(kind.split(" (true rate")[0], [0.0, 0.0])
            hits[0] += cov * count
            hits[1] += count
    for kind, (hits, count) in pooled.items():
        assert hits / count >= (0.85 if kind.startswith("test") else 0.88), (kind, hits / count)
    assert all(r["zero_width"] == 0 for r in nulls)
    assert nulls[-1]["not_testable"] >= 6 and nulls[-1]["finding_rate"] == 0  # no faces: not testable, no finding
    flip, shift = (run_design(d, reports, seed=2000) for d in PLANTED)
    assert shift["detection"] >= 0.75 and shift["direction"] == 1.0
    assert flip["detection"] >= 0.25 and flip["direction"] >= 0.75


def test_validity_battery_small_design():
    """The battery's small-group designs (benchmarks/validity.py, designs 9–14): truths by hand and a quick run.
    Four equal groups with keep 0.8 give P(out | in) = 0.8 on the diagonal and 0.2/3 elsewhere, output shares ¼;
    flipping 20 % of c1's outputs to c0 among 7 equal groups (off-diagonal 0.2/6) moves c0's output share by
    100·(1/7)·0.2·(1 − 0.2/6) = 2.762 points and c1's by −100·(1/7)·0.2·0.8 = −2.286. With 3 inputs per group
    no median interval can exist (the smallest two-sided sign-test p-value is 2·(½)³ = 0.25), so every median row
    counts as "no interval", not as covered or missed, while every group and age bin gets a preservation-rate
    interval; every test still runs (13: five on race, three on age, ΔITA overall and per group)."""
    from benchmarks.validity import DESIGNS, SMALL_AUDITS, component_truth, run_design, simulate

    assert DESIGNS[9:] == SMALL_AUDITS and len(DESIGNS) == 15  # designs 0-8 keep their numbers
    tiny = SMALL_AUDITS[2]
    run, truths, shifts = simulate(tiny, 0)
    expected = np.full((4, 4), 0.2 / 3) + np.eye(4) * (0.8 - 0.2 / 3)
    assert np.allclose(truths["race"].cond, expected) and np.allclose(truths["race"].out_share, 0.25)
    assert len(run.table) == 12 * 4 + 4 * tiny.ucpr and set(shifts.values()) == {0.0}
    flip = next(d for d in SMALL_AUDITS if d.flip)
    _, truths, shifts = simulate(flip, 0)
    margins = {"kind": "margins", "source": "race/clf", "components": [{"label": "c0"}, {"label": "c1"}]}
    assert component_truth(margins, truths, shifts) == pytest.approx({"c0": 100 / 7 * 0.2 * (1 - 0.2 / 6),
                                                                      "c1": -100 / 7 * 0.2 * 0.8})
    reports = 3
    result = run_design(tiny, reports, seed=3000)
    assert result["tests"] == 13 and result["not_testable"] == 0 and result["zero_width"] == 0
    cov, given, missing = result["coverage"]["median: ΔITA by group (sign test, effective n)"]
    assert given == 0 and missing == 4 * reports and math.isnan(cov)
    assert all(count == reports for count, _, _ in result["per_test"].values()) and len(result["per_test"]) == 13
    for attribute, groups in (("race", 4), ("age", 9)):  # every group and age bin has inputs
        rates = result["coverage"][f"rate: preservation by group (Clopper–Pearson, effective n) — {attribute}"]
        assert rates[1:] == (reports * groups, 0), attribute


def test_validity_battery_scores_a_test_with_a_missing_component_interval_as_no_interval_only():
    """A test's coverage is simultaneous over its components, so a test with a component that gave no interval is
    not scored as covered over the others (it counts under "no interval" only); one with every interval is scored."""
    from benchmarks.validity import NULLS, Tally, score_report

    def shift_test(c1: dict) -> dict:
        components = [{"label": "c0", "ci_low": -1.0, "ci_high": 1.0}, {"label": "c1", **c1}]
        return {"kind": "shift", "source": "delta_ita", "group": "", "verdict": "no finding",
                "components": components, "adjusted_components": components}

    for c1, expected in (({"ci_low": "none (too few inputs)", "ci_high": None}, [0, 0, 1]),
                         ({"ci_low": 4.0, "ci_high": 6.0}, [1, 1, 0]), ({"ci_low": 6.0, "ci_high": 7.0}, [0, 1, 0])):
        tally = Tally()
        report = {"attributes": [], "shifts": [], "tests": [shift_test(c1)], "findings": {"found": []}}
        score_report(report, {}, {"c0": 0.0, "c1": 5.0}, NULLS[0], tally)
        assert {key: hits for key, hits in tally.hits.items() if key.startswith("test interval")} == {
            "test interval, simultaneous within the test — shift delta_ita": expected,
            "test interval, at the Holm-adjusted level": expected}, c1
