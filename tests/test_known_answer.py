"""Known-answer tests: audits and experiments where we know what the answer must be.

(a) ``oracle`` returns the true image (the harness on the embedded demo set): no attribute may shift significantly
    after Holm correction.
(b) A planted upsampler adds a known ΔL* to every pixel of the true image: the audit must find a lightening (ΔITA > 0,
    significant) whose bootstrap interval of mean ΔITA covers the planted value, computed independently of the
    harness from the colour formula: ITA(L* + ΔL*, b*) − ITA(L*, b*) at each face's measured median L*, b*.
(c) PULSE over a prior-shift family (``datasets/generators/balanced-shift``: the 32 px balanced generator with its
    latent shifted by alpha SD along a skin-tone direction; the measured prior ITA of its samples rises with alpha)
    on the demo's per-group average faces, alpha −2, 0, +2: at 2×2 (uninformative) the mean output ITA rises strictly
    with alpha and the output of alpha +2 is lighter than that of alpha −2 on the same input and search seed
    (one-sided Wilcoxon signed-rank, p < 0.01); at 8×8 (informative: the LR image pins the colour of every 4×4
    block) that paired effect is less than half as large, and significantly smaller (attenuation).
    Output ITA in (c) and (d) is measured in the generator's face frame (``skin-tone-aligned``), so every output
    counts: the detector misses dark outputs far more often than light ones (datasets/generators/DIAGNOSIS.md).
(d) PULSE over nine DCGANs trained on 85 / 50 / 15 % light faces with three seeds each
(``datasets/generators/skew-3x3``), the
    generators as units: at 2×2 the per-composition mean output ITA is ordered light > balanced > dark and the
    regression of the nine generators' mean output ITA on their light share has a positive slope (one-sided t test
    on 7 df, so composition is tested against seed-to-seed variation); at 8×8 the slope is less than half as large.
(e) The study page built from the outputs of (c) and (d): its primary family finds the prior shift at ×16 (positive
    slope, adjusted interval above 0), and for both designs the ×16 slope is positive and more than twice the ×4 one.

Why 2×2: at ×4 and ×8 of a 32 px generator (8×8 and 4×4 inputs) matching the LR image within eps pins the colour of
4×4 blocks, so the generators' priors barely move the outputs (see datasets/generators/DIAGNOSIS.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats

from audit.classifiers import build_classifier
from audit.classifiers.skin_tone import (
    ita_degrees,
    lab_to_srgb,
    measure_skin,
    skin_mask,
    srgb_to_lab,
)
from audit.commands.known_answer import dose_response, trained_generators, unit_means
from audit.core.records import UpsampleInput
from audit.metrics import AttributeAudit, PairedShift
from audit.metrics.columns import split_inputs
from audit.run import harness
from audit.run.harness import AuditConfig, run_audit
from audit.run.run_store import read_results
from audit.stats import report_tests
from audit.upsamplers import OracleUpsampler
from audit.vision.faces import main_face
from pulse_engine.search import SearchConfig

REPO = Path(__file__).resolve().parents[1]
GENERATORS = REPO / "datasets" / "generators"
DELTA_L = 8.0
"""Planted lightening: CIELAB L* units added to every pixel."""
SHIFT_FAMILY, SHIFT_ALPHAS = "balanced-shift", (-2.0, 0.0, 2.0)
UNINFORMATIVE_SIDE, INFORMATIVE_SIDE = 2, 8
"""LR sides of the average faces for the 32 px generators (×16 and ×4)."""
SAMPLES, STEPS = 4, 50
"""PULSE outputs per average face and search steps (enough to meet eps on these tiny inputs)."""
MIN_MEASURED = 8
"""Fewest outputs with a measured face per generator and side."""


def audit_demo(root: Path, name: str, factor: int = 4, **options: object) -> pd.DataFrame:
    """Run the harness on every demo face (grouped by skin tone) with the skin-tone measurement; the run table."""
    config = AuditConfig.from_mapping(dict(dataset="demo", classifiers=("skin-tone",), per_group=0,
                                           group_by=("skin_tone",), factor=factor, device="cpu",
                                           out=str(root / name), **options))
    run_audit(config)
    return read_results(root / name).to_pandas()


# ------------------------------------------------------------------------------------------------ (a) oracle
def test_oracle_shows_no_significant_shift(tmp_path):
    faces, _ = split_inputs(audit_demo(tmp_path, "oracle", upsampler="oracle", resolution=64))
    assert faces["delta_ita"].notna().sum() >= 50
    audits = [AttributeAudit.from_run(faces, attribute, "skin-tone", truth="in", n_boot=500)
              for attribute in ("ita_band", "monk")]
    shift = PairedShift(faces, "delta_ita", groups="label_skin_tone", name="ΔITA", unit="°", n_boot=500)
    tests = report_tests(*audits, shift, method="holm")
    assert len(tests) >= 8
    assert not tests["reject"].any(), tests.loc[tests["reject"], ["name", "p_value", "p_adjusted"]]
    mean = shift.frame.overall.loc["mean"]
    assert mean["ci_low"] <= 0 <= mean["ci_high"]
    for audit in audits:
        table = audit.transition().to_numpy()
        assert table.sum() == np.trace(table)  # every measured face keeps its band / swatch


# ------------------------------------------------------------------------------------------------ (b) planted
class PlantedLightening(OracleUpsampler):
    """Test-only upsampler: the true image with ``DELTA_L`` added to every pixel's L* (a* and b* kept)."""

    name = "planted"

    def make(self, inp: UpsampleInput) -> torch.Tensor:
        lab = srgb_to_lab(inp.truth.permute(1, 2, 0).double().numpy())
        lab[..., 0] += DELTA_L
        return torch.from_numpy(lab_to_srgb(lab)).permute(2, 0, 1).float()


def test_lab_round_trip():
    from skimage.color import lab2rgb  # independent inverse

    rgb = np.random.default_rng(0).random((64, 3))
    assert np.abs(lab_to_srgb(srgb_to_lab(rgb)) - rgb).max() < 1e-9
    lab = srgb_to_lab(rgb)
    # skimage rounds the sRGB matrix and D65 white differently in the 4th digit: 1.4e-3 here
    assert np.abs(lab_to_srgb(lab) - lab2rgb(lab[None])[0]).max() < 2e-3


def planted_shift(truth: np.ndarray, predictor: Path) -> float:
    """ΔITA° the planted L* shift must cause on one true image: from its median skin L*, b* and the ITA formula."""
    face = main_face(truth, predictor)
    colour = measure_skin(truth, skin_mask(truth.shape[:2], face.landmarks))
    return float(ita_degrees(colour.lab[0] + DELTA_L, colour.lab[2]) - colour.ita)


def test_planted_lightening_is_detected_with_covering_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "build_upsampler", lambda *args, **kwargs: PlantedLightening(64))
    faces, _ = split_inputs(audit_demo(tmp_path, "planted", upsampler="oracle", resolution=64))
    rows = faces[faces["delta_ita"].notna()]
    assert len(rows) >= 50
    predictor = build_classifier("skin-tone").predictor
    planted = np.mean([planted_shift(np.asarray(Image.open(tmp_path / "planted" / path)), predictor)
                       for path in rows["path_truth"]])
    assert planted > 2  # the planted change is a lightening of several degrees
    shift = PairedShift(rows, "delta_ita", name="ΔITA", unit="°", n_boot=2000)
    mean = shift.frame.overall.loc["mean"]
    assert mean["value"] > 0 and mean["ci_low"] > 0
    assert mean["ci_low"] <= planted <= mean["ci_high"], (planted, mean)
    band = AttributeAudit.from_run(faces, "ita_band", "skin-tone", truth="in", n_boot=200)
    tests = report_tests(shift, band, method="holm").set_index("name")
    wilcoxon = tests.loc["ΔITA: shift ≠ 0, all inputs"]
    assert wilcoxon["reject"] and wilcoxon["effect"] > 0


# ------------------------------------------------------------------------------------------------ (c) prior shift
def family_specs(family: str) -> dict[str, float]:
    """``shifted:FOLDER`` spec → alpha for every member of a committed prior-shift family."""
    members = json.loads((GENERATORS / family / "family.json").read_text())["members"]
    return {f"shifted:{GENERATORS / family / m['name']}": m["alpha"] for m in members}


def paired_effect(rows: pd.DataFrame, side: int) -> pd.Series:
    """Per (average face, sample): output ITA of the largest alpha minus that of the smallest, at one LR side. The
    two outputs share the input and the search seed (derived from the input key and sample), so the difference
    removes the large between-input spread of ITA."""
    table = rows[rows["side"] == side].pivot_table(index=["item_id", "sample"], columns="dose", values="ita_aligned")
    return (table[table.columns.max()] - table[table.columns.min()]).dropna()


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one CPU thread for the searches (tiny batches: a second thread only adds synchronisation)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shift_rows(one_thread) -> pd.DataFrame:
    """PULSE outputs of every member of the 32 px prior-shift family on the demo's average faces at 2×2 and 8×8."""
    specs = {spec: alpha for spec, alpha in family_specs(SHIFT_FAMILY).items() if alpha in SHIFT_ALPHAS}
    assert len(specs) == len(SHIFT_ALPHAS)
    return dose_response(specs, (UNINFORMATIVE_SIDE, INFORMATIVE_SIDE), SAMPLES, SearchConfig(steps=STEPS),
                         columns=("ita_aligned",))


def test_prior_shift_moves_uninformative_outputs_in_order(shift_rows):
    units = unit_means(shift_rows[shift_rows["side"] == UNINFORMATIVE_SIDE]).sort_values("dose")
    assert (units["ita_aligned_measured"] * units["outputs"] >= MIN_MEASURED).all(), units
    assert np.all(np.diff(units["ita_aligned"].to_numpy()) > 0), units  # larger alpha, lighter outputs
    effect = paired_effect(shift_rows, UNINFORMATIVE_SIDE)
    assert len(effect) >= MIN_MEASURED and effect.mean() > 0
    assert stats.wilcoxon(effect, alternative="greater").pvalue < 0.01, effect.describe()


def test_prior_shift_effect_attenuates_as_the_input_becomes_informative(shift_rows):
    uninformative, informative = paired_effect(shift_rows, UNINFORMATIVE_SIDE), paired_effect(shift_rows,
                                                                                              INFORMATIVE_SIDE)
    assert informative.mean() < uninformative.mean() / 2, (uninformative.mean(), informative.mean())
    drop = (uninformative - informative).dropna()  # same average face and seed at both sides
    assert stats.wilcoxon(drop, alternative="greater").pvalue < 0.05, drop.describe()


# ------------------------------------------------------------------------------------------------ (d) trained 3 × 3
@pytest.fixture(scope="module")
def trained_rows(one_thread) -> pd.DataFrame:
    """PULSE outputs of the nine skew-trained generators (3 compositions × 3 seeds) at 2×2 and 8×8."""
    specs = {f"dcgan-file:{folder}": share for folder, (share, _) in trained_generators().items()}
    assert len(specs) == 9
    return dose_response(specs, (UNINFORMATIVE_SIDE, INFORMATIVE_SIDE), SAMPLES, SearchConfig(steps=STEPS),
                         columns=("ita_aligned",))


def composition_trend(rows: pd.DataFrame, side: int):
    """Regression of each generator's mean output ITA on its training light share (nine units, t test on 7 df)."""
    units = unit_means(rows[rows["side"] == side])
    return units, stats.linregress(units["dose"], units["ita_aligned"])


def test_training_composition_beats_seed_to_seed_variation_on_uninformative_inputs(trained_rows):
    units, fit = composition_trend(trained_rows, UNINFORMATIVE_SIDE)
    assert (units["ita_aligned_measured"] * units["outputs"] >= MIN_MEASURED).all(), units
    by_share = units.groupby("dose")["ita_aligned"].mean()
    assert np.all(np.diff(by_share.to_numpy()) > 0), by_share  # light-trained lighter than balanced than dark
    assert fit.slope > 0 and fit.pvalue / 2 < 0.05, (fit, units)  # one-sided: the known direction


def test_training_composition_effect_attenuates_as_the_input_becomes_informative(trained_rows):
    _, uninformative = composition_trend(trained_rows, UNINFORMATIVE_SIDE)
    _, informative = composition_trend(trained_rows, INFORMATIVE_SIDE)
    assert informative.slope < uninformative.slope / 2, (uninformative, informative)


# ------------------------------------------------------------------------------------------------ (e) the study page
def study_runs(rows: pd.DataFrame, design: str) -> list:
    """The rows of (c) or (d) as study runs: one per generator and LR side, the average faces as the uninformative
    inputs (each (average face, seed) a unit), ×16 for 2×2 and ×4 for 8×8 of these 32 px generators."""
    from audit.metrics.columns import ITEM, SAMPLE, value_column
    from audit.metrics.study import StudyRun

    runs = []
    for (spec, side), group in rows.groupby(["generator", "side"], sort=False):
        ucpr = pd.DataFrame({ITEM: group["item_id"].astype(str), SAMPLE: group["sample"],
                             value_column("out", "skin-tone-aligned", "ita"): group["ita_aligned"]})
        inputs = json.dumps({"dataset": "demo average faces"})
        runs.append(StudyRun(f"{Path(spec.split(':', 1)[1]).name}-{side}px", pd.DataFrame(), ucpr, "pulse", spec,
                             32 // side, 32, inputs, float(group["dose"].iloc[0]), design))
    return runs


def test_the_study_page_states_the_known_answers(shift_rows, trained_rows):
    """The study's first screen (primary family: aligned-frame output ITA per design and factor, Holm over the
    four) on the outputs of (c) and (d): the prior shift is found at ×16 with a positive slope, and for both designs
    the ×16 slope is positive and more than twice the ×4 one (the input pins the colour at ×4)."""
    from reports.analysis import Settings
    from reports.study import build_study

    runs = study_runs(shift_rows, "shift") + study_runs(trained_rows, "composition")
    study = build_study(runs, Settings(n_boot=200), baseline=runs[0].name)
    primary = {(t["design"], t["factor"]): t for t in study["trends"] if t["role"] == "primary"}
    assert set(primary) == {(d, f) for d in ("shift", "composition") for f in (4, 16)}
    assert {t["metric"] for t in primary.values()} == {"ucpr_ita_aligned"}
    assert all(t["test"]["family_size"] == 4 for t in primary.values())
    shift = primary["shift", 16]
    assert shift["test"]["verdict"] == "finding" and shift["test"]["effect"] > 0, shift["sentence"]
    assert shift["test"]["adjusted_ci_low"] > 0 and "rises with the dose" in shift["sentence"]
    lead = next(text for text in study["answer"]["lead"] if text.startswith("One generator"))
    assert "follows the dose at ×16" in lead
    for design in ("shift", "composition"):
        top, low = primary[design, 16]["test"]["effect"], primary[design, 4]["test"]["effect"]
        assert top > 0 and top > 2 * low, (design, top, low)
