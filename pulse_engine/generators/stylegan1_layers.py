"""Building blocks of the StyleGAN1 generator (Karras et al. 2019), written for PULSE's weight layout.

Every attribute name below is part of the checkpoint format: PULSE's ``synthesis.pt`` and
``mapping.pt`` (a port of lernapparat's StyleGAN1 converter) store parameters under exactly these
names, so renaming one breaks strict loading. The layout is summarised in ``stylegan1.py``.

Conventions used throughout:

- Equalized learning rate: a layer stores its raw weight ``v`` (initialised N(0, 1/lrmul²)) and
  uses ``v · gain · lrmul / √fan_in`` at run time; its bias is used as ``b · lrmul``.
- Activations are NCHW float tensors; no unit is implied (the net is trained so that the final
  RGB output lies roughly in [-1, 1]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
"""Negative slope of every LeakyReLU in StyleGAN1."""

ACT_GAIN = math.sqrt(2.0)
"""He gain used for layers followed by a LeakyReLU."""

INSTANCE_NORM_EPS = 1e-5
"""Epsilon of the (non-affine) instance normalisation, torch's default."""

PIXEL_NORM_EPS = 1e-8
"""Epsilon of the pixel normalisation at the input of the mapping network."""

FUSED_UPSAMPLE_FROM = 128
"""Blocks whose output side is at least this many pixels upsample with a fused transposed conv."""


def blur_kernel_121() -> torch.Tensor:
    """The normalised 3×3 binomial low-pass kernel outer([1, 2, 1]) / 16, shape (1, 1, 3, 3)."""
    taps = torch.tensor([1.0, 2.0, 1.0])
    kernel = taps[:, None] * taps[None, :]
    return (kernel / kernel.sum()).reshape(1, 1, 3, 3)


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalized learning rate.

    Args:
        in_features: input width.
        out_features: output width.
        gain: He gain (√2 before a LeakyReLU, 1 for the style affine maps).
        lrmul: learning-rate multiplier (0.01 in the mapping network, else 1).
    """

    def __init__(self, in_features: int, out_features: int, gain: float = ACT_GAIN, lrmul: float = 1.0) -> None:
        super().__init__()
        self.in_features, self.out_features, self.gain, self.lrmul = in_features, out_features, gain, lrmul
        self.weight_scale = gain * in_features ** -0.5 * lrmul
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lrmul)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, gain={self.gain:.4g}, lrmul={self.lrmul:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_features) → (B, out_features)."""
        return F.linear(x, self.weight * self.weight_scale, self.bias * self.lrmul)


class EqualizedConv2d(nn.Module):
    """Stride-1 'same' convolution with equalized learning rate and a bias.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd square kernel side (3 for features, 1 for toRGB).
        gain: He gain (√2 before a LeakyReLU, 1 for toRGB).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = ACT_GAIN) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size, self.gain = in_channels, out_channels, kernel_size, gain
        self.weight_scale = gain * (in_channels * kernel_size**2) ** -0.5
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}→{self.out_channels}, kernel={self.kernel_size}, gain={self.gain:.4g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) → (B, out, H, W)."""
        return F.conv2d(x, self.weight * self.weight_scale, self.bias, padding=self.kernel_size // 2)


class Blur(nn.Module):
    """Depthwise 3×3 binomial blur, zero padded; the kernel is a (persistent) checkpoint buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel_121())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C, H, W)."""
        channels = x.shape[1]
        return F.conv2d(x, self.kernel.expand(channels, 1, 3, 3), padding=1, groups=channels)


class UpsampleConv2d(nn.Module):
    """×2 upsampling, 3×3 conv, blur, then bias — the first layer of every block above 4×4.

    Below :data:`FUSED_UPSAMPLE_FROM` px (output side) it upsamples by nearest neighbour and then
    convolves; from there up it uses StyleGAN's fused form: a stride-2 transposed convolution whose
    4×4 kernel is the 3×3 kernel (zero padded to 5×5) summed over every 2×2 window. The two forms
    agree in the interior and differ at the borders, and each checkpoint was trained with its own,
    so the choice is part of the architecture. The bias is added after the blur.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        fused: use the fused transposed conv (set from the block's output side).
    """

    def __init__(self, in_channels: int, out_channels: int, fused: bool) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.fused = in_channels, out_channels, fused
        self.weight_scale = ACT_GAIN * (in_channels * 9) ** -0.5
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.intermediate = Blur()  # checkpoint name of the blur

    def extra_repr(self) -> str:
        return f"{self.in_channels}→{self.out_channels}, fused={self.fused}"

    def transposed_kernel(self) -> torch.Tensor:
        """The 4×4 kernel of the fused form, laid out (in, out, 4, 4) for ``conv_transpose2d``."""
        weight = (self.weight * self.weight_scale).transpose(0, 1)
        return F.avg_pool2d(F.pad(weight, (1, 1, 1, 1)), kernel_size=2, stride=1) * 4.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) → (B, out, 2H, 2W)."""
        if self.fused:
            x = F.conv_transpose2d(x, self.transposed_kernel(), stride=2, padding=1)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = F.conv2d(x, self.weight * self.weight_scale, padding=1)
        return self.intermediate(x) + self.bias.view(1, -1, 1, 1)


class NoiseInjection(nn.Module):
    """Adds a single-channel noise map scaled by a learned per-channel weight.

    Args:
        channels: feature channels C of the layer.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def extra_repr(self) -> str:
        return f"channels={self.weight.shape[0]}"

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) plus weight ⊙ noise, noise (B or 1, 1, H, W) broadcast over channels."""
        return x + self.weight.view(1, -1, 1, 1) * noise


class StyleModulation(nn.Module):
    """AdaIN style: x · (1 + s) + t with (s, t) an affine function of the layer's w.

    Args:
        dlatent_size: dimension of w.
        channels: feature channels C.
    """

    def __init__(self, dlatent_size: int, channels: int) -> None:
        super().__init__()
        self.lin = EqualizedLinear(dlatent_size, 2 * channels, gain=1.0)  # checkpoint name

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), w (B, dlatent_size) → (B, C, H, W)."""
        style = self.lin(w).view(w.shape[0], 2, x.shape[1], 1, 1)
        return x * (style[:, 0] + 1.0) + style[:, 1]


class LayerEpilogue(nn.Module):
    """What follows every conv: noise, LeakyReLU(0.2), instance norm, style modulation.

    Args:
        channels: feature channels C.
        dlatent_size: dimension of w.
    """

    def __init__(self, channels: int, dlatent_size: int) -> None:
        super().__init__()
        self.noise = NoiseInjection(channels)
        self.style_mod = StyleModulation(dlatent_size, channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), w (B, D), noise (B or 1, 1, H, W) → (B, C, H, W)."""
        x = F.leaky_relu(self.noise(x, noise), LRELU_SLOPE)
        x = F.instance_norm(x, eps=INSTANCE_NORM_EPS)
        return self.style_mod(x, w)


class ConstantInputBlock(nn.Module):
    """The 4×4 block: learned constant plus bias, epilogue, 3×3 conv, epilogue.

    Args:
        channels: feature channels at 4×4.
        dlatent_size: dimension of w.
    """

    def __init__(self, channels: int, dlatent_size: int) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, channels, 4, 4))
        self.bias = nn.Parameter(torch.ones(channels))
        self.epi1 = LayerEpilogue(channels, dlatent_size)
        self.conv = EqualizedConv2d(channels, channels, 3)
        self.epi2 = LayerEpilogue(channels, dlatent_size)

    def forward(self, w: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """w (B, 2, D) for this block's two layers → (B, C, 4, 4)."""
        x = self.const.expand(w.shape[0], -1, -1, -1) + self.bias.view(1, -1, 1, 1)
        x = self.epi1(x, w[:, 0], noise[0])
        return self.epi2(self.conv(x), w[:, 1], noise[1])


class UpsamplingBlock(nn.Module):
    """A block doubling the side: upsampling conv, epilogue, 3×3 conv, epilogue.

    Args:
        in_channels: channels coming from the previous block.
        out_channels: channels of this block.
        dlatent_size: dimension of w.
        fused: whether ``conv0_up`` uses the fused transposed conv.
    """

    def __init__(self, in_channels: int, out_channels: int, dlatent_size: int, fused: bool) -> None:
        super().__init__()
        self.conv0_up = UpsampleConv2d(in_channels, out_channels, fused)
        self.epi1 = LayerEpilogue(out_channels, dlatent_size)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3)
        self.epi2 = LayerEpilogue(out_channels, dlatent_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, in, H, W), w (B, 2, D) → (B, out, 2H, 2W)."""
        x = self.epi1(self.conv0_up(x), w[:, 0], noise[0])
        return self.epi2(self.conv1(x), w[:, 1], noise[1])
