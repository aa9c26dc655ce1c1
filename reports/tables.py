"""Plain JSON values from metric tables: numpy scalars → Python numbers, NaN → null (not computable: the record
says why where a reason exists, e.g. a test's ``reason``) and ±∞ → the strings "inf" / "-inf" (an infinite value
is a value, not a missing one)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def clean(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars and arrays become Python values, NaN becomes None and ±inf "inf" / "-inf",
    tuples become lists, mapping keys become strings."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        x = float(value)
        return x if math.isfinite(x) else None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    return value if isinstance(value, str) else str(value)


def group_label(row: pd.Series | dict, columns: Sequence[str]) -> str:
    """A group's display label: its values joined by " × " (intersections), "all" without group columns."""
    return " × ".join(str(row[c]) for c in columns) if columns else "all"


def records(frame: pd.DataFrame, groups: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows as clean dicts; with ``groups``, each row also gets ``group`` (see :func:`group_label`)."""
    out = []
    for row in frame.to_dict(orient="records"):
        if groups:
            row = {"group": group_label(row, groups), **row}
        out.append(clean(row))
    return out


def indexed_records(frame: pd.DataFrame, name: str) -> list[dict[str, Any]]:
    """Records of a frame whose index carries a key (e.g. the category), stored under ``name``."""
    return records(frame.rename_axis(name).reset_index())
