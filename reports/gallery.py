"""Sample grids per group (LR | truth | outputs) from a run's stored PNGs, via :mod:`reports.grids`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from audit.vision.images import to_tensor
from reports.grids import comparison_grid


def load_tile(root: Path, relative: str | None) -> torch.Tensor | None:
    """The stored image as a tensor, or None when the path is empty or the file is missing or unreadable."""
    if not relative:
        return None
    try:
        with Image.open(root / relative) as image:
            return to_tensor(image.convert("RGB"))
    except (OSError, UnidentifiedImageError):
        return None


def group_grids(root: Path, samples: Sequence[dict[str, Any]], side: int = 96) -> list[dict[str, Any]]:
    """One grid per group of ``samples`` (as in a report's ``samples``): rows are inputs, columns LR, truth and
    each stored output. Returns ``{group, items, image, missing}`` (missing = image files not found)."""
    grids = []
    for entry in samples:
        rows, missing = [], 0
        for item in entry["items"]:
            paths = [item["lr"], item["truth"], *item["outs"]]
            tiles = [load_tile(root, p) for p in paths]
            missing += sum(t is None and bool(p) for t, p in zip(tiles, paths))
            rows.append(tiles)
        if not rows:
            continue
        width = max(len(r) for r in rows)
        headers = ["LR input", "truth"] + [f"output {k}" for k in range(width - 2)]
        grids.append({"group": entry["group"], "items": [i["item_id"] for i in entry["items"]],
                      "image": comparison_grid(rows, headers, side), "missing": missing})
    return grids
