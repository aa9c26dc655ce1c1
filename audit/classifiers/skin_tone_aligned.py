"""``skin-tone-aligned``: skin colour in fixed regions of a generator's canonical face frame, no detector.

A generator's outputs share one face frame: eyes, nose and mouth sit at nearly the same place in every
sample. The frame is stored as the mean position of dlib's 68 landmarks over the generator's samples, in
unit coordinates (x/side, y/side of pixel centres) so that it serves every resolution. The skin mask is
the ``skin-tone`` mask (:func:`audit.classifiers.skin_tone.skin_mask`) drawn from those mean landmarks,
and colour, ITA° and the Monk swatch are measured in it exactly as ``skin-tone`` does.

Every image is measured, so comparisons are never conditioned on a detector finding a face, and the same
skin region is used at 32, 64 or 256 px. It is valid for images in the frame: PULSE outputs of the frame's
generator family and faces aligned to it (the demo set's generated faces). A photograph off the frame (a
portrait cropped differently) is re-aligned when the detector finds its face farther than :data:`OFF_FRAME`
from the frame; the detector only decides whether to warp, never whether to measure. A sample in strong
profile can put hair or background in the regions; the robust outlier removal of
:func:`audit.classifiers.skin_tone.measure_skin` trims some of that, not all.

Frames ship in ``frames/`` beside this module (``dcgan-digiface``: also the frame of the skew-trained
32 px generators, trained on its samples); :func:`derive_frame` makes one from any generator's samples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from pulse_engine.errors import WeightsError

from ..core.records import Classifier, ClassifierCard, Prediction
from ..vision.faces import (
    PREDICTOR_68,
    main_face,
    missing_model_files,
    model_file,
    working_image,
)
from .skin_tone import ITA_BANDS, MONK_NAMES, colour_prediction, measure_skin, skin_mask

FRAMES_DIR = Path(__file__).resolve().parent / "frames"
DEFAULT_FRAME = FRAMES_DIR / "dcgan-digiface.json"
FRAME_SCHEMA = "pulse-audit-face-frame/1"


@dataclass(frozen=True)
class FaceFrame:
    """A canonical face frame.

    Attributes:
        name: what the frame belongs to (a generator family).
        landmarks: (68, 2) mean landmark positions in unit coordinates ((x + 0.5)/side, (y + 0.5)/side).
        faces: how many samples with a detected face the mean is over.
        spread: mean distance (unit coordinates) of a sample's landmarks from the frame.
        source: how the frame was made.
    """

    name: str
    landmarks: np.ndarray
    faces: int
    spread: float
    source: str

    def landmarks_at(self, side: int) -> np.ndarray:
        """The frame's landmarks in pixel coordinates of a ``side`` px image (pixel centres on integers)."""
        return self.landmarks * side - 0.5

    def mask(self, side: int) -> np.ndarray:
        """Boolean (side, side) skin mask of the frame."""
        return skin_mask((side, side), self.landmarks_at(side))

    def to_json(self) -> str:
        """The frame file's text: metadata, then one landmark [x, y] per line."""
        head = json.dumps({"schema": FRAME_SCHEMA, "name": self.name, "faces": self.faces,
                           "spread": round(self.spread, 5), "source": self.source}, indent=1)[:-2]
        points = ",\n  ".join(json.dumps(p) for p in np.round(self.landmarks, 5).tolist())
        return head + ',\n "landmarks": [\n  ' + points + "\n ]\n}"


def read_frame(path: Path) -> FaceFrame:
    """A frame JSON file (see :meth:`FaceFrame.to_json`); a wrong file is a one-line WeightsError."""
    try:
        data = json.loads(Path(path).read_text())
        points = np.asarray(data["landmarks"], dtype=np.float64)
        ok = data.get("schema") == FRAME_SCHEMA and points.shape == (68, 2) and np.isfinite(points).all()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: not a face-frame file ({type(exc).__name__})") from exc
    if not ok:
        raise WeightsError(f"{path}: not a face-frame file (schema {FRAME_SCHEMA}, 68 finite landmarks needed)")
    return FaceFrame(str(data.get("name", Path(path).stem)), points, int(data.get("faces", 0)),
                     float(data.get("spread", float("nan"))), str(data.get("source", "")))


@cache
def default_frame() -> FaceFrame:
    return read_frame(DEFAULT_FRAME)


def unit_landmarks(image: np.ndarray, predictor: Path) -> np.ndarray | None:
    """The largest face's 68 landmarks in unit coordinates, or None without a face."""
    face = main_face(image, predictor)
    if face is None:
        return None
    return (face.landmarks + 0.5) / np.array([image.shape[1], image.shape[0]], dtype=np.float64)


def derive_frame(images: Sequence[np.ndarray], name: str, source: str, predictor: Path | None = None) -> FaceFrame:
    """The mean landmark frame of ``images`` (a generator's samples, all the same frame).

    Raises:
        ValueError: no face was detected in any image.
    """
    predictor = predictor or model_file(PREDICTOR_68)
    found = [p for p in (unit_landmarks(image, predictor) for image in images) if p is not None]
    if not found:
        raise ValueError("derive_frame: no face detected in any image")
    stack = np.stack(found)
    mean = stack.mean(axis=0)
    spread = float(np.linalg.norm(stack - mean, axis=2).mean())
    return FaceFrame(name, mean, len(found), spread, source)


OFF_FRAME = 0.09
"""Mean landmark distance from the frame (unit coordinates) above which a detected face counts as off the frame
and is re-aligned before measuring. Of the demo set's 79 detected generated faces the largest is 0.087 (99th
percentile 0.078); the showcase portraits Biden and Collins measure 0.108 and 0.157, Obama 0.048."""


def frame_distance(landmarks: np.ndarray, frame: FaceFrame) -> float:
    """Mean distance (unit coordinates) between a face's 68 unit landmarks and the frame's."""
    return float(np.linalg.norm(landmarks - frame.landmarks, axis=1).mean())


def realign(work: np.ndarray, landmarks: np.ndarray, frame: FaceFrame) -> np.ndarray:
    """``work`` (H, H, 3) warped by the similarity transform that takes its face's ``landmarks`` (working-image
    pixels) onto the frame's landmarks (bicubic, edges repeated), as uint8."""
    from skimage.transform import SimilarityTransform, warp

    transform = SimilarityTransform.from_estimate(frame.landmarks_at(work.shape[0]), landmarks)
    warped = warp(work, transform, order=3, mode="edge", preserve_range=True)
    return np.clip(np.round(warped), 0, 255).astype(np.uint8)


def measure_in_frame(image: np.ndarray, frame: FaceFrame, predictor: Path | None = None) -> Prediction:
    """Skin colour of a square (H, H, 3) uint8 image in the frame's fixed regions, measured like ``skin-tone``
    on the image enlarged to at least :data:`audit.vision.faces.DETECT_MIN_SIDE` px (the same region at every size).

    With ``predictor`` (a 68-point model), a face the detector finds farther than :data:`OFF_FRAME` from the
    frame is first warped onto it (values ``frame_distance`` and ``realigned`` say so); an image without a
    detected face is measured as it is, so no image goes unmeasured.
    """
    if image.ndim != 3 or image.shape[0] != image.shape[1]:
        return Prediction(face_found=False, error=f"aligned skin tone needs a square image, got {image.shape[:2]}")
    work, scale = working_image(image)
    extra: dict[str, float] = {}
    face = main_face(image, predictor) if predictor is not None else None
    if face is not None:
        distance = frame_distance((face.landmarks + 0.5) / image.shape[0], frame)
        extra = {"frame_distance": distance, "realigned": float(distance > OFF_FRAME)}
        if distance > OFF_FRAME:
            work = realign(face.work_image, face.work_landmarks, frame)
    prediction = colour_prediction(measure_skin(work, frame.mask(work.shape[0])), scale)
    prediction.values.update(extra)
    return prediction


_LIMITS = (
    "Fixed cheek and forehead regions of a generator's canonical face frame: every image is measured, so results "
    "are not conditioned on a detector finding a face. Valid for images in that frame (outputs of the frame's "
    f"generator family, faces aligned to it); a detected face farther than {OFF_FRAME} (mean landmark distance, "
    "unit coordinates) from the frame is warped onto it first, but an off-frame face the detector misses is "
    "measured where it is, and strongly turned faces can put hair or background in the regions. Same "
    "colour-science limits as skin-tone: lighting, white balance and exposure are not corrected; the ITA bands "
    "are dermatology thresholds, uncalibrated for renders; ITA is ill-conditioned when b* is near 0.")


class AlignedSkinTone(Classifier):
    """ITA° band and Monk swatch in a canonical frame's fixed skin regions."""

    name = "skin-tone-aligned"
    attributes: ClassVar[dict[str, tuple[str, ...]]] = {"ita_band": ITA_BANDS, "monk": MONK_NAMES}

    def __init__(self, frame_path: Path, predictor: Path | None = None) -> None:
        from pulse_engine.generators.checkpoint import sha256_file

        self.frame, self.predictor = read_frame(frame_path), predictor
        files = (frame_path, *((predictor,) if predictor else ()))
        self.card = ClassifierCard(
            name=self.name,
            model=f"ITA° (median L*, b*) and nearest Monk swatch in the fixed skin regions of the {self.frame.name} "
                  f"face frame (mean dlib-68 landmarks of {self.frame.faces} samples); every image measured; "
                  + (f"a detected face farther than {OFF_FRAME} from the frame is warped onto it first"
                     if predictor else "no detector"),
            training_data="none; frame from the generator's own samples",
            licence="code MIT", limits=_LIMITS, weights=tuple(map(str, files)),
            weights_sha256=tuple(sha256_file(f) for f in files))

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [measure_in_frame(np.asarray(image), self.frame, self.predictor) for image in images]


def missing_assets(weights: Path | None) -> list[str]:
    """Missing files: the frame JSON (``weights`` overrides the default dcgan-digiface frame)."""
    path = Path(weights) if weights else DEFAULT_FRAME
    message = f"missing face frame {path}: make one with audit.classifiers.skin_tone_aligned.derive_frame"
    return [] if path.is_file() else [message]


def build(weights: Path | None, device: str) -> AlignedSkinTone:
    """The aligned measurement; ``weights`` is an optional frame JSON, ``device`` is ignored. Off-frame faces are
    re-aligned when the 68-point landmark model is installed."""
    del device
    predictor = None if missing_model_files((PREDICTOR_68,)) else model_file(PREDICTOR_68)
    return AlignedSkinTone(Path(weights) if weights else DEFAULT_FRAME, predictor)


def make_default_frame(samples: int = 512, seed: int = 1) -> FaceFrame:
    """The shipped ``dcgan-digiface`` frame: ``samples`` latents from ``torch.manual_seed(seed)``, 64 px."""
    import torch

    from pulse_engine.generators import load_generator

    generator = load_generator("dcgan-digiface", "cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        images = generator.synthesize(torch.randn(samples, *generator.latent_shape)).clamp(0, 1)
    arrays = [(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images]
    return derive_frame(arrays, "dcgan-digiface",
                        f"dcgan-digiface, {samples} samples, torch.manual_seed({seed}) then randn, 64 px; "
                        "also the frame of the skew-trained 32 px generators (trained on its samples)")


if __name__ == "__main__":
    FRAMES_DIR.mkdir(exist_ok=True)
    DEFAULT_FRAME.write_text(make_default_frame().to_json() + "\n")
    print("wrote", DEFAULT_FRAME)
