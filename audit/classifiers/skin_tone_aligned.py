"""``skin-tone-aligned``: skin colour in fixed regions of a generator's canonical face frame, no detector.

A generator's outputs share one face frame: eyes, nose and mouth sit at nearly the same place in every
sample. The frame is stored as the mean position of dlib's 68 landmarks over the generator's samples, in
unit coordinates (x/side, y/side of pixel centres) so that it serves every resolution. The skin mask is
the ``skin-tone`` mask (:func:`audit.classifiers.skin_tone.skin_mask`) drawn from those mean landmarks,
and colour, ITA° and the Monk swatch are measured in it exactly as ``skin-tone`` does.

Every image is measured, so comparisons are never conditioned on a detector finding a face, and the same
skin region is used at 32, 64 or 256 px. It is only valid for images in the frame: PULSE outputs of the
frame's generator family and faces aligned to it (the demo set's generated faces). On a photograph that
is not in the frame, or a sample in strong profile, the regions can cover hair or background; the
robust outlier removal of :func:`audit.classifiers.skin_tone.measure_skin` trims some of that, not all.

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

from ..faces import PREDICTOR_68, main_face, model_file, working_image
from ..records import Classifier, ClassifierCard, Prediction
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


def measure_in_frame(image: np.ndarray, frame: FaceFrame) -> Prediction:
    """Skin colour of a square (H, H, 3) uint8 image in the frame's fixed regions, measured like ``skin-tone``
    on the image enlarged to at least :data:`audit.faces.DETECT_MIN_SIDE` px (the same region at every size)."""
    if image.ndim != 3 or image.shape[0] != image.shape[1]:
        return Prediction(face_found=False, error=f"aligned skin tone needs a square image, got {image.shape[:2]}")
    work, scale = working_image(image)
    return colour_prediction(measure_skin(work, frame.mask(work.shape[0])), scale)


_LIMITS = (
    "Fixed cheek and forehead regions of a generator's canonical face frame, no face detector: every image is "
    "measured, so results are not conditioned on detection. Valid only for images in that frame (outputs of the "
    "frame's generator family, faces aligned to it); on other photos or strongly turned faces the regions can "
    "cover hair or background. Same colour-science limits as skin-tone: lighting, white balance and exposure are "
    "not corrected; the ITA bands are dermatology thresholds, uncalibrated for renders.")


class AlignedSkinTone(Classifier):
    """ITA° band and Monk swatch in a canonical frame's fixed skin regions."""

    name = "skin-tone-aligned"
    attributes: ClassVar[dict[str, tuple[str, ...]]] = {"ita_band": ITA_BANDS, "monk": MONK_NAMES}

    def __init__(self, frame_path: Path) -> None:
        from pulse_engine.generators.checkpoint import sha256_file

        self.frame = read_frame(frame_path)
        self.card = ClassifierCard(
            name=self.name,
            model=f"ITA° (median L*, b*) and nearest Monk swatch in the fixed skin regions of the {self.frame.name} "
                  f"face frame (mean dlib-68 landmarks of {self.frame.faces} samples); no detector, no learned weights",
            training_data="none; frame from the generator's own samples",
            licence="code MIT", limits=_LIMITS, weights=(str(frame_path),), weights_sha256=(sha256_file(frame_path),))

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [measure_in_frame(np.asarray(image), self.frame) for image in images]


def missing_assets(weights: Path | None) -> list[str]:
    """Missing files: the frame JSON (``weights`` overrides the default dcgan-digiface frame)."""
    path = Path(weights) if weights else DEFAULT_FRAME
    message = f"missing face frame {path}: make one with audit.classifiers.skin_tone_aligned.derive_frame"
    return [] if path.is_file() else [message]


def build(weights: Path | None, device: str) -> AlignedSkinTone:
    """The aligned measurement; ``weights`` is an optional frame JSON, ``device`` is ignored."""
    del device
    return AlignedSkinTone(Path(weights) if weights else DEFAULT_FRAME)


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
