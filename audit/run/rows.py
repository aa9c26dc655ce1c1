"""The flat columns that one classifier reading contributes to a result row (names: :mod:`audit.core.schema`).

For a classifier C on side S (``in`` = the true HR image, ``out`` = the upsampler's output):
``S_C_face`` (bool), per attribute A ``S_C_A`` (most probable class, "" without a face) and
``S_C_A_p_<class>`` (probability, null without a face; spaces in the class as ``_``) for every class of C's vocabulary,
``S_C_<value>`` for continuous values (e.g. ``ita`` in degrees, ``age_years``; a column appears
once some image has the value, or always when the classifier declares ``value_names``) and ``S_C_error``
when C could not read the image. Comparisons of the two sides: ``identity_distance`` (Euclidean
distance of the ``identity`` embeddings; same person below 0.6), ``psnr``/``ssim`` against the true
image, and ``delta_ita`` (output − truth
ITA° of ``skin-tone``, wrapped into (−180°, 180°]; ``delta_ita_aligned`` of ``skin-tone-aligned``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pulse_engine.errors import one_line

from ..classifiers.skin_tone import ita_change
from ..core.records import Classifier, Prediction
from ..core.schema import (
    DELTA_ITA,
    DELTA_ITA_ALIGNED,
    IDENTITY_DISTANCE,
    PSNR,
    SSIM,
    classifier_column,
    error_column,
    face_column,
    probability_column,
    value_column,
)
from ..vision.image_quality import psnr, ssim

IDENTITY = "identity"
DELTA_ITA_COLUMNS = {"skin-tone": DELTA_ITA, "skin-tone-aligned": DELTA_ITA_ALIGNED}
"""Skin-tone classifier → its output − truth ITA° column."""


def safe_predict(classifier: Classifier, arrays: list[np.ndarray]) -> list[Prediction]:
    """``classifier.predict``; if the batch raises, images are retried one by one and an image that
    still fails gets a no-face Prediction whose ``error`` holds the exception (the run goes on)."""
    try:
        return list(classifier.predict(arrays))
    except Exception:  # noqa: BLE001 - find the failing image and keep its message in the row
        predictions = []
        for array in arrays:
            try:
                predictions.extend(classifier.predict([array]))
            except Exception as exc:  # noqa: BLE001
                predictions.append(Prediction(False, error=one_line(f"{classifier.name}: {type(exc).__name__}: {exc}")))
        return predictions


def prediction_columns(side: str, classifier: Classifier, prediction: Prediction) -> dict[str, Any]:
    """The columns of one prediction (see the module docstring)."""
    name = classifier.name
    row: dict[str, Any] = {face_column(side, name): bool(prediction.face_found)}
    attributes = {**{a: () for a in prediction.probabilities}, **classifier.attributes}
    for attr, classes in attributes.items():
        probs = prediction.probabilities.get(attr, {})
        row[classifier_column(side, name, attr)] = prediction.label(attr)
        for cls in dict.fromkeys([*classes, *probs]):
            row[probability_column(side, name, attr, cls)] = float(probs[cls]) if cls in probs else None
    row |= {value_column(side, name, key): None for key in getattr(classifier, "value_names", ())}  # always a column
    row |= {value_column(side, name, key): float(value) for key, value in prediction.values.items()}
    if prediction.error:
        row[error_column(side, name)] = prediction.error
    return row


def side_columns(side: str, classifiers: Sequence[Classifier], predictions: Sequence[Prediction]) -> dict[str, Any]:
    """The columns of every classifier's prediction on one side (``in`` or ``out``)."""
    row: dict[str, Any] = {}
    for classifier, prediction in zip(classifiers, predictions):
        row |= prediction_columns(side, classifier, prediction)
    return row


def comparisons(classifiers: Sequence[Classifier], truth: Sequence[Prediction],
                output: Sequence[Prediction]) -> dict[str, float | None]:
    """``identity_distance`` and ``delta_ita`` when those classifiers ran (None when a side lacks
    the embedding or the ITA value, e.g. no face found)."""
    row: dict[str, float | None] = {}
    for classifier, a, b in zip(classifiers, truth, output):
        if classifier.name == IDENTITY:
            both = a.embedding is not None and b.embedding is not None
            distance = np.linalg.norm(np.asarray(a.embedding, float) - np.asarray(b.embedding, float)) if both else None
            row[IDENTITY_DISTANCE] = None if distance is None else float(distance)
        if classifier.name in DELTA_ITA_COLUMNS:
            both = "ita" in a.values and "ita" in b.values
            row[DELTA_ITA_COLUMNS[classifier.name]] = ita_change(b.values["ita"], a.values["ita"]) if both else None
    return row


PSNR_CAP_DB = 100.0
"""PSNR of identical images is infinite; it is stored as this cap so that means stay finite."""


def fidelity(output: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """``psnr`` (dB, capped at :data:`PSNR_CAP_DB`) and ``ssim`` (Gaussian window, [−1, 1]) of an
    output against the true HR image, both (3, R, R) in [0, 1]."""
    a = output.detach().clamp(0, 1).permute(1, 2, 0).double().cpu().numpy()
    b = truth.detach().clamp(0, 1).permute(1, 2, 0).double().cpu().numpy()
    return {PSNR: min(psnr(a, b), PSNR_CAP_DB), SSIM: ssim(a, b)}
