"""Study figures: one per headline metric, drawn from the study dict only (see :mod:`reports.study`).

Each figure is readable on its own: the dose on x (with its unit), the metric on y (with unit and sign
convention), one colour per condition (factor), each run's value with its interval, and the fitted
dose–response line with its slope, test verdict and adjusted p in the legend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from reports.formatting import pval
from reports.plots import plt, to_image

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _y(x: Any, rate: bool) -> float:
    return math.nan if x is None else 100 * x if rate else x


XLABELS = {"composition": "share of light faces in the generator's training data (%)",
           "shift": "prior shift along the skin-tone direction (prior SDs)"}


def _panel(ax: Any, study: Mapping[str, Any], metric: Mapping[str, Any], rows: list[Mapping[str, Any]],
           dosed: bool) -> None:
    """One panel: the runs of one dose design, a colour per condition, the fitted trend per condition."""
    rate = not metric["unit"]
    conditions = sorted({(r["factor"], r["resolution"]) for r in rows})
    for i, (factor, resolution) in enumerate(conditions):
        colour = COLOURS[i % len(COLOURS)]
        mine = [r for r in rows if (r["factor"], r["resolution"]) == (factor, resolution)]
        scale = 100 if dosed and mine[0]["design"] == "composition" else 1
        xs = np.array([r["dose"] * scale if dosed else rows.index(r) for r in mine], float)
        s = [r["cells"][metric["key"]]["summary"] for r in mine]
        ys = np.array([_y(v["value"], rate) for v in s], float)
        lo = np.array([_y(v["ci_low"], rate) for v in s], float)
        hi = np.array([_y(v["ci_high"], rate) for v in s], float)
        span = (np.nanmax(xs) - np.nanmin(xs)) if len(xs) > 1 else 1.0
        jitter = (i - (len(conditions) - 1) / 2) * 0.012 * (span or 1.0)
        err = np.nan_to_num(np.vstack([np.clip(ys - lo, 0, None), np.clip(hi - ys, 0, None)]))
        label = f"×{factor} ({resolution // factor if factor else '?'} px input → {resolution} px)"
        trend = next((t for t in study["trends"] if t["metric"] == metric["key"] and t["factor"] == factor
                      and t["resolution"] == resolution and t["design"] == mine[0]["design"]), None)
        if trend:
            verdict = trend["test"]["verdict"]
            label += f": {verdict}" + (f", {pval(trend['test']['p_adjusted'])} adj." if verdict != "not testable"
                                       else "")
        ax.errorbar(xs + jitter, ys, yerr=err, fmt="o", color=colour, capsize=3, label=label)
        if trend and trend["slope"] is not None and dosed:
            d = np.array(trend["doses"], float)
            v = np.array([_y(x, rate) for x in trend["values"]], float)
            grid = np.linspace(d.min(), d.max(), 20)
            line = np.nanmean(v) + trend["slope"] * (100 if rate else 1) * (grid - d.mean())
            ax.plot(grid * scale, line, color=colour, lw=1.5, ls="-" if trend["test"]["verdict"] == "finding"
                    else ":")
    if dosed:
        ax.set_xlabel(XLABELS[rows[0]["design"]])
    else:
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right")
    unit = "%" if rate else metric["unit"].strip()
    ax.set_ylabel(f"{metric['name']} ({unit})" if unit else metric["name"])
    if metric["key"] == "delta_ita":
        ax.axhline(0, color="#888", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def metric_figure(study: Mapping[str, Any], metric: Mapping[str, Any]) -> Image.Image | None:
    """The dose–response figure of one metric, one panel per dose design (None when no run measured it)."""
    rows = [r for r in study["runs"] if r["cells"][metric["key"]]["summary"]
            and r["cells"][metric["key"]]["summary"]["n_units"]]
    if not rows:
        return None
    dosed = [r for r in rows if r["dose"] is not None]
    panels = [[r for r in dosed if r["design"] == d] for d in XLABELS] if dosed else [rows]
    panels = [p for p in panels if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _panel(ax, study, metric, panel, bool(dosed))
    fig.suptitle(f"{metric['name']}: {metric['meaning']}", fontsize=9)
    return to_image(fig)


def study_figures(study: Mapping[str, Any]) -> dict[str, Image.Image]:
    """metric key → figure, for every metric some run measured."""
    figures = {m["key"]: metric_figure(study, m) for m in study["metrics"]}
    return {k: v for k, v in figures.items() if v is not None}
