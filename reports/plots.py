"""Report figures (matplotlib, Agg backend), each drawn from numbers already in a report dict and returned as a
PIL image for :func:`reports.html.data_uri`."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["text.parse_math"] = False  # labels are user text ("$\\x$" would fail as mathtext)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 96
Rows = Sequence[Mapping[str, Any]]


def to_image(fig: Figure) -> Image.Image:
    """Render and close ``fig``; returns an RGB PIL image."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def transition_heatmap(categories: Sequence[str], counts: Sequence[Sequence[int]], title: str) -> Image.Image:
    """Input label (rows) → output label (columns): colour = row rate, text = count."""
    c = np.asarray(counts, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.nan_to_num(c / c.sum(axis=1, keepdims=True))
    k = len(categories)
    fig, ax = plt.subplots(figsize=(1.2 + 0.62 * k, 1.0 + 0.55 * k))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(c[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), categories, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), categories, fontsize=8)
    ax.set_xlabel("output label")
    ax.set_ylabel("input label")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the input row")
    return to_image(fig)


def group_rates(series: Mapping[str, Rows], title: str, xlabel: str, as_pct: bool = True) -> Image.Image:
    """Per-group values with interval error bars; one marker style per series (several runs side by side).
    Each row has ``group``, ``value``, ``ci_low``, ``ci_high``."""
    groups = list(dict.fromkeys(r["group"] for rows in series.values() for r in rows))
    scale = 100 if as_pct else 1
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.38 * len(groups) * max(1, len(series)) ** 0.5))
    offsets = np.linspace(-0.2, 0.2, len(series)) if len(series) > 1 else [0.0]
    for (name, rows), offset, marker in zip(series.items(), offsets, "osD^v<>"):
        found = [r for r in rows if r["value"] is not None]
        y = [groups.index(r["group"]) + offset for r in found]
        x = np.array([r["value"] for r in found], float) * scale
        low = np.array([r["ci_low"] if r["ci_low"] is not None else r["value"] for r in found], float) * scale
        high = np.array([r["ci_high"] if r["ci_high"] is not None else r["value"] for r in found], float) * scale
        # a percentile interval need not contain the point estimate (small groups): whiskers stop at it
        xerr = np.nan_to_num(np.clip([x - low, high - x], 0, None))
        ax.errorbar(x, y, xerr=xerr, fmt=marker, capsize=3, label=name)
    ax.set_yticks(range(len(groups)), groups, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel + (" (%)" if as_pct else ""))
    if as_pct:
        ax.set_xlim(-2, 102)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="best")
    return to_image(fig)


def shift_distributions(histogram: Mapping[str, Any], title: str, xlabel: str) -> Image.Image:
    """Per-series (group or run) histograms as density step lines on shared edges, with median ticks."""
    edges = np.asarray(histogram["edges"], float)
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for s in histogram["series"]:
        counts = np.asarray(s["counts"], float)
        density = counts / max(counts.sum(), 1) / np.diff(edges)
        line = ax.stairs(density, edges, label=f"{s['name']} (n = {s['n']})", linewidth=1.4)
        if s.get("median") is not None:
            ax.axvline(s["median"], color=line.get_edgecolor(), linestyle=":", linewidth=1)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return to_image(fig)


def monk_strip(categories: Sequence[str], inputs: Sequence[int], outputs: Sequence[int],
               colours: Sequence[str] | None) -> Image.Image:
    """The Monk swatches with the number of inputs (above) and outputs (below) read as each tone."""
    k = len(categories)
    colours = list(colours) if colours and len(colours) == k else ["#bbbbbb"] * k
    fig, ax = plt.subplots(figsize=(0.7 * k + 1.4, 2.6))
    top = max(max(inputs, default=0), max(outputs, default=0), 1)
    for i, (name, colour) in enumerate(zip(categories, colours)):
        ax.add_patch(plt.Rectangle((i, -0.5), 0.9, 1.0, color=colour, ec="black", lw=0.5))
        ax.bar(i + 0.45, inputs[i] / top * 2, bottom=0.6, width=0.6, color="#4c72b0")
        ax.bar(i + 0.45, -outputs[i] / top * 2, bottom=-0.6, width=0.6, color="#dd8452")
        ax.text(i + 0.45, 0.65 + inputs[i] / top * 2, str(inputs[i]), ha="center", va="bottom", fontsize=7)
        ax.text(i + 0.45, -0.65 - outputs[i] / top * 2, str(outputs[i]), ha="center", va="top", fontsize=7)
        ax.text(i + 0.45, 0, name.replace("MST", ""), ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.2, k + 0.1)
    ax.set_ylim(-3.2, 3.2)
    ax.set_yticks([1.6, -1.6], ["inputs", "outputs"])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title("Monk skin tone of inputs (above) and outputs (below)", fontsize=10)
    return to_image(fig)
