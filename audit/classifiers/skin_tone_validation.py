"""Validation of the skin-tone instruments, run by the tool: does ITA° respond to a known change, and only to it?

Three checks on a list of faces (:class:`ValidationFace`), each for ``skin-tone`` (detector + landmarks) and, on
faces in the generator's frame, ``skin-tone-aligned`` (fixed regions, no detector):

* **planted change**: the skin of each face is recoloured by known CIELAB shifts (:data:`PLANTED_SHIFTS`) at
  its native size, then resized to each test side and measured. The *planted* ΔITA is computed without the
  instrument: ITA° of the median L*, b* over the recoloured region after minus before (so gamut clipping and
  8-bit rounding count as planted; ΔITA is wrapped into (−180°, 180°]). Faces whose skin has b* < 5 are outside
  ITA's domain (:data:`MIN_B_STAR`) and left out of the summary. The region is the hull of the face's 68
  landmarks (detected once on the native image; the frame's landmarks for aligned faces without a detection) raised
  to cover the forehead.
  Measured ΔITA = instrument(recoloured) − instrument(original). We fit measured = intercept + slope × planted
  and report the slope, the bias (mean of measured − planted) and the mean absolute error, with
  bootstrap intervals that resample faces (a face's shifts are not independent).
* **resolution invariance**: the same faces resized (Lanczos, as the audit prepares truths) to each side;
  per side the share measured, the mean ITA°, the paired difference against the largest side on the faces
  measured at both, and the *selection* part: how much the mean moves only because different faces are
  measured (mean at the largest side of the faces measured here − mean at the largest side of all faces).
* **agreement** of the two instruments on aligned faces both measure (mean difference, SD, correlation).

:func:`validate_skin_tone` returns one JSON-ready dict; :func:`validation_faces` gives the default face list
(the demo set's generated faces and the showcase portraits).

Measured with ``pulse-audit validate-instrument`` (24 demo faces + 3 portraits, 1000 bootstrap replicates;
2 shared cores, 2026-11-29), slope (95 % CI) and bias of measured vs planted ΔITA:

* ``skin-tone``: 64 px slope 1.00 (0.92–1.07), bias +0.15° (−0.32 to +0.67), mean |error| 2.7°, 21 of 25 faces
  in ITA's domain measured; 32 px slope 0.98 (0.89–1.05), bias −0.01°, but only 19 of 25 measured. From 256 to
  32 px the paired change is +0.01° (largest 3.6°) while the share of faces detected falls from 85 % to 78 %,
  which alone moves the mean ITA by +3.6° (the darker faces are the ones lost).
* ``skin-tone-aligned`` (portraits re-aligned onto the frame): slope 1.04 (0.96–1.12), bias +0.4° (−0.1 to
  +0.9), mean |error| 2.9–3.0°, every face measured at every size; paired change 256 → 32 px −0.13° (largest
  3.6°), selection 0.
* on the faces both measure, detector − aligned = +2.0° on average (SD 7°, r = 0.99): the fixed regions sit
  slightly differently from each face's own landmarks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..vision.faces import PREDICTOR_68, main_face, model_file
from .skin_tone import build as build_skin_tone
from .skin_tone import ita_change, ita_degrees, lab_to_srgb, srgb_to_lab
from .skin_tone_aligned import FaceFrame, default_frame, measure_in_frame

PLANTED_SHIFTS = ((-12.0, 0.0), (-6.0, 0.0), (0.0, 0.0), (6.0, 0.0), (12.0, 0.0), (0.0, -5.0), (0.0, 5.0),
                  (-8.0, 4.0), (8.0, -4.0))
"""(ΔL*, Δb*) recolourings: lightness alone, yellowness alone, and both together (darker and yellower is how
real skin tones differ)."""
SIDES = (32, 64, 128, 256)
MIN_B_STAR = 5.0
"""ITA° = atan2(L* − 50, b*) is ill-conditioned when b* is near 0 (grey, blue-tinted or very pale renders): a
ΔL* of 6 can move it by 90°. Slopes and biases are summarised over faces whose skin has b* ≥ this; the others
are counted as outside the instrument's domain."""
INSTRUMENTS = ("skin-tone", "skin-tone-aligned")
REPO = Path(__file__).resolve().parents[2]
LIMITS = (
    "What these numbers cover: the instrument's response to a uniform CIELAB shift of the skin and to image size, "
    "on these faces. They do not cover lighting, white balance or make-up (a brightly lit photo measures lighter), "
    "nor whether a face with the same ITA° looks like the same person or the same perceived race: ITA° is the "
    "colour of skin pixels, blind to face shape.")


@dataclass(frozen=True)
class ValidationFace:
    """One face to validate on: a square uint8 RGB image and whether it is in the generator frame."""

    name: str
    image: np.ndarray
    aligned: bool


def validation_faces(limit: int = 24, portraits: bool = True) -> list[ValidationFace]:
    """The demo set's first ``limit`` generated faces (64 px, in the dcgan-digiface frame) and, with
    ``portraits``, the three showcase photos (cropped differently; ``skin-tone-aligned`` re-aligns them)."""
    demo = REPO / "datasets" / "demo" / "faces"
    faces = [ValidationFace(p.stem, np.asarray(Image.open(p).convert("RGB")), True)
             for p in sorted(demo.glob("*.png"))[:limit]]
    if portraits:
        showcase = REPO / "datasets" / "showcase"
        for entry in json.loads((showcase / "showcase.json").read_text())["faces"]:
            image = Image.open(showcase / entry["file"]).convert("RGB")
            faces.append(ValidationFace(Path(entry["file"]).stem, np.asarray(image), True))
    return faces


def recolour_region(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Boolean mask of the face's skin to recolour: the convex hull of the 68 landmarks plus a forehead band
    (the brows raised by 0.6 × the brow-to-nose-base distance)."""
    brows = landmarks[17:27]
    up = brows.mean(axis=0) - landmarks[33]
    points = np.concatenate([landmarks, brows + 0.6 * up])
    from scipy.spatial import ConvexHull

    hull = points[ConvexHull(points).vertices]
    canvas = Image.new("1", (image.shape[1], image.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull], fill=1)
    return np.asarray(canvas, dtype=bool)


def recolour(image: np.ndarray, region: np.ndarray, d_lightness: float, d_b: float) -> np.ndarray:
    """``image`` with the pixels of ``region`` shifted by (ΔL*, 0, Δb*) in CIELAB (out-of-gamut clipped)."""
    out = image.copy()
    lab = srgb_to_lab(image[region])
    lab[:, 0] += d_lightness
    lab[:, 2] += d_b
    out[region] = np.round(lab_to_srgb(lab) * 255).astype(np.uint8)
    return out


def region_colour(image: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """(ITA°, b*) of the median L*, b* over ``region`` (the instrument-free reference of a planted change)."""
    lightness, _, b_star = np.median(srgb_to_lab(image[region]), axis=0)
    return float(ita_degrees(lightness, b_star)), float(b_star)


def resize(image: np.ndarray, side: int) -> np.ndarray:
    if image.shape[0] == side:
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.LANCZOS))


class _Instruments:
    """The two measurements, as functions image → ITA° (NaN when not measured)."""

    def __init__(self, frame: FaceFrame) -> None:
        self.detector = build_skin_tone(None, "cpu")
        self.frame, self.predictor = frame, model_file(PREDICTOR_68)
        self.frame_key = hashlib.sha1(frame.landmarks.tobytes()).hexdigest()

    def measure(self, instrument: str, image: np.ndarray) -> float:
        """ITA° of ``image`` by ``instrument``; a distinct image is measured once per process (reports of runs on
        the same inputs share their originals and recolourings)."""
        digest = hashlib.sha1(image.tobytes() + str(image.shape).encode()).digest()
        key = (instrument, self.frame_key if instrument != "skin-tone" else "", digest)
        if key not in _MEASURED:
            prediction = (self.detector.predict_one(image) if instrument == "skin-tone"
                          else measure_in_frame(image, self.frame, self.predictor))
            if len(_MEASURED) >= _MEASURED_MAX:
                _MEASURED.clear()
            _MEASURED[key] = float(prediction.values["ita"]) if "ita" in prediction.values else float("nan")
        return _MEASURED[key]


_MEASURED: dict[tuple[str, str, bytes], float] = {}
_MEASURED_MAX = 100_000


def _face_region(face: ValidationFace, frame: FaceFrame, predictor: Path) -> np.ndarray | None:
    found = main_face(face.image, predictor)
    if found is not None:
        return recolour_region(face.image, found.landmarks)
    if face.aligned:
        return recolour_region(face.image, frame.landmarks_at(face.image.shape[0]))
    return None


def planted_rows(faces: Sequence[ValidationFace], sides: Sequence[int], shifts: Sequence[tuple[float, float]],
                 instruments: _Instruments) -> list[dict[str, Any]]:
    """One row per face × shift × side × instrument: planted and measured ΔITA (NaN when not measured)."""
    predictor = model_file(PREDICTOR_68)
    rows = []
    for face in faces:
        region = _face_region(face, instruments.frame, predictor)
        if region is None or region.sum() < 20:
            continue
        before, b_star = region_colour(face.image, region)
        names = INSTRUMENTS if face.aligned else INSTRUMENTS[:1]
        originals = {(n, s): instruments.measure(n, resize(face.image, s)) for n in names for s in sides}
        for d_lightness, d_b in shifts:
            shifted = recolour(face.image, region, d_lightness, d_b)
            planted = ita_change(region_colour(shifted, region)[0], before)
            for side in sides:
                small = resize(shifted, side)
                for name in names:
                    measured = ita_change(instruments.measure(name, small), originals[(name, side)])
                    rows.append({"face": face.name, "aligned": face.aligned, "instrument": name, "side": side,
                                 "d_L": d_lightness, "d_b": d_b, "b_star": b_star, "planted": planted,
                                 "measured": measured})
    return rows


def _fit(planted: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """OLS (slope, intercept) of measured on planted."""
    design = np.column_stack([planted, np.ones_like(planted)])
    slope, intercept = np.linalg.lstsq(design, measured, rcond=None)[0]
    return float(slope), float(intercept)


def _cluster_bootstrap(groups: np.ndarray, statistic, n_boot: int, seed: int, confidence: float
                       ) -> tuple[float, float]:
    """Percentile interval of ``statistic(rows)`` over resamples of whole groups (faces)."""
    rng = np.random.default_rng(seed)
    labels = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in labels]
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(labels), len(labels))
        values.append(statistic(np.concatenate([members[i] for i in pick])))
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def summarise_planted(rows: Sequence[dict[str, Any]], n_boot: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per instrument and side: faces, pairs measured, share measured, slope, intercept, bias, MAE (with CIs)."""
    out = []
    keys = sorted({(r["instrument"], r["side"]) for r in rows}, key=lambda k: (INSTRUMENTS.index(k[0]), k[1]))
    for instrument, side in keys:
        everything = [r for r in rows if r["instrument"] == instrument and r["side"] == side]
        mine = [r for r in everything if r["b_star"] >= MIN_B_STAR]
        planted = np.array([r["planted"] for r in mine])
        measured = np.array([r["measured"] for r in mine])
        faces = np.array([r["face"] for r in mine])
        ok = np.isfinite(measured)
        row: dict[str, Any] = {"instrument": instrument, "side": side, "faces": len(set(faces)),
                               "faces_outside_domain": len({r["face"] for r in everything}) - len(set(faces)),
                               "faces_measured": len(set(faces[ok])), "pairs": int(ok.sum()),
                               "share_measured": float(ok.mean()) if len(ok) else float("nan")}
        if ok.sum() >= 3 and np.ptp(planted[ok]) > 0:
            p, m, g = planted[ok], measured[ok], faces[ok]
            slope, intercept = _fit(p, m)
            row |= {"slope": slope, "intercept": intercept, "bias": float(np.mean(m - p)),
                    "mae": float(np.mean(np.abs(m - p))), "planted_range": [float(p.min()), float(p.max())]}
            for name, stat in (("slope", lambda i, p=p, m=m: _fit(p[i], m[i])[0]),
                               ("bias", lambda i, p=p, m=m: np.mean(m[i] - p[i])),
                               ("mae", lambda i, p=p, m=m: np.mean(np.abs(m[i] - p[i])))):
                row[f"{name}_ci"] = list(_cluster_bootstrap(g, stat, n_boot, seed, confidence))
        out.append(row)
    return out


def resolution_rows(faces: Sequence[ValidationFace], sides: Sequence[int], instruments: _Instruments,
                    n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per instrument and side: the share of faces measured, their mean ITA°, the paired difference from the
    largest side and the selection part of the change in mean (see the module docstring)."""
    reference = max(sides)
    out = []
    for instrument in INSTRUMENTS:
        mine = [f for f in faces if f.aligned or instrument == "skin-tone"]
        if not mine:
            continue
        values = {s: np.array([instruments.measure(instrument, resize(f.image, s)) for f in mine]) for s in sides}
        ref = values[reference]
        for side in sides:
            here = values[side]
            both = np.isfinite(here) & np.isfinite(ref)
            diff = here[both] - ref[both]
            row: dict[str, Any] = {
                "instrument": instrument, "side": side, "faces": len(mine), "measured": int(np.isfinite(here).sum()),
                "share_measured": float(np.isfinite(here).mean()),
                "mean_ita": float(np.nanmean(here)) if np.isfinite(here).any() else float("nan"),
                "paired_faces": int(both.sum()), "reference_side": reference,
                "paired_difference": float(diff.mean()) if len(diff) else float("nan"),
                "sd_difference": float(diff.std(ddof=1)) if len(diff) > 1 else float("nan"),
                "max_abs_difference": float(np.abs(diff).max()) if len(diff) else float("nan"),
                "selection": round(float(np.nanmean(ref[np.isfinite(here)]) - np.nanmean(ref)), 9)
                if np.isfinite(here).any() and np.isfinite(ref).any() else float("nan")}
            if len(diff) > 2 and side != reference:
                idx = np.arange(len(diff))
                row["paired_difference_ci"] = list(_cluster_bootstrap(idx, lambda i, d=diff: d[i].mean(), n_boot, seed,
                                                                      confidence))
            out.append(row)
    return out


def agreement(faces: Sequence[ValidationFace], side: int, instruments: _Instruments) -> dict[str, Any]:
    """``skin-tone`` − ``skin-tone-aligned`` on the aligned faces both measure at ``side`` px."""
    aligned = [f for f in faces if f.aligned]
    a = np.array([instruments.measure("skin-tone", resize(f.image, side)) for f in aligned])
    b = np.array([instruments.measure("skin-tone-aligned", resize(f.image, side)) for f in aligned])
    both = np.isfinite(a) & np.isfinite(b)
    diff = a[both] - b[both]
    return {"side": side, "faces": len(aligned), "both": int(both.sum()),
            "mean_difference": float(diff.mean()) if len(diff) else float("nan"),
            "sd_difference": float(diff.std(ddof=1)) if len(diff) > 1 else float("nan"),
            "correlation": float(np.corrcoef(a[both], b[both])[0, 1]) if both.sum() > 2 else float("nan")}


def validate_skin_tone(faces: Sequence[ValidationFace] | None = None, sides: Sequence[int] = SIDES,
                       shifts: Sequence[tuple[float, float]] = PLANTED_SHIFTS, frame: FaceFrame | None = None,
                       n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                       planted_sides: Sequence[int] | None = None) -> dict[str, Any]:
    """The skin-tone instrument validation (see the module docstring) as one JSON-ready dict:

    ``planted_sides`` (default ``sides``) are the sizes the planted change is measured at.
    ``planted`` (per instrument × side: slope, intercept, bias, MAE with intervals, share measured),
    ``resolution`` (per instrument × side: share measured, mean ITA°, paired difference from the largest side,
    selection part), ``agreement`` (detector vs aligned at each side), the settings and :data:`LIMITS`.
    """
    faces = list(validation_faces() if faces is None else faces)
    instruments = _Instruments(frame or default_frame())
    rows = planted_rows(faces, planted_sides or sides, shifts, instruments)
    return {"schema": "pulse-audit-skin-tone-validation/1",
            "faces": {"total": len(faces), "aligned": sum(f.aligned for f in faces),
                      "names": [f.name for f in faces]},
            "frame": instruments.frame.name, "sides": list(sides), "shifts": [list(s) for s in shifts],
            "planted": summarise_planted(rows, n_boot, seed, confidence),
            "resolution": resolution_rows(faces, sides, instruments, n_boot, seed, confidence),
            "agreement": [agreement(faces, s, instruments) for s in sides] if any(f.aligned for f in faces) else [],
            "settings": {"n_boot": n_boot, "seed": seed, "confidence": confidence}, "limits": LIMITS}
