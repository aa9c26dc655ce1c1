"""``identity``: dlib's 128-d ResNet face embedding, to ask "is the output still the same person?".

The largest face (dlib HOG, :mod:`audit.vision.faces`) is aligned by the 5-point landmarks into dlib's
150 px face chip (padding 0.25) and embedded with ``dlib_face_recognition_resnet_model_v1.dat``
(from ``face-recognition-models``). Two embeddings whose Euclidean distance is below
:data:`SAME_PERSON_THRESHOLD` (0.6) are taken as the same person; dlib reports 99.38 % on the LFW
pairs benchmark at that threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pulse_engine.generators.checkpoint import sha256_file

from ..core.records import Classifier, ClassifierCard, Prediction
from ..vision.faces import (
    FACE_RESNET,
    PREDICTOR_5,
    Face,
    face_recognizer,
    landmark_model,
    main_face,
    missing_model_files,
    model_file,
)

SAME_PERSON_THRESHOLD = 0.6
"""Euclidean embedding distance below which two faces count as the same person (dlib's value)."""
CHIP_SIZE, CHIP_PADDING = 150, 0.25
"""The face chip dlib's embedder was trained on: 150 px, padding 0.25."""


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two 128-d embeddings (same person below 0.6; ≈ 0–1.5)."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """True when :func:`identity_distance` is below :data:`SAME_PERSON_THRESHOLD`."""
    return identity_distance(a, b) < SAME_PERSON_THRESHOLD


class Identity(Classifier):
    """128-d dlib embedding of the largest face; no probabilities, only ``Prediction.embedding``."""

    name = "identity"
    attributes: dict[str, tuple[str, ...]] = {}

    def __init__(self, resnet: Path, predictor: Path) -> None:
        self.model = face_recognizer(resnet)
        self.predictor = predictor
        landmark_model(predictor, 5)
        self.card = ClassifierCard(
            name=self.name,
            model="dlib face recognition ResNet v1 (29 conv layers, 128-d), dlib HOG detector, "
                  "dlib 5-point landmarks, 150 px chip",
            training_data="about 3 million faces of about 7,485 identities (FaceScrub, VGG-Face "
                          "and web images), per dlib's release notes (unverified here); "
                          "landmarks: dlib 5-point model trained on 7,198 faces",
            licence="CC0 (davisking/dlib-models via face-recognition-models)",
            limits="Same person below 0.6 (99.38 % on LFW pairs per dlib). The face_recognition "
                   "README warns that it works poorly on children (confuses them at 0.6) and that "
                   "accuracy may vary between ethnic groups; compare inputs with outputs rather "
                   "than groups' absolute distances, and check the oracle upsampler's noise floor. "
                   "A chip from a 64 px image is upsampled to 150 px, which costs precision. "
                   "Misses of the HOG detector are reported as 'no face' (no embedding).",
            weights=(str(resnet), str(predictor)),
            weights_sha256=(sha256_file(resnet), sha256_file(predictor)))

    def embed(self, face: Face) -> np.ndarray:
        """(128,) float64 embedding of a detected face (5-point landmarks)."""
        chip = face.chip(CHIP_SIZE, CHIP_PADDING)
        return np.asarray(self.model.compute_face_descriptor(chip), dtype=np.float64)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Embed the largest face of each (H, W, 3) uint8 RGB image; ``face_found`` False (and no
        embedding) when there is none."""
        predictions = []
        for image in images:
            face = main_face(image, self.predictor)
            predictions.append(Prediction(face_found=False) if face is None
                               else Prediction(face_found=True, embedding=self.embed(face)))
        return predictions


def missing_assets(weights: Path | None) -> list[str]:
    """Missing files: the ResNet embedder (``weights`` overrides its path) and the 5-point model."""
    return missing_model_files((FACE_RESNET,), weights) + missing_model_files((PREDICTOR_5,))


def build(weights: Path | None, device: str) -> Identity:
    """The identity embedder; ``weights`` is an optional ResNet ``.dat`` file, ``device`` is
    ignored (dlib runs on the CPU)."""
    del device
    return Identity(model_file(FACE_RESNET, weights), model_file(PREDICTOR_5))
