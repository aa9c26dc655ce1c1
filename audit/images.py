"""Reading face images into tensors and writing results back, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pulse_engine.downsample import BicubicDownsample, factor_between
from pulse_engine.errors import InputImageError

CROP_MODES = ("none", "center")


def read_rgb(path: Path, crop: str = "none") -> Image.Image:
    """Open ``path`` as an RGB PIL image: transparency is composited over white, greyscale and
    palette images are expanded to RGB.

    Args:
        path: PNG, JPEG or any format Pillow reads.
        crop: ``none`` (a non-square image is an error) or ``center`` (largest central square).
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
            rgb = image.convert("RGB")
    except FileNotFoundError as exc:
        raise InputImageError(f"{path}: no such file") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputImageError(f"{path}: not a readable image ({type(exc).__name__})") from exc
    width, height = rgb.size
    if width != height:
        if crop != "center":
            raise InputImageError(f"{path}: image is {width}×{height}, not square; pass --crop center "
                                  "to use its central square")
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    return rgb


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor in [0, 1] (clamped) as an 8-bit RGB image."""
    array = (tensor.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    return Image.fromarray(array, "RGB")


def prepare_pair(path: Path, resolution: int, factor: int, lr_given: bool = False,
                 crop: str = "none") -> tuple[torch.Tensor | None, torch.Tensor]:
    """Load one input as (HR truth or None, LR input), both (3, side, side) in [0, 1].

    Args:
        path: the image.
        resolution: the generator's output side R.
        factor: downscale factor for HR inputs (R must be a multiple of it).
        lr_given: the file already is the LR input; its side must divide R.
        crop: ``none`` or ``center`` (see :func:`read_rgb`).
    """
    image = read_rgb(path, crop)
    if lr_given:
        side = image.size[0]
        try:
            factor_between(resolution, side)
        except ValueError as exc:
            raise InputImageError(f"{path}: a {side} px LR input does not divide the generator's "
                                  f"{resolution} px output") from exc
        return None, to_tensor(image)
    if resolution % factor:
        raise InputImageError(f"factor {factor} does not divide the generator's {resolution} px output")
    if image.size[0] != resolution:
        image = image.resize((resolution, resolution), Image.LANCZOS)
    truth = to_tensor(image)
    low = BicubicDownsample(factor)(truth.unsqueeze(0))[0].clamp(0, 1)
    return truth, low
