"""Full-reference image quality in numpy: PSNR and SSIM (Wang et al. 2004, Gaussian window).

Images are float arrays in [0, data_range] (default 1), (H, W) or with a channel axis; both images of a pair must
have the same shape. Compute them per output against its original, store them as columns, and summarise per group
with :func:`audit.metrics.continuous.upsampler_metrics` (``extra={"psnr": "psnr", "ssim": "ssim"}``).
"""

from __future__ import annotations

import math

import numpy as np

SIGMA, RADIUS = 1.5, 5  # 11×11 Gaussian window: radius int(3.5·σ + 0.5) = 5, as skimage with gaussian_weights
K1, K2 = 0.01, 0.03


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a, b


def psnr(image: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(R²/MSE), MSE over all pixels and channels; ∞ for equal images."""
    a, b = _pair(image, reference)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _window() -> np.ndarray:
    x = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * SIGMA**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter over the first two axes, 'valid' part only ((H − 10) × (W − 10))."""
    g, n = _window(), 2 * RADIUS
    rows = sum(g[i] * x[i:x.shape[0] - n + i] for i in range(n + 1))
    return sum(g[i] * rows[:, i:x.shape[1] - n + i] for i in range(n + 1))


def ssim(image: np.ndarray, reference: np.ndarray, data_range: float = 1.0, channel_axis: int | None = -1) -> float:
    """Mean structural similarity in [−1, 1] (1 for equal images).

    Local statistics under an 11×11 Gaussian window (σ = 1.5) with population (not sample) covariances:
    SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)), C1 = (K1·R)², C2 = (K2·R)², K1 = 0.01,
    K2 = 0.03, averaged over the pixels whose window lies inside the image (a 5-pixel border is excluded), then over
    channels. Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R, channel_axis=…)``. ``channel_axis=None`` for (H, W) images.
    """
    a, b = _pair(image, reference)
    if channel_axis is not None:
        a, b = np.moveaxis(a, channel_axis, -1), np.moveaxis(b, channel_axis, -1)
    else:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3 or min(a.shape[:2]) < 2 * RADIUS + 1:
        raise ValueError(f"need (H, W[, C]) images with H, W >= {2 * RADIUS + 1}, got {np.shape(image)}")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mx, my = _filter_valid(a), _filter_valid(b)
    vx = _filter_valid(a * a) - mx * mx
    vy = _filter_valid(b * b) - my * my
    cxy = _filter_valid(a * b) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean(axis=(0, 1)).mean())
