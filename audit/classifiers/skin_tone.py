"""``skin-tone``: a model-free measurement of skin colour, ITA° and the nearest Monk swatch.

Pipeline for one image: the largest face (dlib HOG, see :mod:`audit.vision.faces`) → 68 landmarks →
skin mask of both cheeks and the lower forehead, with eyes, brows, nostrils and mouth cut out
(:func:`skin_mask`), drawn on the detector's working image (enlarged bicubically to ≥ 256 px, so that
a 32 px face gets the same sub-pixel region as a 256 px one) → sRGB → CIELAB (D65) per pixel
(:func:`srgb_to_lab`) → robust outlier removal (hair, highlights, deep shadows) → median L*, a*, b* → ITA° =
atan2(L* − 50, b*)·180/π of
the **median** L* and b* (not the median of per-pixel ITA) → one of the 6 ITA bands and the Monk
swatch nearest in CIE76 ΔE (Euclidean distance in L*a*b*).

It is a measurement, not a classifier: the "probabilities" are one-hot. It depends on lighting,
white balance and exposure, and does no illumination correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pulse_engine.generators.checkpoint import sha256_file

from ..core.records import Classifier, ClassifierCard, Prediction
from ..vision.faces import PREDICTOR_68, landmark_model, main_face, missing_model_files, model_file

# ---------------------------------------------------------------- colour science (sRGB → CIELAB)
# sRGB (IEC 61966-2-1) primaries and D65 white as CIE 1931 xy chromaticities. The RGB → XYZ matrix
# is derived from them, so RGB white maps to the D65 white point exactly (a* = b* = 0).
_PRIMARIES_XY = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
D65_XY = (0.3127, 0.3290)


def _xy_to_xyz(xy: tuple[float, float]) -> np.ndarray:
    """XYZ with Y = 1 of a chromaticity (x, y)."""
    x, y = xy
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


D65_WHITE = _xy_to_xyz(D65_XY)
"""Reference white (Xn, Yn, Zn) = (0.95046, 1, 1.08906)."""
_primaries = np.stack([_xy_to_xyz(p) for p in _PRIMARIES_XY], axis=1)
SRGB_TO_XYZ = _primaries * np.linalg.solve(_primaries, D65_WHITE)
"""Linear sRGB → XYZ (rows X, Y, Z); ≈ [[0.4125, 0.3576, 0.1804], [0.2127, 0.7152, 0.0722], …]."""


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve: encoded values in [0, 1] → linear light in [0, 1]."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65, 2° observer) of sRGB colours.

    Args:
        rgb: (..., 3) uint8 in [0, 255] or float in [0, 1], gamma-encoded sRGB.

    Returns:
        (..., 3) float64 (L* in [0, 100], a*, b* roughly in [-128, 127]).
    """
    rgb = np.asarray(rgb)
    scaled = rgb / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    xyz = srgb_to_linear(scaled) @ SRGB_TO_XYZ.T
    t = xyz / D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(t > delta ** 3, np.cbrt(t), t / (3 * delta ** 2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """The inverse of :func:`srgb_to_lab`: (..., 3) CIELAB (D65) → gamma-encoded sRGB floats, clipped to [0, 1]
    (colours outside the sRGB gamut are clipped per channel)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    delta = 6.0 / 29.0
    xyz = np.where(f > delta, f ** 3, 3 * delta ** 2 * (f - 4.0 / 29.0)) * D65_WHITE
    linear = np.clip(xyz @ np.linalg.inv(SRGB_TO_XYZ).T, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def hex_to_rgb(code: str) -> np.ndarray:
    """``#rrggbb`` → (3,) uint8."""
    code = code.lstrip("#")
    return np.array([int(code[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)


def ita_degrees(lightness: np.ndarray | float, b_star: np.ndarray | float) -> np.ndarray | float:
    """Individual Typology Angle, in degrees in (−180, 180]: atan2(L* − 50, b*)·180/π.

    Equal to arctan((L* − 50)/b*) for b* > 0 (all real skin); atan2 keeps b* ≤ 0 finite.
    """
    return np.degrees(np.arctan2(np.asarray(lightness) - 50.0, b_star))


def ita_change(after: float, before: float) -> float:
    """ΔITA = ``after − before`` in degrees, wrapped into (−180, 180] (ITA° is an angle: crossing b* < 0 at
    L* = 50 must not read as a 360° change)."""
    change = float(after) - float(before)
    return change if -180.0 < change <= 180.0 else float(180.0 - (180.0 - change) % 360.0)


# ---------------------------------------------------------------- ITA bands and Monk swatches
ITA_BANDS = ("very light", "light", "intermediate", "tan", "brown", "dark")
ITA_LOWER_EDGES = (55.0, 41.0, 28.0, 10.0, -30.0)
"""Exclusive lower edges (degrees) of the first five bands (Chardon 1991 / Del Bino 2006);
"dark" is ITA ≤ −30°. A value on an edge falls in the darker band."""

MONK_HEX = ("#f6ede4", "#f3e7db", "#f7ead0", "#eadaba", "#d7bd96",
            "#a07e56", "#825c43", "#604134", "#3a312a", "#292420")
MONK_NAMES = tuple(f"MST{i}" for i in range(1, 11))
MONK_LAB = srgb_to_lab(np.stack([hex_to_rgb(code) for code in MONK_HEX]))
"""(10, 3) L*a*b* of the Monk swatches, converted from their hex codes with :func:`srgb_to_lab`."""


def ita_band(ita: float) -> str:
    """The ITA band of an angle in degrees (see :data:`ITA_LOWER_EDGES`)."""
    for band, edge in zip(ITA_BANDS, ITA_LOWER_EDGES):
        if ita > edge:
            return band
    return ITA_BANDS[-1]


def nearest_monk(lab: np.ndarray) -> str:
    """The Monk swatch nearest to an L*a*b* colour by CIE76 ΔE (Euclidean distance)."""
    distances = np.linalg.norm(MONK_LAB - np.asarray(lab, dtype=np.float64), axis=1)
    return MONK_NAMES[int(np.argmin(distances))]


# ---------------------------------------------------------------- skin mask and measurement
# dlib 68-point indices (0-based): jaw 0–16, brows 17–26, nose 27–35, eyes 36–47, mouth 48–67.
_CHEEKS = ((1, 2, 3, 4, 48, 31, 40, 41, 36), (15, 14, 13, 12, 54, 35, 47, 46, 45))
_CHEEK_SHRINK = 0.75   # cheek polygons are shrunk towards their centroid, away from jaw and nose
_FOREHEAD_SPAN = (19, 20, 21, 22, 23, 24)  # upper brow points under the forehead patch
_FOREHEAD_RISE = (0.12, 0.45)  # band from 0.12 to 0.45 × the brow-to-nose-base distance above brows
MIN_SKIN_PIXELS = 20
"""Fewer kept skin pixels than this (original resolution) and no colour is reported."""
OUTLIER_K = 2.5
"""Pixels farther than OUTLIER_K robust SDs (1.4826·MAD, at least 1 unit) from the median in L*,
a* or b* are dropped."""


def _shrink(points: np.ndarray, factor: float) -> np.ndarray:
    centre = points.mean(axis=0)
    return centre + (points - centre) * factor


def skin_mask(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of cheek and lower-forehead skin from 68 landmarks (x, y in px).

    Cheeks: polygons between the jaw, the mouth corner, the nose wing and the lower eyelid, shrunk
    by 25 % towards their centroids. Forehead: a band over the inner brows, rising from 0.12 to
    0.45 × the brow-to-nose-base (landmark 33) distance along the face's upward axis. Eyes (enlarged
    1.5×), brows, nostrils and lips are then removed.
    """
    if landmarks.shape != (68, 2):
        raise ValueError(f"the skin mask needs 68 landmarks, got an array of shape {landmarks.shape}")
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for cheek in _CHEEKS:
        draw.polygon([tuple(p) for p in _shrink(landmarks[list(cheek)], _CHEEK_SHRINK)], fill=1)
    brows = landmarks[list(_FOREHEAD_SPAN)]
    up = brows.mean(axis=0) - landmarks[33]
    height = np.hypot(*up)
    up = up / max(height, 1e-9)
    low, high = (brows + up * height * r for r in _FOREHEAD_RISE)
    draw.polygon([tuple(p) for p in np.concatenate([low, high[::-1]])], fill=1)
    eye_width = max(np.hypot(*(landmarks[45] - landmarks[42])), 1.0)
    for eye in (landmarks[36:42], landmarks[42:48]):
        draw.polygon([tuple(p) for p in _shrink(eye, 1.5)], fill=0)
    for brow in (landmarks[17:22], landmarks[22:27]):
        draw.line([tuple(p) for p in brow], fill=0, width=max(round(eye_width * 0.35), 1))
    draw.polygon([tuple(p) for p in landmarks[31:36]], fill=0)
    draw.polygon([tuple(p) for p in landmarks[48:60]], fill=0)
    return np.asarray(canvas, dtype=bool)


@dataclass(frozen=True)
class SkinColour:
    """Median skin colour of a mask.

    Attributes:
        lab: median (L*, a*, b*) of the kept pixels.
        ita: ITA° of the median L* and b*, degrees.
        pixels: skin pixels kept after outlier removal.
        masked: pixels in the mask before outlier removal.
    """

    lab: tuple[float, float, float]
    ita: float
    pixels: int
    masked: int


def measure_skin(image: np.ndarray, mask: np.ndarray, outlier_k: float | None = OUTLIER_K) -> SkinColour:
    """Median CIELAB colour and ITA° of the ``mask`` pixels of an (H, W, 3) uint8 sRGB image.

    Args:
        outlier_k: robust-SD cut-off for outlier removal (see :data:`OUTLIER_K`); None keeps all.
    """
    lab = srgb_to_lab(image[mask])
    keep = np.ones(len(lab), dtype=bool)
    if outlier_k is not None and len(lab):
        median = np.median(lab, axis=0)
        spread = np.maximum(1.4826 * np.median(np.abs(lab - median), axis=0), 1.0)
        keep = np.all(np.abs(lab - median) <= outlier_k * spread, axis=1)
    if not keep.any():
        return SkinColour((np.nan, np.nan, np.nan), np.nan, 0, len(lab))
    lightness, a_star, b_star = np.median(lab[keep], axis=0)
    return SkinColour((float(lightness), float(a_star), float(b_star)),
                      float(ita_degrees(lightness, b_star)), int(keep.sum()), len(lab))


def colour_prediction(colour: SkinColour, scale: int) -> Prediction:
    """The Prediction of a face's skin colour measured on an image enlarged ``scale`` times: ITA band and
    Monk swatch (one-hot), ``ita``, ``L``, ``a``, ``b`` and ``skin_pixels`` (kept pixels in original-image
    units, i.e. divided by scale²); an error when fewer than :data:`MIN_SKIN_PIXELS` remain."""
    pixels = colour.pixels / scale ** 2
    if pixels < MIN_SKIN_PIXELS:
        return Prediction(face_found=True, values={"skin_pixels": float(pixels)},
                          error=f"only {pixels:.0f} skin pixels (< {MIN_SKIN_PIXELS})")
    band, monk = ita_band(colour.ita), nearest_monk(np.array(colour.lab))
    return Prediction(
        face_found=True,
        probabilities={"ita_band": {k: float(k == band) for k in ITA_BANDS},
                       "monk": {k: float(k == monk) for k in MONK_NAMES}},
        values={"ita": colour.ita, "L": colour.lab[0], "a": colour.lab[1], "b": colour.lab[2],
                "skin_pixels": float(pixels)})


# ---------------------------------------------------------------- the classifier
_LIMITS = (
    "A measurement, not a trained classifier: probabilities are one-hot. The colour of skin in a "
    "photo depends on lighting, white balance, exposure, compression and make-up; no illumination "
    "correction is done, so ITA° is not a constitutive skin colour. Compare groups captured under "
    "similar conditions, and calibrate band thresholds per dataset before putting them in a model "
    "card. The ITA bands come from dermatology (measured with colorimeters on skin), not from "
    "photographs; Monk matching is to the nearest swatch by CIE76 ΔE of the sRGB hex codes. "
    f"No colour is reported when fewer than {MIN_SKIN_PIXELS} skin pixels remain (tiny or occluded "
    "faces). Faces come from dlib's HOG detector; its misses are reported as 'no face'.")


class SkinTone(Classifier):
    """ITA° band and Monk swatch of the largest face (see the module docstring)."""

    name = "skin-tone"
    attributes = {"ita_band": ITA_BANDS, "monk": MONK_NAMES}

    def __init__(self, predictor: Path) -> None:
        landmark_model(predictor, 68)  # a wrong or broken file fails here, not on the first image
        self.predictor = predictor
        self.card = ClassifierCard(
            name=self.name,
            model="ITA° (median L*, b*) and nearest Monk swatch over a dlib 68-landmark cheek + "
                  "forehead mask; no learned weights",
            training_data="none; landmarks: dlib 68-point model trained on iBUG 300-W",
            licence="code MIT; landmark model CC0 (davisking/dlib-models); iBUG 300-W images are "
                    "research-only (unverified)",
            limits=_LIMITS, weights=(str(predictor),), weights_sha256=(sha256_file(predictor),))

    def predict_one(self, image: np.ndarray) -> Prediction:
        """Measure one (H, W, 3) uint8 RGB image. Values: ``ita`` (degrees), ``L``, ``a``, ``b``
        (median skin CIELAB), ``skin_pixels`` (kept pixels, original resolution)."""
        face = main_face(image, self.predictor)
        if face is None:
            return Prediction(face_found=False)
        colour = measure_skin(face.work_image, skin_mask(face.work_image.shape[:2], face.work_landmarks))
        return colour_prediction(colour, face.scale)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [self.predict_one(image) for image in images]


def missing_assets(weights: Path | None) -> list[str]:
    """Missing files: the 68-point landmark model (``weights`` overrides its path)."""
    return missing_model_files((PREDICTOR_68,), weights)


def build(weights: Path | None, device: str) -> SkinTone:
    """The skin-tone measurement; ``weights`` is an optional 68-point predictor file, ``device``
    is ignored (dlib runs on the CPU)."""
    del device
    return SkinTone(model_file(PREDICTOR_68, weights))
