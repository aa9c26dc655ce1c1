"""Image grids: one row per input, LR | truth | outputs, tiles scaled with nearest neighbour."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from audit.vision.images import to_image

HEADER = 18


def tile(tensor: torch.Tensor, side: int) -> Image.Image:
    """A (3, h, w) tensor in [0, 1] as a ``side``×``side`` tile (nearest neighbour: pixels stay visible)."""
    return to_image(tensor).resize((side, side), Image.NEAREST)


def comparison_grid(rows: Sequence[Sequence[torch.Tensor | None]], headers: Sequence[str], side: int = 128,
                    gap: int = 4) -> Image.Image:
    """Compose rows of tiles under a header line; ``None`` leaves a blank cell."""
    columns = max(len(row) for row in rows)
    width = columns * side + (columns - 1) * gap
    height = HEADER + len(rows) * side + (len(rows) - 1) * gap
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for c, text in enumerate(headers):
        draw.text((c * (side + gap) + 2, 3), text, fill="black")
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell is not None:
                grid.paste(tile(cell, side), (c * (side + gap), HEADER + r * (side + gap)))
    return grid
