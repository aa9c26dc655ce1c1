"""StyleGAN2 generator (config-f) as a :class:`SearchableGenerator`, in rosinality's layout.

The module's ``state_dict`` has exactly the keys and shapes of rosinality/stylegan2-pytorch's
``Generator`` (the ``g_ema`` entry of its checkpoints), so those load strictly; NVlabs
stylegan2-ada-pytorch pickles are converted to the same layout by :mod:`.stylegan2_loaders`.

Architecture for a resolution R = 2^L (L ≥ 2):

- mapping ``style``: PixelNorm, then ``n_mlp`` × [EqualLinear(lr_mul 0.01), LeakyReLU₀.₂·√2]; keys
  ``style.1`` … ``style.<n_mlp>``; all style_dim → style_dim (rosinality), or through hidden layers of
  ``mapping_width`` features (NVlabs ``layer_features``): style_dim → width → … → width → style_dim.
- synthesis: constant 4×4 ``input``; ``conv1`` (4×4) and ``to_rgb1``; then for each resolution
  8 … R two StyledConvs in ``convs`` (the first upsamples) and one ToRGB in ``to_rgbs`` (skip
  architecture: the RGB image is upsampled and summed across resolutions).
- W+ inputs: ``n_latent = 2L − 2`` vectors (18 at 1024 px, 14 at 256 px): conv1 takes w[0],
  to_rgb1 w[1]; the block at 2^k takes w[2k−5], w[2k−4] for its convs and w[2k−3] for its ToRGB.
- noise inputs: ``num_layers = 2(L − 2) + 1`` maps (17 at 1024 px): index 0 at 4×4, then two per
  resolution; map i has side 2^((i + 5) // 2) (4, 8, 8, 16, 16, …). Buffers ``noises.noise_i``
  hold the checkpoint's fixed noise (NVlabs ``noise_const``), returned by :meth:`const_noise`.
- channels: 512 up to 32 px, then 16384·``channel_multiplier``/res (config-f: multiplier 2);
  any table can be given with ``channels`` (for tiny test networks or other NVlabs configs).

The search variable is PULSE's: ``latent`` (B, n_latent, style_dim) → w = LeakyReLU₀.₂(latent ⊙ σ
+ μ), with μ, σ from the Gaussian fit of LeakyReLU₅(mapping(z)) (see :mod:`.gaussian_fit`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .base import GeneratorCard, SearchableGenerator, power_of_two_log2
from .gaussian_fit import GaussianFit
from .stylegan2_layers import DEFAULT_BLUR, ConstantInput, EqualLinear, ModulatedConv2d, PixelNorm, StyledConv, ToRGB


def config_f_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's channel table: 512 for 4–32 px, then 16384·multiplier / res (e.g. 32 at 1024 px
    for multiplier 2), for every resolution 4 … ``size``."""
    table = {}
    for log_res in range(2, int(math.log2(size)) + 1):
        res = 2**log_res
        table[res] = 512 if res <= 32 else 16384 * channel_multiplier // res
    return table


class StyleGAN2Generator(SearchableGenerator):
    """StyleGAN2 generator driven by PULSE's Gaussian-fit latent.

    Args:
        size: output side R, a power of two ≥ 4.
        style_dim: dimension of z and w (512 for config-f).
        n_mlp: mapping layers (8 for config-f).
        channel_multiplier: config-f width multiplier (2); ignored when ``channels`` is given.
        channels: {resolution: channels} for every resolution 4 … size; None = config-f table.
        blur_kernel: taps of the resampling filter.
        lr_mlp: learning-rate multiplier of the mapping layers (0.01).
        conv_clamp: NVlabs ``conv_clamp`` (e.g. 256 for models trained with stylegan2-ada-pytorch's
            mixed precision); None = no clamping (rosinality, and NVlabs models converted from TF).
        mapping_width: hidden width of the mapping network (NVlabs ``layer_features``); None = style_dim.
        rgb_blur_kernel: taps of the filter upsampling the skip image (None = ``blur_kernel``, as
            NVlabs; rosinality always uses [1, 3, 3, 1] there, whatever its ``blur_kernel``).
        nvlabs_demod: demodulate as NVlabs does (see :class:`ModulatedConv2d`); False = rosinality.
        card: provenance for reports.

    Noise conventions: ``default_trainable_noise`` = 5 (as PULSE; here the 4, 8, 8, 16, 16 px
    maps). ``default_zero_noise`` = (last index,): PULSE's "bad layer" 17 is the *second* noise
    of the final (1024 px) block of StyleGAN1; the analogue here is the last noise map, the second
    noise of the final block (index 16 at 1024 px, 12 at 256 px). ``noise=None`` means zero noise
    (all maps), which differs from rosinality's default of fresh random noise: the search passes
    its noise explicitly, and a deterministic default keeps ``synthesize`` reproducible.
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channels: Mapping[int, int] | None = None, blur_kernel: Sequence[float] = DEFAULT_BLUR,
                 lr_mlp: float = 0.01, conv_clamp: float | None = None, mapping_width: int | None = None,
                 nvlabs_demod: bool = False, rgb_blur_kernel: Sequence[float] | None = None,
                 card: GeneratorCard | None = None) -> None:
        super().__init__()
        log_size = power_of_two_log2(size, 4, "StyleGAN2 size")
        self.size = self.resolution = size
        self.style_dim, self.n_mlp, self.log_size = style_dim, n_mlp, log_size
        self.lr_mlp, self.conv_clamp, self.blur_kernel = lr_mlp, conv_clamp, tuple(blur_kernel)
        self.mapping_width, self.nvlabs_demod = mapping_width or style_dim, nvlabs_demod
        self.rgb_blur_kernel = tuple(rgb_blur_kernel or blur_kernel)
        if channels is None:
            self.channel_multiplier: int | None = channel_multiplier
            channels = config_f_channels(size, channel_multiplier)
        else:
            self.channel_multiplier = None
            channels = {int(k): int(v) for k, v in channels.items()}
            missing = [2**i for i in range(2, log_size + 1) if 2**i not in channels]
            if missing:
                raise ValueError(f"channels has no entry for resolutions {missing}")
        self.channels = {2**i: channels[2**i] for i in range(2, log_size + 1)}

        widths = [style_dim] + [self.mapping_width] * (n_mlp - 1) + [style_dim]
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(widths[i], widths[i + 1], lr_mul=lr_mlp,
                                                              activation="fused_lrelu") for i in range(n_mlp)])
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel, clamp=conv_clamp,
                                nvlabs_demod=nvlabs_demod)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False, clamp=conv_clamp)
        self.num_layers = 2 * (log_size - 2) + 1
        self.n_latent = 2 * log_size - 2
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            side = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.zeros(1, 1, side, side))
        in_channel = c4
        for i in range(3, log_size + 1):
            out_channel = self.channels[2**i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel, clamp=conv_clamp, nvlabs_demod=nvlabs_demod))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel,
                                         clamp=conv_clamp, nvlabs_demod=nvlabs_demod))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=self.rgb_blur_kernel, clamp=conv_clamp))
            in_channel = out_channel

        # The Gaussian fit of W lives in non-persistent buffers: it follows .to(device) but never
        # enters the state dict, which stays exactly rosinality's.
        self.register_buffer("fit_mean", torch.zeros(style_dim), persistent=False)
        self.register_buffer("fit_std", torch.ones(style_dim), persistent=False)
        self.fit_samples = 0
        self.register_buffer("latent_avg", torch.zeros(style_dim), persistent=False)

        self.latent_shape = (self.n_latent, style_dim)
        self.noise_shapes = tuple((1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(self.num_layers))
        self.default_trainable_noise = min(5, self.num_layers)
        self.default_zero_noise = (self.num_layers - 1,)
        self.card = card or GeneratorCard(name=f"stylegan2-{size}px", family="StyleGAN2")
        self.source_format = "built in code (random weights until loaded)"

    def extra_repr(self) -> str:
        return (f"size={self.size}, style_dim={self.style_dim}, n_mlp={self.n_mlp}, n_latent={self.n_latent}, "
                f"noise_layers={self.num_layers}, channels={self.channels}, conv_clamp={self.conv_clamp}, "
                f"mapping_width={self.mapping_width}, nvlabs_demod={self.nvlabs_demod}")

    def config(self) -> dict[str, object]:
        """Constructor arguments that rebuild this architecture (for reports and caches)."""
        return dict(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp, channels=dict(self.channels),
                    lr_mlp=self.lr_mlp, conv_clamp=self.conv_clamp, blur_kernel=self.blur_kernel,
                    mapping_width=self.mapping_width, nvlabs_demod=self.nvlabs_demod,
                    rgb_blur_kernel=self.rgb_blur_kernel)

    # --- mapping and latent space -------------------------------------------------------------

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """The mapping network: z (B, style_dim) → w (B, style_dim)."""
        assert z.dim() == 2 and z.shape[1] == self.style_dim, tuple(z.shape)
        return self.style(z)

    @torch.no_grad()
    def set_fit(self, fit: GaussianFit) -> StyleGAN2Generator:
        """Install the Gaussian fit (μ, σ of LeakyReLU₅(mapping(z))) used by :meth:`latent_to_w`."""
        if tuple(fit.mean.shape) != (self.style_dim,) or tuple(fit.std.shape) != (self.style_dim,):
            raise ValueError(f"Gaussian fit of dimension {tuple(fit.mean.shape)} for style_dim {self.style_dim}")
        self.fit_mean.copy_(fit.mean)
        self.fit_std.copy_(fit.std)
        self.fit_samples = fit.samples
        return self

    def search_space_state(self) -> dict[str, torch.Tensor]:
        """The Gaussian fit: mean and std (style_dim,) and the sample count."""
        return {"fit_mean": self.fit_mean, "fit_std": self.fit_std, "fit_samples": torch.tensor(self.fit_samples)}

    def latent_to_w(self, latent: torch.Tensor) -> torch.Tensor:
        """w = LeakyReLU₀.₂(latent ⊙ σ + μ) for latent (B, n_latent, style_dim)."""
        self.check_latent(latent)
        if self.fit_samples == 0:
            raise RuntimeError("StyleGAN2Generator has no Gaussian fit yet: call set_fit() (the loaders do)")
        return GaussianFit(self.fit_mean, self.fit_std, self.fit_samples).to_w(latent)

    # --- synthesis ----------------------------------------------------------------------------

    def const_noise(self) -> list[torch.Tensor]:
        """The checkpoint's stored noise maps (1, 1, r, r) (rosinality ``randomize_noise=False``,
        NVlabs ``noise_mode='const'``)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def _check_noise(self, noise: Sequence[torch.Tensor | None] | None, batch: int) -> list[torch.Tensor | None]:
        if noise is None:
            return [None] * self.num_layers
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"StyleGAN2 at {self.size} px takes {self.num_layers} noise maps, got {len(noise)}")
        for i, (n, shape) in enumerate(zip(noise, self.noise_shapes)):
            if n is not None and (n.dim() != 4 or n.shape[0] not in (1, batch) or tuple(n.shape[1:]) != shape):
                raise ValueError(f"noise map {i} must be ({batch}, *{shape}), got {tuple(n.shape)}")
        return noise

    def synthesis(self, w: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Raw synthesis: W+ (B, n_latent, style_dim) and noise maps → RGB (B, 3, R, R), nominally [-1, 1].

        ``noise``: one (B or 1, 1, r, r) tensor per noise layer (see :attr:`noise_shapes`);
        a None entry or ``noise=None`` means zeros.
        """
        self.check_latent(w)
        batch = w.shape[0]
        noise = self._check_noise(noise, batch)
        out = self.conv1(self.input(batch), w[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, w[:, 1])
        for k, to_rgb in enumerate(self.to_rgbs):
            i = 2 * k + 1
            out = self.convs[2 * k](out, w[:, i], noise=noise[i])
            out = self.convs[2 * k + 1](out, w[:, i + 1], noise=noise[i + 1])
            skip = to_rgb(out, w[:, i + 2], skip)
        assert skip.shape == (batch, 3, self.size, self.size), tuple(skip.shape)
        return skip

    def synthesize_w(self, w: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Images (B, 3, R, R) as (x + 1) / 2, i.e. in [0, 1] for in-range outputs. Not clamped
        (as in PULSE), so gradients are not cut; ``noise=None`` = zero noise."""
        return (self.synthesis(w, noise) + 1) / 2

    def forward(self, w: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Same as :meth:`synthesize_w`."""
        return self.synthesize_w(w, noise)

    def set_fused(self, fused: bool | None) -> StyleGAN2Generator:
        """Choose the modulated convolutions' formulation (see :class:`ModulatedConv2d`): True = one
        grouped convolution per batch, False = a shared convolution between activation scalings,
        None (the default) = :func:`prefer_fused` for the device each pass runs on."""
        for module in self.modules():
            if isinstance(module, ModulatedConv2d):
                module.fused = fused
        return self

    def modconv_formulation(self, device: torch.device) -> str:
        """``fused``, ``shared`` or ``mixed``: what the modulated convolutions run on ``device``."""
        forms = {module.uses_fused(device) for module in self.modules() if isinstance(module, ModulatedConv2d)}
        return "mixed" if len(forms) > 1 else "fused" if forms == {True} else "shared"
