"""A run's headline metrics per group: search success (the share of outputs that met eps) beside mean ΔITA (both
skin-tone instruments) and identity preservation (the share of outputs the identity model reads as the input's
person), each with its interval over inputs (:class:`MetricFrame`). Outputs that missed eps stay in every number.
"""

from __future__ import annotations

import pandas as pd

from audit.core.schema import DELTA_ITA, DELTA_ITA_ALIGNED, IDENTITY_DISTANCE, ITEM, SUCCESS
from audit.metrics.frame import Metric, MetricFrame
from audit.metrics.study import SAME_PERSON


def same_person(faces: pd.DataFrame) -> pd.Series:
    """Per row: 1 when the identity distance is below :data:`SAME_PERSON`, 0 above, NaN when not measured."""
    distance = pd.to_numeric(faces[IDENTITY_DISTANCE], errors="coerce")
    return (distance < SAME_PERSON).astype(float).where(distance.notna())


def headline_frame(faces: pd.DataFrame, groups: list[str] | None, n_boot: int, seed: int,
                   confidence: float) -> MetricFrame | None:
    """The headline metrics the face rows have (``search_success``, ``delta_ita``, ``delta_ita_aligned``,
    ``identity_preserved``, in that order) by ``groups`` (label columns; None: overall only), or None when they have
    none of them."""
    data = faces.copy()
    metrics: dict[str, Metric] = {}
    if SUCCESS in data and data[SUCCESS].notna().any():
        data["_success"] = data[SUCCESS].astype(float)
        metrics["search_success"] = Metric("_success", "rate")
    for column, name in ((DELTA_ITA, "delta_ita"), (DELTA_ITA_ALIGNED, "delta_ita_aligned")):
        if column in data and data[column].notna().any():
            metrics[name] = Metric(column)
    if IDENTITY_DISTANCE in data and data[IDENTITY_DISTANCE].notna().any():
        data["_same_person"] = same_person(data)
        metrics["identity_preserved"] = Metric("_same_person", "rate")
    if not metrics:
        return None
    return MetricFrame(data, metrics, groups, ITEM, n_boot=n_boot, seed=seed, confidence=confidence)
