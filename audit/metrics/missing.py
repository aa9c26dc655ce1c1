"""Missing measurements: how often a detector-based instrument measured, and how far a mean could move if the
faces it missed are not missing at random (MNAR).

A value is missing when the instrument found no face (or too little skin) on either side of a pair. Three views
per group, all on the rows of one run:

* **detection rate**: measured rows / rows, with a Wilson interval;
* **worst-case (Manski) bounds** on the mean over all rows: the missing values set to the lowest and to the
  highest value they could take (``low``, ``high``; by default the observed range, i.e. "no more extreme than
  anything we saw"). With a share *m* missing the bounds are ``(1 − m)·mean_obs + m·low`` and
  ``(1 − m)·mean_obs + m·high``;
* **a sensitivity line** (delta adjustment, a pattern-mixture model): if the missing values averaged
  ``mean_obs + δ``, the mean over all rows is ``mean_obs + m·δ``. The *tipping* δ is the offset at which that
  mean reaches a target (0 by default: the sign of a ΔITA flips): ``(target − mean_obs) / m``.

Nothing here models why faces are missed; the bounds say how much the missing could matter, not how much
it does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..stats.intervals import wilson_interval

DELTAS = (-20.0, -10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
"""Default sensitivity offsets (in the value's unit, e.g. degrees of ITA)."""


def _grouped(data: pd.DataFrame, groups: Sequence[str] | None) -> list[tuple[str, pd.DataFrame]]:
    if not groups:
        return [("all", data)]
    out = []
    for key, part in data.groupby(list(groups), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append((" × ".join(map(str, key)), part))
    return out


def detection_rates(data: pd.DataFrame, measured: pd.Series | np.ndarray, groups: Sequence[str] | None = None,
                    confidence: float = 0.95) -> pd.DataFrame:
    """Per group (and ``all``): rows, rows measured, the rate and its Wilson interval.

    Args:
        data: the run's rows (only the ``groups`` columns are read).
        measured: one bool per row of ``data`` (True when the instrument gave a value).
    """
    flags = pd.Series(np.asarray(measured, dtype=bool), index=data.index)
    parts = [("all", data)] + (_grouped(data, groups) if groups else [])
    rows = []
    for name, part in parts:
        n, k = len(part), int(flags.loc[part.index].sum())
        low, high = wilson_interval(k, n, confidence)
        rows.append({"group": name, "rows": n, "measured": k, "rate": k / n if n else np.nan,
                     "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows)


def mnar_bounds(values: np.ndarray, low: float | None = None, high: float | None = None) -> dict[str, float]:
    """Worst-case bounds on the mean of ``values`` over all rows, NaN = missing (see the module docstring).

    Returns:
        ``n``, ``observed``, ``missing_share``, ``mean_observed``, ``low``, ``high`` (the values assumed for the
        missing) and ``lower``, ``upper`` (the bounds on the full mean). NaN means when nothing was observed.
    """
    values = np.asarray(values, dtype=np.float64)
    seen = values[np.isfinite(values)]
    n, k = len(values), len(seen)
    if k == 0:
        return {"n": n, "observed": 0, "missing_share": 1.0 if n else np.nan, "mean_observed": np.nan,
                "low": np.nan, "high": np.nan, "lower": np.nan, "upper": np.nan}
    low = float(seen.min()) if low is None else float(low)
    high = float(seen.max()) if high is None else float(high)
    share = (n - k) / n
    mean = float(seen.mean())
    return {"n": n, "observed": k, "missing_share": share, "mean_observed": mean, "low": low, "high": high,
            "lower": (1 - share) * mean + share * low, "upper": (1 - share) * mean + share * high}


def delta_adjusted_mean(values: np.ndarray, delta: float) -> float:
    """The mean over all rows if the missing values averaged ``mean_observed + delta``."""
    values = np.asarray(values, dtype=np.float64)
    seen = values[np.isfinite(values)]
    if len(seen) == 0:
        return float("nan")
    share = 1 - len(seen) / len(values)
    return float(seen.mean() + share * delta)


def tipping_delta(values: np.ndarray, target: float = 0.0) -> float:
    """The offset δ of the missing values' mean (from the observed mean) at which the full mean equals
    ``target``; NaN when nothing is missing or nothing observed (no δ can move the mean)."""
    values = np.asarray(values, dtype=np.float64)
    seen = values[np.isfinite(values)]
    share = 1 - len(seen) / len(values) if len(values) else 0.0
    if len(seen) == 0 or share == 0:
        return float("nan")
    return float((target - seen.mean()) / share)


def missing_sensitivity(data: pd.DataFrame, column: str, groups: Sequence[str] | None = None,
                        deltas: Sequence[float] = DELTAS, low: float | None = None, high: float | None = None,
                        target: float = 0.0) -> pd.DataFrame:
    """Per group (and ``all``): :func:`mnar_bounds`, :func:`tipping_delta` and the delta-adjusted mean at each
    of ``deltas`` (columns ``mean_at_<δ>``) for the values of ``column`` (NaN = missing).

    ``low``/``high`` default to the observed range over all rows, the same for every group.
    """
    everything = data[column].to_numpy(dtype=np.float64)
    finite = everything[np.isfinite(everything)]
    if len(finite):
        low = float(finite.min()) if low is None else low
        high = float(finite.max()) if high is None else high
    parts = [("all", data)] + (_grouped(data, groups) if groups else [])
    rows = []
    for name, part in parts:
        values = part[column].to_numpy(dtype=np.float64)
        row = {"group": name, **mnar_bounds(values, low, high), "tipping_delta": tipping_delta(values, target)}
        row |= {f"mean_at_{d:+g}": delta_adjusted_mean(values, d) for d in deltas}
        rows.append(row)
    return pd.DataFrame(rows)
