"""Building blocks of a StyleGAN2 generator (Karras et al. 2020, config-f), in plain PyTorch.

The blocks and their parameter names follow the layout of rosinality/stylegan2-pytorch (MIT), so a
generator built from them has exactly that repository's ``state_dict`` keys; the code is written
from the paper and the layout, without custom CUDA ops, and runs on any device.

Two primitives replace the original fused kernels:

- :func:`upfirdn2d`: upsample by zero insertion, pad (or crop), convolve each channel with a 2-D
  FIR filter, keep every ``down``-th sample.
- :func:`fused_leaky_relu`: ``LeakyReLU₀.₂(x + b) · √2`` (the √2 keeps the activation's second
  moment, as in the paper's equalised learning rate).

Equalised learning rate: every weight is stored as drawn from N(0, 1) (divided by ``lr_mul``) and
multiplied at run time by ``lr_mul / √fan_in``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
DEFAULT_BLUR = (1, 3, 3, 1)


def make_blur_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR filter from 1-D ``taps``: outer product normalised to sum ``gain``."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    k = k[None, :] * k[:, None] if k.dim() == 1 else k
    return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample, FIR-filter and downsample each channel of ``x`` (B, C, H, W).

    Args:
        x: input feature maps.
        kernel: (kh, kw) filter, applied as a true convolution (flipped, like the original op).
        up: zero-insertion factor (``up - 1`` zeros after every sample, on both axes).
        down: keep every ``down``-th output sample.
        pad: (before, after) padding of the upsampled map on both axes; negative values crop.

    Returns:
        (B, C, (H·up + p0 + p1 − kh) // down + 1, …) feature maps.
    """
    assert x.dim() == 4 and kernel.dim() == 2, (tuple(x.shape), tuple(kernel.shape))
    b, c, h, w = x.shape
    p0, p1 = pad
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0):x.shape[2] - max(-p1, 0), max(-p0, 0):x.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2, clamp: float | None = None) -> torch.Tensor:
    """``LeakyReLU(x + bias) · scale``, bias broadcast over dim 1; optional clamp to ±``clamp``."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.dim() - 2)))
    x = F.leaky_relu(x, negative_slope) * scale
    return x.clamp(-clamp, clamp) if clamp is not None else x


class PixelNorm(nn.Module):
    """Normalise each vector to unit root-mean-square along dim 1 (eps 1e-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class FusedLeakyReLU(nn.Module):
    """Bias (``bias``, shape (C,)) + LeakyReLU₀.₂ · √2, optionally clamped (NVlabs ``conv_clamp``).

    Args:
        channel: number of channels C.
        clamp: clamp the output (after the √2 gain) to ±clamp, as NVlabs does with ``conv_clamp``;
            None = no clamp (rosinality).
    """

    def __init__(self, channel: int, clamp: float | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, clamp=self.clamp)

    def extra_repr(self) -> str:
        return f"{self.bias.shape[0]}, clamp={self.clamp}"


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate.

    Args:
        in_dim: input features.
        out_dim: output features.
        bias_init: initial bias value (1 for style modulations, so styles start at 1).
        lr_mul: learning-rate multiplier (0.01 in the mapping network); weights and bias are
            multiplied by it at run time.
        activation: None = linear; "fused_lrelu" = :func:`fused_leaky_relu` after the bias.
    """

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None) -> None:
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == self.weight.shape[1], (tuple(x.shape), tuple(self.weight.shape))
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, "
                f"activation={self.activation}")


class Blur(nn.Module):
    """FIR low-pass filter (buffer ``kernel``, used as stored) applied with :func:`upfirdn2d`.

    Args:
        taps: 1-D filter taps, e.g. (1, 3, 3, 1); a checkpoint's ``kernel`` replaces their outer
            product, so only their number (the kernel side, which fixes ``pad``) is architecture.
        pad: (before, after) padding.
        gain: kernel sum (``factor²`` after an upsampling step, to keep the mean).
    """

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, pad={self.pad}"


class Upsample(nn.Module):
    """×``factor`` upsampling with a FIR filter (buffer ``kernel``, by default of sum ``factor²``;
    a checkpoint's kernel is used as stored)."""

    def __init__(self, taps: Sequence[float] = DEFAULT_BLUR, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_blur_kernel(taps, factor**2))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, pad={self.pad}"


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1/√(Σⱼₖ (wᵢⱼₖ·sⱼ)² + eps) for each sample and output channel i, computed as Σⱼ sⱼ²·(Σₖ wᵢⱼₖ²).

    Args:
        weight: (O, I, k, k) shared weight, with whatever gain the demodulation should see.
        styles: (B, I) per-sample styles s.

    Returns:
        (B, O) coefficients; one (B, I) × (I, O) product instead of a (B, O, I, k, k) weight.
    """
    assert weight.dim() == 4 and styles.dim() == 2 and styles.shape[1] == weight.shape[1], (
        tuple(weight.shape), tuple(styles.shape))
    return torch.rsqrt(styles.square() @ weight.square().sum((2, 3)).t() + eps)


def prefer_fused(device: torch.device) -> bool:
    """The formulation :class:`ModulatedConv2d` uses when not told: fused on CUDA, shared elsewhere.

    On the CPU the shared form's work per image falls as the batch grows and the fused form's does
    not: each image's (O, I, k, k) weight is built, demodulated and differentiated, and the grouped
    convolution needs a weight gradient, since the weights depend on the latent. The shared form
    took less CPU per search step at every batch measured, 1 included
    (``benchmarks/stylegan2_batch.py``, results in ``benchmarks/RESULTS.md``). On CUDA the original
    implementations' default is kept: not measured here (``benchmarks/gpu_check.py --modconv``
    compares the two on a GPU).
    """
    return device.type == "cuda"


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled per sample by a style (modulation), optionally
    followed by normalisation of each output channel (demodulation) and preceded by ×2 upsampling.

    For a sample with style s (from ``modulation``), the effective weight is
    w'ᵢⱼₖ = c·wᵢⱼₖ·sⱼ and, when demodulating, w''ᵢⱼₖ = w'ᵢⱼₖ / √(Σⱼₖ w'ᵢⱼₖ² + 1e-8), with
    c = 1/√(in_channel·k²) (rosinality). NVlabs demodulates the unscaled product instead,
    wᵢⱼₖ·sⱼ / √(Σⱼₖ (wᵢⱼₖ·sⱼ)² + 1e-8): the same up to where the epsilon sits (c² times larger
    here), invisible on trained weights but not on others; ``nvlabs_demod`` selects it.
    Upsampling is a stride-2 transposed convolution followed by the blur buffer ``blur.kernel``
    (by default [1, 3, 3, 1], gain 4), used as stored.

    Two formulations give the same result up to float rounding (NVlabs ``fused_modconv``):

    - fused: each sample's w'' is built, (B, O, I, k, k), and the batch runs as one grouped
      convolution with one group per sample;
    - shared: the activations are scaled by s, convolved with the one shared weight c·w over the
      whole batch, and the output scaled by the demodulation coefficients. No per-sample weight
      exists, so the backward pass has no weight gradient either.

    Args:
        in_channel: input channels.
        out_channel: output channels.
        kernel_size: square kernel side (3 for convs, 1 for ToRGB).
        style_dim: dimension of w.
        demodulate: normalise output channels (False only for ToRGB).
        upsample: double the resolution.
        blur_kernel: taps of the upsampling filter.
        fused: True = fused, False = shared, None = :func:`prefer_fused` for the input's device.
        nvlabs_demod: demodulate as NVlabs does (epsilon added to the unscaled sum), see above.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel: Sequence[float] = DEFAULT_BLUR,
                 fused: bool | None = None, nvlabs_demod: bool = False) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate, self.fused = upsample, demodulate, fused
        self.nvlabs_demod = nvlabs_demod
        if upsample:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
                f"demodulate={self.demodulate}, fused={self.fused}, nvlabs_demod={self.nvlabs_demod}")

    def uses_fused(self, device: torch.device) -> bool:
        """Whether a forward pass on ``device`` takes the fused formulation."""
        return prefer_fused(device) if self.fused is None else self.fused

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channel, height, width = x.shape
        assert in_channel == self.in_channel and style.shape[0] == batch, (tuple(x.shape), tuple(style.shape))
        gain = 1.0 if self.demodulate and self.nvlabs_demod else self.scale  # NVlabs: the gain cancels
        s = gain * self.modulation(style)  # (B, I): c·s, so that c·w·s = w·(c·s)
        dcoefs = demodulation_coefficients(self.weight[0], s) if self.demodulate else None  # (B, O)
        if self.uses_fused(x.device):
            weight = self.weight * s.view(batch, 1, in_channel, 1, 1)  # (B, O, I, k, k)
            if dcoefs is not None:
                weight = weight * dcoefs.view(batch, self.out_channel, 1, 1, 1)
            out = self.convolve(x.reshape(1, batch * in_channel, height, width), weight)
            out = out.view(batch, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out) if self.upsample else out
        out = self.convolve(x * s.view(batch, in_channel, 1, 1), self.weight)
        if self.upsample:
            out = self.blur(out)
        return out if dcoefs is None else out * dcoefs.view(batch, self.out_channel, 1, 1)

    def convolve(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Grouped convolution of x (N, G·I, H, W) with weight (G, O, I, k, k), group g of x meeting
        weight[g]; returns (N, G·O, H, W), or (N, G·O, 2H + k − 1, 2W + k − 1) from the stride-2
        transposed convolution when upsampling (the blur that follows is the caller's)."""
        groups, out_channel, in_channel, k, _ = weight.shape
        if not self.upsample:
            return F.conv2d(x, weight.reshape(groups * out_channel, in_channel, k, k), padding=self.padding,
                            groups=groups)
        weight = weight.transpose(1, 2).reshape(groups * in_channel, out_channel, k, k)
        return F.conv_transpose2d(x, weight, stride=2, groups=groups)


class NoiseInjection(nn.Module):
    """Adds ``weight · noise`` (one learned scalar, per-pixel noise shared across channels).

    ``noise`` is (B or 1, 1, H, W); None adds nothing (zero noise), unlike rosinality's fresh
    random draw: the search always passes its noise explicitly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            return image
        assert (noise.dim() == 4 and noise.shape[1] == 1 and noise.shape[0] in (1, image.shape[0])
                and noise.shape[2:] == image.shape[2:]), (tuple(noise.shape), tuple(image.shape))
        return image + self.weight * noise


class ConstantInput(nn.Module):
    """The learned (1, C, size, size) input of the synthesis network, repeated over the batch."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)

    def extra_repr(self) -> str:
        return f"channel={self.input.shape[1]}, size={self.input.shape[2]}"


class StyledConv(nn.Module):
    """Modulated 3×3 conv (optionally upsampling) → noise → bias + LeakyReLU·√2.

    Args:
        in_channel, out_channel, kernel_size, style_dim, upsample, blur_kernel, demodulate, nvlabs_demod:
            as for :class:`ModulatedConv2d`.
        clamp: NVlabs ``conv_clamp`` (None = none), see :class:`FusedLeakyReLU`.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = DEFAULT_BLUR, demodulate: bool = True,
                 clamp: float | None = None, nvlabs_demod: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel, nvlabs_demod=nvlabs_demod)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel, clamp=clamp)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """Modulated 1×1 conv to RGB (no demodulation) + bias, added to the upsampled previous RGB.

    Args:
        in_channel: input channels.
        style_dim: dimension of w.
        upsample: upsample the incoming ``skip`` image ×2 (False only at 4×4).
        blur_kernel: taps of the upsampling filter.
        clamp: NVlabs ``conv_clamp``: clamp this layer's own output to ±clamp before the sum.
    """

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR, clamp: float | None = None) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out

    def extra_repr(self) -> str:
        return f"clamp={self.clamp}"
