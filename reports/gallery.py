"""Sample grids per group (LR | truth | outputs) from a run's stored PNGs, via :mod:`reports.grids`.

Every stored image is read through :meth:`reports.run_data.Run.read_image` (the project's bounded reader, after
checking the stored path); one that cannot be read becomes a placeholder tile, and its one-line reason is kept
with the grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, ImageDraw

from audit.vision.images import to_tensor
from pulse_engine.errors import InputImageError
from reports.grids import comparison_grid
from reports.run_data import Run

MAX_PROBLEMS = 10
"""Reasons listed per grid; more are counted, not listed."""


def placeholder(side: int) -> torch.Tensor:
    """A grey ``side``×``side`` tile marked "unreadable", in place of an image that could not be read."""
    image = Image.new("RGB", (side, side), (200, 200, 200))
    ImageDraw.Draw(image).text((4, side // 2 - 6), "unreadable", fill="black")
    return to_tensor(image)


def load_tile(run: Run, relative: Any, side: int) -> tuple[torch.Tensor | None, str]:
    """(tile, reason): the stored image scaled to ``side``×``side`` (nearest neighbour), or None and "" when the row
    has no image, or a :func:`placeholder` and the one-line reason when it cannot be read."""
    try:
        image = run.read_image(relative)
    except InputImageError as exc:
        return placeholder(side), str(exc)
    return (None, "") if image is None else (to_tensor(image.resize((side, side), Image.NEAREST)), "")


def group_grids(run: Run, samples: Sequence[dict[str, Any]], side: int = 96) -> list[dict[str, Any]]:
    """One grid per group of ``samples`` (as in a report's ``samples``): rows are inputs, columns LR, truth and
    each stored output. Returns ``{group, items, image, missing, problems}`` (missing: images that could not be
    shown; problems: the first :data:`MAX_PROBLEMS` reasons, one line each)."""
    grids = []
    for entry in samples:
        rows, problems = [], []
        for item in entry["items"]:
            loaded = [load_tile(run, p, side) for p in [item["lr"], item["truth"], *item["outs"]]]
            problems += [reason for _, reason in loaded if reason]
            rows.append([tile for tile, _ in loaded])
        if not rows:
            continue
        width = max(len(r) for r in rows)
        headers = ["LR input", "truth"] + [f"output {k}" for k in range(width - 2)]
        grids.append({"group": entry["group"], "items": [i["item_id"] for i in entry["items"]],
                      "image": comparison_grid(rows, headers, side), "missing": len(problems),
                      "problems": problems[:MAX_PROBLEMS]})
    return grids
