"""Adapter from "attribute + classifier + side" to the run table's flat column names.

The run table (one row per input × sample) names its columns:
``label_<attr>`` / ``label_source_<attr>`` (dataset labels and their provenance), ``ups_<diagnostic>``,
``<side>_<classifier>_face`` (bool), ``<side>_<classifier>_<attr>`` (label string),
``<side>_<classifier>_<attr>_p_<class>`` (probability), ``<side>_<classifier>_<value>`` (continuous output),
with side ``in`` (classifier on the original) or ``out`` (on the upsampled output). Everything else in
:mod:`audit.metrics` takes plain column names; only this module knows the pattern.
"""

from __future__ import annotations

import pandas as pd

SIDES = ("in", "out")
ITEM = "item_id"
SAMPLE = "sample"
INPUT_KIND = "input_kind"  # "face" (a labelled face), "ucpr" (an uninformative average face), "skipped"


def label_column(attribute: str) -> str:
    """Dataset label of ``attribute``, e.g. ``label_race``."""
    return f"label_{attribute}"


def label_source_column(attribute: str) -> str:
    """Provenance of the dataset label ("annotated" / "predicted"), e.g. ``label_source_race``."""
    return f"label_source_{attribute}"


def _side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


def classifier_column(side: str, classifier: str, attribute: str) -> str:
    """Label a classifier gave on one side, e.g. ``out_fairface_race``."""
    return f"{_side(side)}_{classifier}_{attribute}"


def value_column(side: str, classifier: str, value: str) -> str:
    """Continuous classifier output, e.g. ``in_skin-tone_ita``."""
    return f"{_side(side)}_{classifier}_{value}"


def face_column(side: str, classifier: str) -> str:
    """Whether the classifier found a face, e.g. ``out_fairface_face``."""
    return f"{_side(side)}_{classifier}_face"


def probability_columns(data: pd.DataFrame, side: str, classifier: str, attribute: str) -> dict[str, str]:
    """Class → probability column for one classifier/attribute/side, in the table's column order."""
    prefix = f"{classifier_column(side, classifier, attribute)}_p_"
    return {c[len(prefix):]: c for c in data.columns if c.startswith(prefix)}


def truth_column(attribute: str, classifier: str, truth: str = "label") -> str:
    """The input-side label to audit against: ``truth="label"`` for the dataset label, ``"in"`` for the classifier
    on the original image (what the benchmark calls the reference label after keeping correct predictions)."""
    if truth == "label":
        return label_column(attribute)
    if truth == "in":
        return classifier_column("in", classifier, attribute)
    raise ValueError(f"truth must be 'label' or 'in', got {truth!r}")


def require(data: pd.DataFrame, *columns: str | None) -> None:
    """Raise KeyError naming every requested column the table lacks (None entries are ignored)."""
    missing = [c for c in columns if c is not None and c not in data.columns]
    if missing:
        raise KeyError(f"run table lacks column(s) {missing}")


def split_inputs(data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(face rows, uninformative rows) by ``input_kind`` ("face" / "ucpr"); other kinds (e.g. "skipped") are left
    out. A table without the column is all faces: (data, None)."""
    if INPUT_KIND not in data.columns:
        return data, None
    ucpr = data[data[INPUT_KIND] == "ucpr"]
    return data[data[INPUT_KIND] == "face"], (ucpr if len(ucpr) else None)
