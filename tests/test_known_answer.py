"""Known-answer tests: audits run through the real harness (``run_audit`` → run store → metrics → statistics) on
the embedded demo set with the ``skin-tone`` measurement, where we know what the answer must be.

(a) ``oracle`` returns the true image: no attribute may shift significantly after Holm correction.
(b) A planted upsampler adds a known ΔL* to every pixel of the true image: the audit must find a lightening (ΔITA > 0,
    significant) whose bootstrap interval of mean ΔITA covers the planted value, computed independently of the
    harness from the colour formula: ITA(L* + ΔL*, b*) − ITA(L*, b*) at each face's measured median L*, b*.
(c) PULSE over the committed skew-trained generators (``datasets/generators``, 85 % light vs 85 % dark training faces,
    32 px) on the same LR inputs: the light-trained one's outputs are significantly lighter (paired Wilcoxon on
    per-input ITA and Monk index, Holm over the two), and on uninformative inputs (per-group average faces, UCPR) the
    light-trained one gives a larger share of 'light' outputs (above the training source's upper ITA tercile; χ² test
    on the generator × {light, not light} table).

    Both run at ×16 (32 px → 2×2), the regime of PULSE's own 16 → 1024 px use (×64), where the LR image leaves the
    skin colour to the generator. At ×4 and ×8 (8×8 and 4×4 LR), the light- and dark-trained generators give the same
    skin tone on the same inputs (measured with 100 steps, seed 0: paired mean ΔITA +1.7° at ×4 and −0.2° at ×8,
    Wilcoxon p 0.54 and 0.76; on 4×4 average faces light shares 0.77 vs 0.69, χ² p 0.22, and 0.76 vs 0.76 at seed 1):
    matching the LR image within eps pins the colour of 4×4 blocks, so for a 32 px generator a 4×4 average face is
    not uninformative. Hence UNINFORMATIVE_SIDE = 2 here rather than the harness's 4×4 UCPR inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import audit.harness as harness
from audit.classifiers import build_classifier
from audit.classifiers.skin_tone import D65_WHITE, SRGB_TO_XYZ, ita_degrees, measure_skin, skin_mask, srgb_to_lab
from audit.faces import main_face
from audit.harness import AuditConfig, run_audit
from audit.images import to_image
from audit.inputs import average_faces, load_faceset, low_of
from audit.metrics import AttributeAudit, PairedShift, mean_per_input
from audit.metrics.columns import split_inputs, value_column
from audit.records import UpsampleInput
from audit.run_store import read_results
from audit.stats import chi2_independence, report_tests, wilcoxon_signed_rank
from audit.upsamplers import OracleUpsampler, PulseUpsampler
from pulse_engine.generators import load_generator
from pulse_engine.search import SearchConfig

REPO = Path(__file__).resolve().parents[1]
GENERATORS = REPO / "datasets" / "generators"
DELTA_L = 8.0
"""Planted lightening: CIELAB L* units added to every pixel."""
ITA_OUT = value_column("out", "skin-tone", "ita")
PULSE_FACTOR = 16
"""×16 (32 px → 2×2) for the skew tests; at ×4 and ×8 PULSE pins the skin colour (see the module docstring)."""
UNINFORMATIVE_SIDE = 2
UCPR_SAMPLES = 20


def audit_demo(root: Path, name: str, factor: int = 4, **options: object) -> pd.DataFrame:
    """Run the harness on every demo face (grouped by skin tone) with the skin-tone measurement; the run table."""
    config = AuditConfig(dataset="demo", classifiers=("skin-tone",), per_group=0, group_by=("skin_tone",),
                         factor=factor, device="cpu", out=str(root / name), **options)
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
def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of ``srgb_to_lab``: (..., 3) CIELAB (D65) → gamma-encoded sRGB in [0, 1] (clipped to the gamut)."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    delta = 6 / 29
    xyz = np.where(f > delta, f ** 3, 3 * delta ** 2 * (f - 4 / 29)) * D65_WHITE
    linear = np.clip(xyz @ np.linalg.inv(SRGB_TO_XYZ).T, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


class PlantedLightening(OracleUpsampler):
    """Test-only upsampler: the true image with ``DELTA_L`` added to every pixel's L* (a* and b* kept)."""

    name = "planted"

    def make(self, inp: UpsampleInput) -> torch.Tensor:
        lab = srgb_to_lab(inp.truth.permute(1, 2, 0).double().numpy())
        lab[..., 0] += DELTA_L
        return torch.from_numpy(lab_to_srgb(lab)).permute(2, 0, 1).float()


def test_lab_round_trip():
    rgb = np.random.default_rng(0).random((64, 3))
    assert np.abs(lab_to_srgb(srgb_to_lab(rgb)) - rgb).max() < 1e-9


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


# ------------------------------------------------------------------------------------------------ (c) skew
def monk_index(labels: pd.Series) -> pd.Series:
    """``MST1``…``MST10`` → 1…10 (NaN without a face)."""
    return pd.to_numeric(labels.astype(str).str.removeprefix("MST"), errors="coerce")


def uninformative_inputs(resolution: int) -> list[UpsampleInput]:
    """UCPR inputs for a ``resolution`` px generator: the demo set's per-skin-tone-group average faces at
    :data:`UNINFORMATIVE_SIDE` px (no truth)."""
    items = [item for item in load_faceset("demo").items if item.labels.get("skin_tone")]
    averages = average_faces(items, ("skin_tone",), resolution)
    return [UpsampleInput(f"ucpr/{group}", low_of(average, resolution // UNINFORMATIVE_SIDE))
            for group, average in averages.items()]


@pytest.fixture(scope="module")
def skew_runs(tmp_path_factory) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """Per generator: the harness's run table of PULSE on every demo face (×16: 32 px → 2×2, one seeded sample per
    input, PULSE's 100 steps) and the ITA° of its outputs on the uninformative inputs (NaN: no face measured)."""
    root, tone = tmp_path_factory.mktemp("skew"), build_classifier("skin-tone")
    inputs = uninformative_inputs(32)
    runs = {}
    for name in ("light-skewed", "dark-skewed"):
        spec = f"dcgan-file:{GENERATORS / name}"
        torch.set_num_threads(2)
        faces, _ = split_inputs(audit_demo(root, name, upsampler="pulse", generator=spec, factor=PULSE_FACTOR,
                                           restarts=1, batch_size=64))
        outputs = PulseUpsampler(load_generator(spec), SearchConfig(seed=0), 64).upsample(inputs, UCPR_SAMPLES)
        images = [np.asarray(to_image(out.image)) for row in outputs for out in row]
        ita = [prediction.values.get("ita", np.nan) for prediction in tone.predict(images)]
        runs[name] = faces, np.array(ita, float)
    return runs


def test_light_trained_outputs_are_lighter_on_the_same_inputs(skew_runs):
    ita = {name: mean_per_input(faces, ITA_OUT) for name, (faces, _) in skew_runs.items()}
    monk = {name: monk_index(faces.set_index("item_id")["out_skin-tone_monk"])
            for name, (faces, _) in skew_runs.items()}
    d_ita = (ita["light-skewed"] - ita["dark-skewed"]).dropna()
    d_monk = (monk["light-skewed"] - monk["dark-skewed"]).dropna()
    assert len(d_ita) >= 40
    tests = [wilcoxon_signed_rank(d_ita, "ITA light − dark", "°"), wilcoxon_signed_rank(d_monk, "Monk light − dark")]
    table = report_tests(tests, method="holm")
    assert table["reject"].all(), table[["name", "p_value", "p_adjusted", "effect"]]
    assert d_ita.mean() > 0 and tests[0].effect > 0
    assert d_monk.mean() < 0  # lighter = lower Monk index


def test_uninformative_inputs_lean_towards_training_composition(skew_runs):
    card = json.loads((GENERATORS / "light-skewed" / "card.json").read_text())
    light_cut = card["training_data"]["source"]["ita_cut_points_deg"]["upper_tercile"]
    counts = []
    for name in ("light-skewed", "dark-skewed"):
        values = skew_runs[name][1]
        values = values[np.isfinite(values)]
        assert len(values) >= 60, f"{name}: only {len(values)} uninformative outputs with a measurable face"
        counts.append([int((values > light_cut).sum()), int((values <= light_cut).sum())])
    shares = [light / (light + rest) for light, rest in counts]
    test = chi2_independence(np.array(counts), "UCPR: share of light outputs by generator")
    assert shares[0] > shares[1] and test.p_value < 0.05, (counts, test)
