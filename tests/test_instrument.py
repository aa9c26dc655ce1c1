"""Skin-tone instrument validation, the detector-free aligned measurement and the missing-data bounds.

References are independent: skimage's CIELAB conversion, a flat-colour face whose ITA° is known from skimage,
and a simulated missing-not-at-random toy whose full mean is known. ≈ 15 s on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from skimage.color import lab2rgb, rgb2lab

from audit.classifiers import build_classifier
from audit.classifiers.skin_tone import ita_change, lab_to_srgb, srgb_to_lab
from audit.classifiers.skin_tone_aligned import (
    DEFAULT_FRAME,
    FaceFrame,
    default_frame,
    measure_in_frame,
    read_frame,
)
from audit.classifiers.skin_tone_validation import (
    recolour,
    summarise_planted,
    validate_skin_tone,
    validation_faces,
)
from audit.metrics.missing import (
    delta_adjusted_mean,
    detection_rates,
    missing_sensitivity,
    mnar_bounds,
    tipping_delta,
)
from pulse_engine.errors import WeightsError


def skimage_ita(rgb: np.ndarray) -> float:
    lab = rgb2lab(np.asarray(rgb, dtype=np.float64)[None, None] / 255.0, illuminant="D65")[0, 0]
    return float(np.degrees(np.arctan2(lab[0] - 50.0, lab[2])))


def test_lab_to_srgb_inverts_and_matches_skimage():
    rng = np.random.default_rng(0)
    rgb = rng.random((500, 3))
    assert np.abs(lab_to_srgb(srgb_to_lab(rgb)) - rgb).max() < 1e-9
    lab = rgb2lab(rgb)
    # skimage's D65 white differs in the 4th digit from the one derived from the sRGB chromaticities
    assert np.abs(lab_to_srgb(lab) - lab2rgb(lab)).max() < 3e-3


def test_recolour_shifts_lab_by_the_planted_amount():
    rng = np.random.default_rng(1)
    image = rng.integers(90, 200, (32, 32, 3), dtype=np.uint8)
    region = np.zeros((32, 32), bool)
    region[8:24, 8:24] = True
    out = recolour(image, region, -6.0, 4.0)
    assert (out[~region] == image[~region]).all()
    moved = rgb2lab(out[region] / 255.0) - rgb2lab(image[region] / 255.0)
    # 8-bit rounding moves each pixel by < 1 unit; the median shift is the planted one
    assert np.median(moved[:, 0]) == pytest.approx(-6.0, abs=0.3)
    assert np.median(moved[:, 2]) == pytest.approx(4.0, abs=0.3)


def test_ita_change_wraps():
    assert ita_change(-170.0, 170.0) == pytest.approx(20.0)
    assert ita_change(170.0, -170.0) == pytest.approx(-20.0)
    assert ita_change(30.0, 10.0) == pytest.approx(20.0)


def flat_face(frame: FaceFrame, side: int, skin: tuple[int, int, int]) -> np.ndarray:
    """A grey image whose frame skin regions (dilated) are one flat sRGB colour."""
    image = np.full((side, side, 3), 40, np.uint8)
    mask = frame.mask(side)
    grown = mask.copy()
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            grown |= np.roll(np.roll(mask, dy, 0), dx, 1)
    image[grown] = skin
    return image


@pytest.mark.parametrize("skin", [(224, 172, 140), (141, 85, 60), (70, 45, 35)])
def test_aligned_measure_equals_known_colour_at_every_size(skin):
    frame = default_frame()
    expected = skimage_ita(np.array(skin))
    for side in (32, 64, 256):
        prediction = measure_in_frame(flat_face(frame, side, skin), frame)
        assert prediction.values["ita"] == pytest.approx(expected, abs=0.05), side


def test_aligned_classifier_and_frame_file():
    classifier = build_classifier("skin-tone-aligned")
    assert classifier.card.weights_sha256
    faces = validation_faces(limit=4, portraits=False)
    predictions = classifier.predict([f.image for f in faces])
    assert all(p.face_found and "ita" in p.values for p in predictions)  # no detector: always measured
    frame = read_frame(DEFAULT_FRAME)
    assert frame.faces > 300 and frame.landmarks.shape == (68, 2)
    assert 0.0 < frame.landmarks.min() and frame.landmarks.max() < 1.1  # the chin may sit below the image
    assert frame.mask(64).sum() > 150


def test_read_frame_rejects_bad_files(tmp_path):
    bad = tmp_path / "frame.json"
    bad.write_text(json.dumps({"schema": "pulse-audit-face-frame/1", "landmarks": [[0.5, 0.5]] * 5}))
    with pytest.raises(WeightsError, match="68 finite landmarks"):
        read_frame(bad)
    bad.write_text("{not json")
    with pytest.raises(WeightsError, match="not a face-frame file"):
        read_frame(bad)


@pytest.fixture(scope="module")
def validation():
    faces = validation_faces(limit=8, portraits=True)
    return validate_skin_tone(faces, sides=(32, 64, 256), shifts=((-8.0, 0.0), (0.0, 0.0), (8.0, 0.0),
                                                                   (0.0, 5.0)), n_boot=200)


def test_planted_recolour_is_recovered_with_slope_one(validation):
    for row in validation["planted"]:
        assert row["pairs"] >= 20, row
        # the real response on these faces: slope within 0.85–1.15 and |bias| < 2° (measured: 0.94–1.08, < 0.8°)
        assert 0.85 < row["slope"] < 1.15, row
        assert abs(row["bias"]) < 2.0, row
        assert row["slope_ci"][0] <= row["slope"] <= row["slope_ci"][1]


def test_resolution_invariance_within_bound(validation):
    for row in validation["resolution"]:
        # paired change from 256 px to any size: mean within 1°, largest single face within 8°
        assert abs(row["paired_difference"]) < 1.0, row
        assert row["max_abs_difference"] < 8.0, row
        if row["instrument"] == "skin-tone-aligned":
            assert row["share_measured"] == 1.0 and row["selection"] == 0.0


def test_detector_and_aligned_agree_on_aligned_faces(validation):
    for row in validation["agreement"]:
        assert row["both"] >= 5
        assert row["correlation"] > 0.9, row
        assert abs(row["mean_difference"]) < 5.0, row


def test_summarise_planted_matches_scipy_regression():
    from scipy import stats

    rng = np.random.default_rng(3)
    rows = []
    for face in range(12):
        for planted in (-10.0, -5.0, 0.0, 5.0, 10.0):
            rows.append({"instrument": "skin-tone", "side": 64, "face": f"f{face}", "b_star": 15.0,
                         "planted": planted, "measured": 0.8 * planted + 1.0 + rng.normal(0, 1)})
    (row,) = summarise_planted(rows, n_boot=300)
    fit = stats.linregress([r["planted"] for r in rows], [r["measured"] for r in rows])
    assert row["slope"] == pytest.approx(fit.slope, rel=1e-9)
    assert row["intercept"] == pytest.approx(fit.intercept, rel=1e-9)
    assert row["slope_ci"][0] < 0.8 < row["slope_ci"][1]
    assert row["bias"] == pytest.approx(np.mean([r["measured"] - r["planted"] for r in rows]))


# ------------------------------------------------------------------ missing not at random


def test_mnar_bounds_and_tipping_on_a_toy_with_known_answer():
    rng = np.random.default_rng(5)
    full = rng.normal(2.0, 5.0, 4000)
    # missing not at random: the lowest 20 % are the ones the detector loses
    values = np.where(full < np.quantile(full, 0.2), np.nan, full)
    bounds = mnar_bounds(values, low=full.min(), high=full.max())
    assert bounds["missing_share"] == pytest.approx(0.2)
    assert bounds["lower"] <= full.mean() <= bounds["upper"]
    assert bounds["mean_observed"] > full.mean()  # complete-case mean is biased upward
    # the delta adjustment at the true offset of the missing values recovers the full mean exactly
    true_delta = full[np.isnan(values)].mean() - np.nanmean(values)
    assert delta_adjusted_mean(values, true_delta) == pytest.approx(full.mean(), abs=1e-9)
    tip = tipping_delta(values, target=0.0)
    assert delta_adjusted_mean(values, tip) == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(tipping_delta(full))  # nothing missing: no δ moves the mean


def test_detection_rates_and_sensitivity_table():
    from statsmodels.stats.proportion import proportion_confint

    data = pd.DataFrame({"group": ["a"] * 10 + ["b"] * 10,
                         "value": [1.0] * 9 + [np.nan] + [3.0] * 5 + [np.nan] * 5})
    rates = detection_rates(data, data["value"].notna(), ["group"]).set_index("group")
    assert rates.loc["a", "rate"] == 0.9 and rates.loc["b", "rate"] == 0.5 and rates.loc["all", "measured"] == 14
    low, high = proportion_confint(5, 10, method="wilson")
    assert rates.loc["b", "ci_low"] == pytest.approx(low) and rates.loc["b", "ci_high"] == pytest.approx(high)
    table = missing_sensitivity(data, "value", ["group"], deltas=(-2.0, 0.0)).set_index("group")
    assert table.loc["b", "lower"] == pytest.approx(0.5 * 3 + 0.5 * 1)  # missing set to the overall minimum
    assert table.loc["b", "upper"] == pytest.approx(3.0)
    assert table.loc["b", "mean_at_-2"] == pytest.approx(2.0)
    assert table.loc["a", "tipping_delta"] == pytest.approx(-10.0)


# ------------------------------------------------------------------ re-encoding baseline


def test_jpeg_baseline_is_near_but_not_equal_to_the_truth():
    import io

    import torch
    from PIL import Image

    from audit.core.records import UpsampleInput
    from audit.upsamplers import JPEG_QUALITY, build_upsampler
    from audit.vision.images import to_image, to_tensor

    face = validation_faces(limit=1, portraits=False)[0].image
    truth = to_tensor(Image.fromarray(face))
    upsampler = build_upsampler("jpeg", resolution=64)
    (out, again), = upsampler.upsample([UpsampleInput("f", truth[:, ::4, ::4], truth)], 2)
    # independent path: PIL encode/decode of the same 8-bit image
    buffer = io.BytesIO()
    to_image(truth).save(buffer, "JPEG", quality=JPEG_QUALITY)
    expected = to_tensor(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert torch.equal(out.image, expected) and torch.equal(again.image, out.image)
    error = (out.image - truth).abs()
    assert 0 < error.mean() < 0.02  # a real, small re-encoding change


def test_validate_instrument_command_writes_json(tmp_path):
    from typer.testing import CliRunner

    from audit.commands.cli import app

    done = CliRunner().invoke(app, ["validate-instrument", "--faces", "2", "--n-boot", "100", "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "validation.json").read_text())
    assert {r["instrument"] for r in result["resolution"]} == {"skin-tone", "skin-tone-aligned"}
    assert "slope" in done.output and "selection" in done.output


# ------------------------------------------------------------------ report sections


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from synthetic_run import Plant, synthetic_run

    from reports.run_data import load_run

    root = synthetic_run(tmp_path_factory.mktemp("instrument") / "run", inputs=70, samples=2,
                         plant=Plant(no_face=0.2))
    return load_run(root)


def test_scope_notices_say_what_is_not_measured(synthetic):
    import copy

    from reports.instrument import scope_section

    scope = scope_section(synthetic)
    assert scope["race_classifiers"] and not scope["notices"]
    blind = copy.copy(synthetic)
    blind.meta = {**synthetic.meta, "classifiers": [c for c in synthetic.meta["classifiers"]
                                                    if "race" not in c.get("attributes", {})]}
    notices = scope_section(blind)["notices"]
    assert any("No perceived-race classifier" in n and "doctor" in n for n in notices)
    assert any("grouped by their race label" in n and "never measured" in n for n in notices)


def test_headline_and_missing_sections_match_pandas(synthetic):
    from reports.analysis import Settings
    from reports.instrument import SAME_PERSON, headline_section, missing_section

    settings = Settings(n_boot=200)
    faces = synthetic.faces
    headline = headline_section(synthetic, settings)
    assert {"search_success", "delta_ita", "identity_preserved"} <= set(headline["metrics"])
    cell = headline["cells"]["all|identity_preserved"]
    distance = faces["identity_distance"].dropna()
    assert cell["value"] == pytest.approx((distance < SAME_PERSON).mean()) and cell["n"] == len(distance)
    assert headline["cells"]["all|search_success"]["value"] == pytest.approx(faces["ups_success"].mean())
    assert headline["cells"]["Black|delta_ita"]["value"] == pytest.approx(
        faces.loc[faces["label_race"] == "Black", "delta_ita"].mean())
    missing = missing_section(synthetic, settings)
    outputs = {r["group"]: r for r in missing["rates"]["outputs"]}
    assert outputs["all"]["rate"] == pytest.approx(faces["out_skin-tone_face"].mean())
    assert outputs["all"]["rate"] < 0.9  # 20 % of faces planted as missed
    row = next(r for r in missing["sensitivity"] if r["group"] == "all")
    assert row["lower"] <= row["mean_observed"] <= row["upper"]


def test_baseline_section_summarises_the_baseline_by_the_runs_groups(synthetic):
    from reports.analysis import Settings
    from reports.instrument import baseline_section, headline_section

    settings = Settings(n_boot=200)
    assert baseline_section(synthetic, None, settings) is None
    same = baseline_section(synthetic, synthetic, settings)
    assert same["cells"] == headline_section(synthetic, settings)["cells"]
    assert same["upsampler"] == "pulse" and not same["zero_by_construction"]
