"""The records that flow through an audit, one way:
face set → upsampler → classifiers → run store → metrics → report.

Images cross module boundaries in two forms only: torch tensors (3, H, W) float32 in [0, 1]
inside the upsampling path, and numpy arrays (H, W, 3) uint8 RGB for classifiers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

LABEL_SOURCES = ("annotated", "predicted")


@dataclass(frozen=True)
class AttributeSpec:
    """One demographic attribute of a face set and where its labels come from.

    Attributes:
        name: attribute name, e.g. ``race``, ``gender``, ``age``.
        values: the label vocabulary, in display order.
        source: ``annotated`` (by the dataset's human annotators) or ``predicted`` (by a model).
        model: for predicted labels, the model and version that produced them.
        notes: known limits of these labels (shown in every report).
    """

    name: str
    values: tuple[str, ...]
    source: str
    model: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.source not in LABEL_SOURCES:
            raise ValueError(f"label source must be one of {LABEL_SOURCES}, got {self.source!r}")


@dataclass(frozen=True)
class FaceItem:
    """One face of a face set.

    Attributes:
        item_id: unique within the set and stable across runs (e.g. the path relative to the root).
        path: the image file.
        labels: attribute → value from the set's vocabulary ("" when the dataset has no label).
    """

    item_id: str
    path: Path
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class FaceSet:
    """A labelled face set: its items, its attribute vocabularies and its card."""

    name: str
    root: Path
    attributes: dict[str, AttributeSpec]
    items: list[FaceItem]
    card: Path | None = None
    licence: str = ""
    citation: str = ""
    default_group_by: tuple[str, ...] = ()  # grouping when a run names none (else race, else the first attribute)

    def grouping(self, group_by: tuple[str, ...] = ()) -> tuple[str, ...]:
        """``group_by`` if given, else this set's default grouping attribute(s)."""
        if group_by or self.default_group_by:
            return tuple(group_by or self.default_group_by)
        return ("race",) if "race" in self.attributes else tuple(self.attributes)[:1]


@dataclass
class Prediction:
    """One classifier's reading of one image.

    Attributes:
        face_found: False when the classifier's detector found no face (probabilities then empty).
        probabilities: attribute → class → probability; each inner mapping sums to 1.
        values: continuous outputs, e.g. ``{"ita": 23.4}`` (degrees) or ``{"age_years": 31.0}``.
        embedding: identity embedding (identity classifiers only).
        error: why the image could not be classified ("" when it could).
    """

    face_found: bool
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    error: str = ""

    def label(self, attribute: str) -> str:
        """The most probable class of ``attribute`` ("" when there is no face or no such attribute)."""
        probs = self.probabilities.get(attribute)
        return max(probs, key=probs.get) if probs else ""


@dataclass(frozen=True)
class ClassifierCard:
    """Provenance of a classifier, shown beside every number it produced."""

    name: str
    model: str
    training_data: str = ""
    licence: str = ""
    limits: str = ""
    weights: tuple[str, ...] = ()
    weights_sha256: tuple[str, ...] = ()


class Classifier:
    """Base class of attribute classifiers. Subclasses set ``name``, ``card`` and ``attributes``
    (attribute → class vocabulary) and implement :meth:`predict`.

    A classifier is never the generator and never shares weights with it.
    """

    name: str
    card: ClassifierCard
    attributes: dict[str, tuple[str, ...]]

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Classify (H, W, 3) uint8 RGB images of any size; one Prediction per image."""
        raise NotImplementedError


@dataclass
class UpsampleInput:
    """What an upsampler receives for one face.

    Attributes:
        item_id: the face's id (or a synthetic id for uninformative inputs).
        low: the LR image (3, h, h) in [0, 1].
        truth: the HR image at the upsampler's resolution (3, R, R) in [0, 1], None when there is none.
        source: row columns identifying the file it was read from (``source_sha256``, ``source_bytes``, …:
            ``FileStamp`` in :mod:`audit.vision.images`), stored with its rows so that a resumed run can tell
            whether that file changed; empty for inputs not read from one file.
    """

    item_id: str
    low: torch.Tensor
    truth: torch.Tensor | None = None
    source: Mapping[str, str | int] = field(default_factory=dict)


@dataclass
class UpsampleOutput:
    """One output of an upsampler: the image (3, R, R) in [0, 1] and its diagnostics
    (e.g. success, lr_l2, best_step, steps, restarts_used, seed, seconds)."""

    image: torch.Tensor
    diagnostics: dict[str, float | int | bool | str] = field(default_factory=dict)


class Upsampler:
    """Base class of upsamplers: ``name``, output ``resolution`` R, and :meth:`upsample`."""

    name: str
    resolution: int

    def upsample(self, inputs: Sequence[UpsampleInput], samples: int) -> list[list[UpsampleOutput]]:
        """``samples`` outputs per input (deterministic upsamplers return copies of one output)."""
        raise NotImplementedError
