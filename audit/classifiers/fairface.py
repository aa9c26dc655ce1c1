"""``fairface``: the FairFace ResNet-34 classifier (Kärkkäinen & Joo 2021, dchen236/FairFace).

Weights are supplied by the user: ``res34_fair_align_multi_7_20190809.pt`` (a state dict of
``torchvision.models.resnet34`` with ``fc = Linear(512, 18)``, possibly saved from
``nn.DataParallel`` with ``module.`` prefixes), by default in ``~/.pulse-audit/weights/fairface/``.
It is read with ``torch.load(weights_only=True)`` into our own :class:`~.resnet34.ResNet34`.

Outputs, each slice softmaxed separately as in ``predict.py``: ``[0:7]`` race (7 classes),
``[7:9]`` gender, ``[9:18]`` age (9 bins). The 4-race weights (``…multi_4…``, ``…4race…``) use
``[0:4]`` = White, Black, Asian, Indian; only that slice is reported, as attribute ``race4``,
because ``predict.py`` reads nothing else from that model. The variant is taken from
``race_classes`` when given, else from the file name (``_4_`` or ``4race`` → 4, otherwise 7):
both variants have the same 18-output shape, so the weights themselves cannot tell.

Preprocessing as in ``predict.py``: longer side resized to 800 px, a dlib face detector
(``cnn``: the MMOD detector that ``predict.py`` uses, ≈ 15 s per image on 2 CPU cores; ``hog``,
the default: dlib's HOG detector, ≈ 0.15 s), the 5-point landmarks, ``dlib.get_face_chip`` at
300 px with padding 0.25, resize to 224 (bilinear), ImageNet normalisation. The largest face is
used. ``align=False`` skips detection and chipping for crops that are already aligned (as
Laszkiewicz et al. feed FairFace-aligned images directly). ``predict.py`` also round-trips the chip
through an image file (JPEG for JPEG inputs); we keep it in memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pulse_engine.errors import PulseAuditError, WeightsError
from pulse_engine.generators import weights_home
from pulse_engine.generators.checkpoint import load_state_strict, load_torch_file, sha256_file

from ..core.records import Classifier, ClassifierCard, Prediction
from ..core.vocabulary import AGE_BINS, GENDERS, RACE4, RACE7
from ..vision.faces import MMOD_DETECTOR, PREDICTOR_5, missing_model_files, model_file
from .resnet34 import ResNet34

WEIGHTS_FILE = "res34_fair_align_multi_7_20190809.pt"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MAX_SIDE, CHIP_SIZE, CHIP_PADDING, INPUT_SIZE = 800, 300, 0.25, 224  # pixels; padding: fraction
BATCH = 16  # images per forward pass
DETECTORS = ("hog", "cnn")
DLIB_FILES = {"landmarks": PREDICTOR_5, "cnn": MMOD_DETECTOR}


def weights_path(weights: Path | None) -> Path:
    """The weights file: ``weights`` itself, ``weights/<WEIGHTS_FILE>`` for a folder, else the default."""
    if weights is None:
        return weights_home() / "fairface" / WEIGHTS_FILE
    weights = Path(weights).expanduser()
    return weights / WEIGHTS_FILE if weights.is_dir() else weights


def missing_assets(weights: Path | None) -> list[str]:
    """One line per missing file: the FairFace weights and dlib's landmark and MMOD models."""
    path = weights_path(weights)
    missing = [] if path.is_file() else [
        (f"missing FairFace weights {path.name}: expected {path}; download it from the FairFace "
         f"project (dchen236/FairFace README) and put it there, or pass fairface:PATH")]
    return missing + missing_model_files(tuple(DLIB_FILES.values()))


def race_variant(path: Path, race_classes: int | None) -> int:
    """7 or 4: ``race_classes`` when given, else guessed from the file name."""
    if race_classes is None:
        return 4 if re.search(r"(_4_|4race)", path.name) else 7
    if race_classes not in (4, 7):
        raise PulseAuditError(f"FairFace race_classes must be 4 or 7, got {race_classes}")
    return race_classes


def load_fairface(path: Path) -> ResNet34:
    """ResNet34(18) with the weights of ``path`` (``module.`` prefixes removed), in eval mode."""
    state = load_torch_file(path, "FairFace ResNet-34 state dict")
    if isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    model = ResNet34(18)
    load_state_strict(model, state, path, "FairFace ResNet-34 (torchvision resnet34, fc 18)")
    return model.eval()


class FaceChipper:
    """FairFace's alignment: (H, W, 3) uint8 RGB → 300 px face chip, or None when no face."""

    def __init__(self, detector: str = "hog") -> None:
        import dlib

        if detector not in DETECTORS:
            raise PulseAuditError(f"FairFace detector must be one of {DETECTORS}, got {detector!r}")
        self.dlib = dlib
        self.cnn = detector == "cnn"
        self.detect = (dlib.cnn_face_detection_model_v1(str(model_file(DLIB_FILES["cnn"]))) if self.cnn
                       else dlib.get_frontal_face_detector())
        self.landmarks = dlib.shape_predictor(str(model_file(DLIB_FILES["landmarks"])))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        h, w = image.shape[:2]
        rows, cols = (int(MAX_SIDE * h / w), MAX_SIDE) if w > h else (MAX_SIDE, int(MAX_SIDE * w / h))
        image = self.dlib.resize_image(np.ascontiguousarray(image), rows=rows, cols=cols)
        found = [d.rect for d in self.detect(image, 1)] if self.cnn else list(self.detect(image, 1))
        if not found:
            return None
        rect = max(found, key=lambda r: r.width() * r.height())
        shape = self.landmarks(image, rect)
        return np.asarray(self.dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING))


def to_input(chip: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (3, 224, 224) float32: bilinear resize, [0, 1], ImageNet normalisation."""
    resized = Image.fromarray(chip).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    array = (np.asarray(resized, dtype=np.float32) / 255.0 - MEAN) / STD
    return array.transpose(2, 0, 1)


class FairFaceClassifier(Classifier):
    """FairFace on (H, W, 3) uint8 RGB images; one Prediction per image.

    Args:
        path: the weights file.
        device: torch device.
        align: detect and chip the face as ``predict.py`` does (False: images are aligned crops).
        detector: ``hog`` (default) or ``cnn`` (``predict.py``'s MMOD detector, slow).
        race_classes: 7 or 4 (None: guessed from the file name).
    """

    name = "fairface"

    def __init__(self, path: Path, device: str = "cpu", align: bool = True, detector: str = "hog",
                 race_classes: int | None = None) -> None:
        self.device = torch.device(device)
        self.races = race_variant(path, race_classes)
        self.model = load_fairface(path).to(self.device)
        self.chipper = FaceChipper(detector) if align else None
        self.attributes = ({"race4": RACE4} if self.races == 4 else
                           {"race": RACE7, "gender": GENDERS, "age": AGE_BINS})
        how = (f"dlib {detector} detector, 5-point get_face_chip 300 px padding 0.25" if align
               else "no alignment (inputs taken as aligned crops)")
        self.card = ClassifierCard(
            name="fairface", model=f"FairFace ResNet-34, {self.races}-race weights {path.name} ({how})",
            training_data="FairFace (108,501 YFCC-100M faces; race, gender, age annotated by crowd workers; "
                          "CC BY 4.0)",
            licence="weights distributed by the FairFace authors (dchen236/FairFace); data CC BY 4.0",
            limits=("race is perceived race as annotated; the 2019-08-09 weights are the ones for val-based "
                    "audits (the 2019-11-11 'alldata' weights may include the val split); ages are bins"),
            weights=(str(path),), weights_sha256=(sha256_file(path),))

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        predictions = []
        for start in range(0, len(images), BATCH):
            chips = [self.chipper(np.asarray(im)) if self.chipper else np.asarray(im)
                     for im in images[start:start + BATCH]]
            found = [to_input(c) for c in chips if c is not None]
            logits = iter(self.model(torch.from_numpy(np.stack(found)).to(self.device)).cpu().double()
                          if found else ())
            for chip in chips:
                if chip is None:
                    predictions.append(Prediction(face_found=False, error="no face found by the dlib detector"))
                    continue
                out = next(logits)
                heads = ({"race4": (RACE4, out[0:4])} if self.races == 4 else
                         {"race": (RACE7, out[0:7]), "gender": (GENDERS, out[7:9]), "age": (AGE_BINS, out[9:18])})
                predictions.append(Prediction(face_found=True, probabilities={
                    name: dict(zip(labels, torch.softmax(z, 0).tolist())) for name, (labels, z) in heads.items()}))
        return predictions


def build(weights: Path | None, device: str = "cpu", align: bool = True, detector: str = "hog",
          race_classes: int | None = None) -> FairFaceClassifier:
    """The FairFace classifier; a missing file is a one-line WeightsError naming it."""
    missing = missing_assets(weights)
    if missing:
        raise WeightsError("; ".join(missing))
    return FairFaceClassifier(weights_path(weights), device, align, detector, race_classes)
