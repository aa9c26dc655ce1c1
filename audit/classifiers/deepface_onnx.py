"""``deepface``: race (6), gender, age and emotion through deepface's own code path, ONNX backend.

Images go through ``DeepFace.analyze`` unchanged (its detector, alignment, 224 px letterbox and
BGR handling), with ``DEEPFACE_BACKEND_ENGINE=onnx`` and the user's weights in
``$DEEPFACE_HOME/.deepface/weights/``: ``age_model_weights.onnx``, ``gender_model_weights.onnx``,
``race_model_single_batch.onnx`` and ``facial_expression_model_weights.onnx`` (the names deepface
0.0.103 asks for). Every file is checked before deepface is imported, so deepface never reaches
its download code; the tests also forbid the network.

Choices:
- ``detector_backend="opencv"`` (deepface's default; its Haar cascades ship with OpenCV 4.x, so
  nothing downloads) or ``"skip"`` for images that are already face crops.
- ``enforce_detection=True``: an image where the detector finds no face is reported as
  ``face_found=False`` instead of being classified whole (with False deepface would silently
  classify the full frame). With several faces, the largest region is used.
- ``weights`` is the DEEPFACE_HOME folder (or its ``.deepface/weights`` subfolder); default
  ``$DEEPFACE_HOME``, else the home directory, as deepface itself does. Building sets the
  process-wide ``DEEPFACE_HOME`` and ``DEEPFACE_BACKEND_ENGINE`` variables.

Outputs: ``race`` over deepface's 6 labels, ``gender`` as Female/Male (deepface's Woman/Man),
``emotion`` over 7 labels, each renormalised to sum to 1; ``age_years`` is deepface's apparent age
(the expectation over 101 one-year classes, truncated to an integer by ``analyze``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pulse_engine.errors import PulseAuditError, WeightsError
from pulse_engine.generators.checkpoint import sha256_file

from ..core.records import Classifier, ClassifierCard, Prediction

WEIGHT_FILES = {
    "age": "age_model_weights.onnx",
    "gender": "gender_model_weights.onnx",
    "race": "race_model_single_batch.onnx",
    "emotion": "facial_expression_model_weights.onnx",
}
MODEL_NAMES = {"age": "Age", "gender": "Gender", "race": "Race", "emotion": "Emotion"}
RACES = ("asian", "indian", "black", "white", "middle eastern", "latino hispanic")
GENDER_MAP = {"Woman": "Female", "Man": "Male"}
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
DETECTORS = ("opencv", "skip")


def deepface_home(weights: Path | None) -> Path:
    """The DEEPFACE_HOME folder for ``weights`` (a home folder or its .deepface/weights subfolder)."""
    if weights is None:
        return Path(os.environ.get("DEEPFACE_HOME", Path.home())).expanduser()
    weights = Path(weights).expanduser()
    if weights.name == "weights" and weights.parent.name == ".deepface":
        return weights.parent.parent
    return weights


def weights_folder(weights: Path | None) -> Path:
    """Where deepface looks for its weight files: ``$DEEPFACE_HOME/.deepface/weights``."""
    return deepface_home(weights) / ".deepface" / "weights"


def missing_assets(weights: Path | None, actions: Sequence[str] = tuple(WEIGHT_FILES)) -> list[str]:
    """One line per missing weight file, naming it and its folder (checked before deepface runs)."""
    folder = weights_folder(weights)
    return [f"missing deepface weights {WEIGHT_FILES[a]}: expected {folder / WEIGHT_FILES[a]} "
            f"(from the v1.0 release of serengil/deepface_models; pulse-audit never downloads it)"
            for a in actions if not (folder / WEIGHT_FILES[a]).is_file()]


def _import_deepface(home: Path) -> tuple[Any, Any, type[Exception]]:
    """Import deepface on the ONNX engine with DEEPFACE_HOME set; returns (DeepFace, modeling,
    FaceNotDetected)."""
    os.environ["DEEPFACE_HOME"] = str(home)
    os.environ["DEEPFACE_BACKEND_ENGINE"] = "onnx"
    os.environ.setdefault("DEEPFACE_LOG_LEVEL", "40")  # errors only
    from deepface import DeepFace
    from deepface.commons import backend_utils
    from deepface.modules import modeling
    from deepface.modules.exceptions import FaceNotDetected

    engine = backend_utils.get_backend_engine()
    if engine != "onnx":
        raise PulseAuditError(f"deepface was already started on the {engine} engine in this process; "
                              "the deepface classifier needs DEEPFACE_BACKEND_ENGINE=onnx from the start")
    return DeepFace, modeling, FaceNotDetected


class DeepfaceClassifier(Classifier):
    """deepface's demography models on (H, W, 3) uint8 RGB images; one Prediction per image.

    Args:
        home: DEEPFACE_HOME holding ``.deepface/weights/*.onnx``.
        actions: any of age, gender, race, emotion.
        detector_backend: ``opencv`` or ``skip`` (images are face crops).
    """

    name = "deepface"

    def __init__(self, home: Path, actions: Sequence[str] = tuple(WEIGHT_FILES),
                 detector_backend: str = "opencv") -> None:
        unknown = [a for a in actions if a not in WEIGHT_FILES]
        if unknown or not actions:
            raise PulseAuditError(f"deepface actions must be among {', '.join(WEIGHT_FILES)}, got {list(actions)}")
        if detector_backend not in DETECTORS:
            raise PulseAuditError(f"deepface detector must be one of {DETECTORS}, got {detector_backend!r}")
        missing = missing_assets(home, actions)
        if missing:
            raise WeightsError("; ".join(missing))
        self.actions, self.detector_backend = list(actions), detector_backend
        self._deepface, modeling, self._no_face = _import_deepface(home)
        # Build each model now, from this home, and keep it: deepface caches models per process,
        # so a model cached from another DEEPFACE_HOME must not be reused.
        cache = modeling.cached_models["facial_attribute"] if hasattr(modeling, "cached_models") else {}
        for action in self.actions:
            cache.pop(MODEL_NAMES[action], None)
        try:
            self._models = {name: modeling.build_model(task="facial_attribute", model_name=name)
                            for name in (MODEL_NAMES[a] for a in self.actions)}
        except ValueError as exc:  # deepface's message for an unreadable ONNX file
            raise WeightsError(f"deepface could not load its weights from {weights_folder(home)}: "
                               f"{str(exc).splitlines()[0][:200]}") from exc
        self._modeling = modeling
        self.attributes = {a: labels for a, labels in (("race", RACES), ("gender", tuple(GENDER_MAP.values())),
                                                        ("emotion", EMOTIONS)) if a in self.actions}
        paths = [weights_folder(home) / WEIGHT_FILES[a] for a in self.actions]
        self.card = ClassifierCard(
            name="deepface", model=f"deepface 0.0.103 demography models (age, gender, race on VGG-Face), ONNX backend, "
                                   f"detector {detector_backend}",
            training_data="not documented in the deepface package (unverified)",
            licence="deepface MIT; weights as released by serengil/deepface_models (no separate licence stated)",
            limits=("race uses deepface's 6 labels (no Southeast Asian / East Asian split); age is a single "
                    "integer estimate; emotion is not a demographic attribute; accuracy unverified here"),
            weights=tuple(map(str, paths)), weights_sha256=tuple(sha256_file(p) for p in paths))

    def _analyze(self, image: np.ndarray) -> Prediction:
        """Run ``DeepFace.analyze`` on one RGB image and convert its largest face."""
        self._modeling.cached_models["facial_attribute"].update(self._models)
        bgr = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[:, :, ::-1])
        try:
            faces = self._deepface.analyze(bgr, actions=self.actions, detector_backend=self.detector_backend,
                                           enforce_detection=True, align=True, silent=True)
        except self._no_face:
            return Prediction(face_found=False,
                              error=f"no face found by deepface's {self.detector_backend} detector")
        face = max(faces, key=lambda f: f["region"]["w"] * f["region"]["h"])
        probabilities = {}
        for action, key_map in (("race", None), ("gender", GENDER_MAP), ("emotion", None)):
            if action in self.actions:
                scores = {(key_map or {}).get(k, k): float(v) for k, v in face[action].items()}
                total = sum(scores.values())
                probabilities[action] = {k: v / total for k, v in scores.items()}
        values = {"age_years": float(face["age"])} if "age" in self.actions else {}
        return Prediction(face_found=True, probabilities=probabilities, values=values)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [self._analyze(image) for image in images]


def build(weights: Path | None, device: str = "cpu", detector_backend: str = "opencv") -> DeepfaceClassifier:
    """The deepface classifier (all four actions) from DEEPFACE_HOME ``weights``; ``device`` is
    unused (onnxruntime picks its providers from DEEPFACE_ONNX_PROVIDERS)."""
    return DeepfaceClassifier(deepface_home(weights), detector_backend=detector_backend)
