"""Antialiased bicubic downsampling by an integer factor (PULSE's operator).

The Keys cubic kernel with a = −0.5 is stretched by the factor f (like MATLAB ``imresize`` with
antialiasing): 4·f taps per axis, sampled at the centres of the input pixels under the output
pixel's support, normalised to sum 1. The image is reflect-padded by 3·f per axis
(⌊3f/2⌋ before, the rest after) and filtered separably with stride f, so an H×W input gives
(H/f)×(W/f). For even f this is exactly PULSE's ``BicubicDownSample``; for odd f (which PULSE never
uses) the taps are centred on the output pixel. The same operator makes the low-resolution inputs
and drives the search loss. Works on any device and dtype.

Padding, filtering and striding along one axis are one linear map, so each axis is applied as a
matrix, (H/f)×H (:func:`resize_matrix`, built in float64 with the reflection folded in):
``low = M_H · image · M_Wᵀ``, two batched matrix products forward and two backward. That replaces
two reflection pads and two grouped convolutions (and their backward passes), which took four times
as long in the 64 px search step. The dense matrices do more multiply-adds than the 4·f taps
(H instead of 4·f per output value; at 64 px and f = 4 under 0.2 % of the search step's work).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

KEYS_A = -0.5


def keys_cubic(x: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel evaluated at ``x`` (float64)."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    near = (a + 2) * ax**3 - (a + 3) * ax**2 + 1
    far = a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a
    return np.where(ax <= 1, near, np.where(ax < 2, far, 0.0))


def padding(factor: int) -> tuple[int, int]:
    """(before, after) reflect padding along one axis: ⌊3f/2⌋ and 3f − ⌊3f/2⌋."""
    before = (3 * factor) // 2
    return before, 3 * factor - before


def kernel_taps(factor: int) -> np.ndarray:
    """The 4·f normalised taps (float64) of the stretched Keys kernel for ``factor``."""
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    before, _ = padding(factor)
    i = np.arange(4 * factor, dtype=np.float64)
    offsets = (i - before - (factor - 1) / 2) / factor
    taps = keys_cubic(offsets)
    return taps / taps.sum()


@lru_cache(maxsize=32)
def resize_matrix(size: int, factor: int) -> np.ndarray:
    """The (size/f)×size float64 matrix of one axis: output o takes the 4·f taps at input positions
    o·f − ⌊3f/2⌋ …, each position reflected into 0 … size−1 (no edge repeat: numpy/torch ``reflect``)."""
    taps = kernel_taps(factor)
    before, _ = padding(factor)
    positions = np.arange(size // factor)[:, None] * factor - before + np.arange(4 * factor)[None, :]
    positions = np.abs(positions)  # reflect below 0 (−p → p); ⌊3f/2⌋ < size, so once is enough
    positions = np.where(positions >= size, 2 * (size - 1) - positions, positions)
    matrix = np.zeros((size // factor, size))
    np.add.at(matrix, (np.arange(size // factor)[:, None].repeat(4 * factor, 1), positions), taps[None, :])
    matrix.flags.writeable = False
    return matrix


class BicubicDownsample(nn.Module):
    """Downsample (B, C, H, W) images by an integer ``factor``.

    Args:
        factor: integer scale factor f ≥ 1; H and W must be multiples of f and larger than 1.5·f.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = int(factor)
        if self.factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self._matrices: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"factor={self.factor}, taps={4 * self.factor}, a={KEYS_A}"

    def matrix(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """:func:`resize_matrix` for ``size`` in the dtype and on the device of ``like`` (kept for reuse)."""
        key = (size, like.dtype, like.device)
        if key not in self._matrices:
            self._matrices[key] = torch.tensor(resize_matrix(size, self.factor)).to(like.device, like.dtype)
        return self._matrices[key]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
        f = self.factor
        if f == 1:
            return images
        _, _, height, width = images.shape
        if height % f or width % f:
            raise ValueError(f"image size {height}×{width} is not a multiple of the factor {f}")
        before, _ = padding(f)
        if before >= height or before >= width:
            raise ValueError(f"image size {height}×{width} is too small for factor {f} (reflect pad {before})")
        return torch.matmul(torch.matmul(self.matrix(height, images), images), self.matrix(width, images).mT)


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Functional form of :class:`BicubicDownsample` (builds the taps on each call)."""
    return BicubicDownsample(factor).to(images.device)(images)


def factor_between(high: int, low: int) -> int:
    """The integer factor that takes side ``high`` to side ``low``, or a clear error."""
    if low <= 0 or high % low:
        raise ValueError(f"{high} px is not an integer multiple of {low} px")
    factor = high // low
    if not math.isfinite(factor) or factor < 1:
        raise ValueError(f"cannot downsample {high} px to {low} px")
    return factor
