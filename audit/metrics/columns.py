"""The metrics' view of the run table: which columns to audit, and which rows are faces.

Column names come from :mod:`audit.core.schema` (re-exported here for the metrics); everything else in
:mod:`audit.metrics` takes plain column names.
"""

from __future__ import annotations

import pandas as pd

from audit.core.schema import (
    INPUT_KIND,
    ITEM,
    SAMPLE,
    SIDES,
    classifier_column,
    face_column,
    label_column,
    label_source_column,
    probability_columns,
    value_column,
)

__all__ = ["INPUT_KIND", "ITEM", "SAMPLE", "SIDES", "classifier_column", "face_column", "label_column",
           "label_source_column", "probability_columns", "require", "split_inputs", "truth_column", "value_column"]


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
