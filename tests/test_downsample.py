"""The bicubic downsampler against an independent float64 NumPy construction."""

import numpy as np
import pytest
import torch

from pulse_engine.downsample import BicubicDownsample, kernel_taps


def keys(x, a=-0.5):
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def reflect(i, n):
    """Index into 0..n-1 with reflection that does not repeat the edge (numpy/torch 'reflect')."""
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def resize_matrix(n, f):
    """(n/f × n) float64 matrix: output o averages input pixels around its centre o·f + (f−1)/2
    with the Keys kernel stretched by f, over the 4f pixels starting ⌊3f/2⌋ before o·f."""
    out = np.zeros((n // f, n))
    for o in range(n // f):
        centre = o * f + (f - 1) / 2
        positions = [o * f - (3 * f) // 2 + i for i in range(4 * f)]
        weights = np.array([keys((p - centre) / f) for p in positions])
        weights /= weights.sum()
        for p, wgt in zip(positions, weights):
            out[o, reflect(p, n)] += wgt
    return out


@pytest.mark.parametrize("factor,size", [(2, 16), (3, 24), (4, 64), (5, 40), (8, 64), (16, 64), (32, 128)])
def test_matches_float64_reference(factor, size):
    rng = np.random.default_rng(factor)
    image = rng.random((2, 3, size, size))
    m = resize_matrix(size, factor)
    expected = np.einsum("oh,bchw,pw->bcop", m, image, m)
    got = BicubicDownsample(factor).double()(torch.from_numpy(image)).numpy()
    assert got.shape == (2, 3, size // factor, size // factor)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    got32 = BicubicDownsample(factor)(torch.from_numpy(image).float()).numpy()
    np.testing.assert_allclose(got32, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("factor", [2, 4, 8, 32, 64])
def test_even_factors_use_pulse_tap_positions(factor):
    taps = 4 * factor
    x = (np.arange(taps) - taps // 2 + 0.5) / factor
    pulse = np.array([keys(v) for v in x])
    np.testing.assert_allclose(kernel_taps(factor), pulse / pulse.sum(), atol=1e-15)


def test_non_square_and_constant_images():
    image = torch.full((1, 3, 32, 48), 0.3)
    out = BicubicDownsample(4)(image)
    assert out.shape == (1, 3, 8, 12)
    torch.testing.assert_close(out, torch.full_like(out, 0.3))


@pytest.mark.parametrize("shape,factor", [((1, 3, 30, 30), 4), ((1, 3, 4, 4), 4)])
def test_bad_sizes_are_errors(shape, factor):
    with pytest.raises(ValueError):
        BicubicDownsample(factor)(torch.zeros(shape))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    image = torch.rand(2, 3, 64, 64)
    cpu = BicubicDownsample(8)(image)
    gpu = BicubicDownsample(8).cuda()(image.cuda()).cpu()
    torch.testing.assert_close(cpu, gpu, atol=1e-5, rtol=0)
