"""StyleGAN1 (Karras et al. 2019) in PULSE's weight layout, written from the architecture description.

PULSE drives NVIDIA's FFHQ 1024×1024 StyleGAN1 through two plain state dicts converted by
lernapparat's port: ``synthesis.pt`` (24,110,771 parameters) and ``mapping.pt`` (2,101,248). The
networks here reproduce that layout key for key so both files load with ``strict=True``:

- mapping: ``dense0`` … ``dense7`` (``.weight`` (512, 512), ``.bias`` (512)); pixel norm first,
  then 8 × [equalized linear with lr-multiplier 0.01, LeakyReLU(0.2)].
- synthesis: ``blocks.4x4`` (``const`` (1, 512, 4, 4), ``bias``, ``epi1``, ``conv``, ``epi2``);
  ``blocks.8x8`` … ``blocks.1024x1024`` (``conv0_up`` with its blur buffer
  ``conv0_up.intermediate.kernel``, ``epi1``, ``conv1``, ``epi2``); each epilogue holds
  ``noise.weight`` (C,) and ``style_mod.lin.weight`` (2C, 512) / ``.bias``; ``torgb`` is the only
  toRGB, a 1×1 conv (3, 16, 1, 1). Channels: min(fmap_base / 2^(log2(side) − 1), fmap_max), i.e.
  512 up to 32 px, then 256, 128, 64, 32, 16.

The search sees W+ (``num_ws`` = 2·log2(R) − 2 vectors, 18 at 1024 px), one noise map per style
layer and PULSE's Gaussian fit (see ``gaussian_fit.py``). Smaller configurations (same key scheme)
exist for tests. Weights: NVIDIA StyleGAN, CC BY-NC 4.0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from .base import GeneratorCard, SearchableGenerator, power_of_two_log2
from .checkpoint import load_state_strict, load_torch_file, require_file, sha256_file
from .gaussian_fit import (
    CHECK_Z,
    DEFAULT_SAMPLES,
    GaussianFit,
    fit_disagreement,
    fit_problem,
    load_or_compute_fit,
    resolve_fit_samples,
)
from .stylegan1_layers import (
    FUSED_UPSAMPLE_FROM,
    LRELU_SLOPE,
    PIXEL_NORM_EPS,
    ConstantInputBlock,
    EqualizedConv2d,
    EqualizedLinear,
    UpsamplingBlock,
    blur_kernel_121,
)

log = logging.getLogger(__name__)

"""Environment variable overriding the number of z draws of the Gaussian fit (default 1,000,000)."""

FFHQ_CARD = dict(
    family="StyleGAN1",
    training_data="FFHQ (70k Flickr faces, aligned; images under their own Flickr licences)",
    licence="NVIDIA StyleGAN weights CC BY-NC 4.0 (non-commercial)",
)

WEIGHTS_HINT = ("download PULSE's StyleGAN1 FFHQ files from Google Drive (synthesis: id "
                "1TCViX1YpQyRsklTVYEJwdbmK91vklCo8, mapping: id 14R6iHGf5iuVx3DMNsACAl7eBr7Vdpd0k; PULSE's "
                "cache names end in _synthesis.pt / _mapping.pt) and save them in {folder} as synthesis.pt and "
                "mapping.pt")


@dataclass(frozen=True)
class StyleGAN1Config:
    """Hyper-parameters of a StyleGAN1 generator; the defaults are NVIDIA's FFHQ 1024 model.

    Attributes:
        resolution: output side R in pixels, a power of two ≥ 8.
        dlatent_size: dimension of z and w (the mapping network is dlatent_size wide throughout).
        fmap_base: channel budget; a block of side 2^k has min(fmap_base / 2^((k−1)·fmap_decay), fmap_max).
        fmap_decay: log2 channel reduction per doubling of the side.
        fmap_max: channel cap.
        mapping_layers: fully connected layers of the mapping network.
        mapping_lrmul: learning-rate multiplier of those layers.
        num_channels: output colour channels.
    """

    resolution: int = 1024
    dlatent_size: int = 512
    fmap_base: int = 8192
    fmap_decay: float = 1.0
    fmap_max: int = 512
    mapping_layers: int = 8
    mapping_lrmul: float = 0.01
    num_channels: int = 3

    def __post_init__(self) -> None:
        power_of_two_log2(self.resolution, 8, "StyleGAN1 resolution")

    @property
    def log2_resolution(self) -> int:
        return int(round(math.log2(self.resolution)))

    @property
    def num_ws(self) -> int:
        """Number of style inputs (= noise inputs): two per block, 2·log2(R) − 2."""
        return 2 * self.log2_resolution - 2

    def channels(self, side: int) -> int:
        """Feature channels of the block producing ``side`` × ``side`` maps."""
        stage = int(round(math.log2(side))) - 1
        return min(int(self.fmap_base / 2.0 ** (stage * self.fmap_decay)), self.fmap_max)

    def block_sides(self) -> list[int]:
        """Block output sides 4, 8, …, R."""
        return [2**k for k in range(2, self.log2_resolution + 1)]

    def noise_shapes(self) -> tuple[tuple[int, int, int], ...]:
        """Per-image (1, r, r) shape of each noise input, two per block: (1,4,4), (1,4,4), (1,8,8), …"""
        return tuple((1, side, side) for side in self.block_sides() for _ in range(2))


FFHQ_1024 = StyleGAN1Config()
"""NVIDIA's FFHQ model as used by PULSE: 1024 px, w in R^512, 18 style layers."""

TINY = StyleGAN1Config(resolution=32, dlatent_size=16, fmap_base=64, fmap_max=16)
"""A 32 px model (channels 16, 16, 8, 4; 8 style layers) with the same key names, for tests."""


class StyleGAN1Mapping(nn.Module):
    """z → w: pixel norm, then ``mapping_layers`` × [equalized linear (lrmul 0.01), LeakyReLU(0.2)].

    Args:
        config: hyper-parameters; only ``dlatent_size``, ``mapping_layers``, ``mapping_lrmul`` matter.
    """

    def __init__(self, config: StyleGAN1Config = FFHQ_1024) -> None:
        super().__init__()
        self.config = config
        width = config.dlatent_size
        for i in range(config.mapping_layers):
            self.add_module(f"dense{i}", EqualizedLinear(width, width, lrmul=config.mapping_lrmul))

    def extra_repr(self) -> str:
        return f"layers={self.config.mapping_layers}, width={self.config.dlatent_size}"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) (any scale: it is pixel-normalised) → w (B, D)."""
        if z.dim() != 2 or z.shape[1] != self.config.dlatent_size:
            raise ValueError(f"mapping expects z (B, {self.config.dlatent_size}), got {tuple(z.shape)}")
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)
        for layer in self.children():
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
        return x


class StyleGAN1Synthesis(nn.Module):
    """W+ and noise → RGB, nominally in [-1, 1] (not clamped).

    Args:
        config: hyper-parameters (resolution, dlatent_size, fmap_*, num_channels).
    """

    def __init__(self, config: StyleGAN1Config = FFHQ_1024) -> None:
        super().__init__()
        self.config = config
        blocks: dict[str, nn.Module] = {}
        previous = 0
        for side in config.block_sides():
            width = config.channels(side)
            name = f"{side}x{side}"
            if side == 4:
                blocks[name] = ConstantInputBlock(width, config.dlatent_size)
            else:
                blocks[name] = UpsamplingBlock(previous, width, config.dlatent_size,
                                               fused=side >= FUSED_UPSAMPLE_FROM)
            previous = width
        self.torgb = EqualizedConv2d(previous, config.num_channels, 1, gain=1.0)
        self.blocks = nn.ModuleDict(blocks)

    def extra_repr(self) -> str:
        c = self.config
        return f"resolution={c.resolution}, dlatent={c.dlatent_size}, num_ws={c.num_ws}"

    def forward(self, w: torch.Tensor, noise: Sequence[torch.Tensor]) -> torch.Tensor:
        """w (B, num_ws, D) and ``num_ws`` noise maps (B or 1, 1, r, r) → (B, 3, R, R), ≈[-1, 1]."""
        c = self.config
        if w.dim() != 3 or tuple(w.shape[1:]) != (c.num_ws, c.dlatent_size) or len(noise) != c.num_ws:
            raise ValueError(f"synthesis expects w (B, {c.num_ws}, {c.dlatent_size}) and {c.num_ws} noise maps, "
                             f"got {tuple(w.shape)} and {len(noise)}")
        first, *rest = self.blocks.values()
        x = first(w[:, 0:2], (noise[0], noise[1]))
        for i, block in enumerate(rest, start=1):
            x = block(x, w[:, 2 * i:2 * i + 2], (noise[2 * i], noise[2 * i + 1]))
        return self.torgb(x)


class StyleGAN1Generator(SearchableGenerator):
    """A frozen StyleGAN1 synthesis network searched in PULSE's Gaussian-fit W+ space.

    ``latent_to_w`` is w = LeakyReLU₀.₂(latent ⊙ σ + μ) with the fit's per-dimension μ, σ (shape
    (D,)); ``synthesize_w`` returns (x + 1) / 2 of the synthesis output: (B, 3, R, R) nominally in
    [0, 1] but, as in PULSE, not clamped (so gradients never vanish at the range ends); clamp for
    display. Noise maps are explicit: ``noise=None`` means all maps are zero (deterministic; PULSE's
    search always passes its own maps).

    Args:
        synthesis: the synthesis network (its config fixes R, num_ws and D).
        fit: Gaussian fit of W with mean and std of shape (D,).
        card: provenance for reports (None = a card saying only "StyleGAN1").
    """

    def __init__(self, synthesis: StyleGAN1Synthesis, fit: GaussianFit, card: GeneratorCard | None = None) -> None:
        super().__init__()
        config = synthesis.config
        if tuple(fit.mean.shape) != (config.dlatent_size,) or tuple(fit.std.shape) != (config.dlatent_size,):
            raise ValueError(f"Gaussian fit has shapes {tuple(fit.mean.shape)}/{tuple(fit.std.shape)}, "
                             f"expected ({config.dlatent_size},)")
        self.config = config
        self.synthesis = synthesis
        self.register_buffer("fit_mean", fit.mean.detach().float().clone())
        self.register_buffer("fit_std", fit.std.detach().float().clone())
        self.fit_samples = fit.samples
        self.resolution = config.resolution
        self.latent_shape = (config.num_ws, config.dlatent_size)
        self.noise_shapes = config.noise_shapes()
        self.default_trainable_noise = min(5, config.num_ws)
        self.default_zero_noise = (config.num_ws - 1,)
        self.card = card or GeneratorCard(name=f"stylegan1-{config.resolution}px", family="StyleGAN1")

    def extra_repr(self) -> str:
        return f"latent_shape={self.latent_shape}, fit_samples={self.fit_samples}"

    @property
    def fit(self) -> GaussianFit:
        """The Gaussian fit, on the module's device."""
        return GaussianFit(self.fit_mean, self.fit_std, self.fit_samples)

    def search_space_state(self) -> dict[str, torch.Tensor]:
        """The Gaussian fit: mean and std (D,) and the sample count."""
        return {"fit_mean": self.fit_mean, "fit_std": self.fit_std, "fit_samples": torch.tensor(self.fit_samples)}

    def latent_to_w(self, latent: torch.Tensor) -> torch.Tensor:
        """Search variable (B, num_ws, D) → w (B, num_ws, D)."""
        self.check_latent(latent)
        return self.fit.to_w(latent)

    def check_noise(self, noise: Sequence[torch.Tensor], batch: int) -> None:
        """Raise a ValueError unless there is one (B or 1, 1, r, r) map per entry of ``noise_shapes``."""
        if len(noise) != len(self.noise_shapes):
            raise ValueError(f"StyleGAN1 expects {len(self.noise_shapes)} noise maps, got {len(noise)}")
        for i, (tensor, shape) in enumerate(zip(noise, self.noise_shapes)):
            if tensor.dim() != 4 or tuple(tensor.shape[1:]) != shape or tensor.shape[0] not in (1, batch):
                raise ValueError(f"noise map {i} must have shape ({batch} or 1, {', '.join(map(str, shape))}), "
                                 f"got {tuple(tensor.shape)}")

    def synthesize_w(self, w: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """w (B, num_ws, D) and noise (None = zeros) → images (B, 3, R, R), nominally in [0, 1]."""
        self.check_latent(w)
        if noise is None:
            noise = [w.new_zeros((1, *shape)) for shape in self.noise_shapes]
        self.check_noise(noise, w.shape[0])
        image = (self.synthesis(w, noise) + 1) / 2
        assert image.shape == (w.shape[0], self.config.num_channels, self.resolution, self.resolution)
        return image


@torch.no_grad()
def seeded_random_state(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A reproducible random state dict for ``module`` (tests and smoke runs, not a face model).

    Keys are visited in sorted order and each gets ``torch.randn`` from one CPU generator seeded
    with ``seed``, scaled to the stored-weight convention: weight matrices and kernels (and the
    constant input) by 1/lrmul, vectors (biases, noise weights) by 0.1/lrmul. Blur kernels keep
    their fixed value and draw nothing.
    """
    gen = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        if key.endswith("intermediate.kernel"):
            out[key] = blur_kernel_121()
            continue
        owner = module.get_submodule(key.rpartition(".")[0]) if "." in key else module
        scale = 1.0 / float(getattr(owner, "lrmul", 1.0))
        if state[key].dim() < 2:
            scale *= 0.1
        out[key] = torch.randn(state[key].shape, generator=gen) * scale
    return out


def load_pulse_fit(path: Path, mapping: nn.Module, dlatent_size: int, device: torch.device | str) -> GaussianFit:
    """Read PULSE's own ``gaussian_fit.pt`` (dict of ``mean``/``std``, legacy format, CUDA tensors).

    Its sample count is not stored; PULSE made it from 1,000,000 draws on a GPU. The file carries
    no key to the weights, so it is checked against them: well formed (finite, positive std, shape
    (D,)) and within :data:`.gaussian_fit.CHECK_Z` standard errors of a fresh sample through
    ``mapping``; otherwise it is refused (a planted fit would change every output).
    """
    blob = load_torch_file(path, "PULSE Gaussian fit (dict with 'mean' and 'std')")
    problem = fit_problem(blob.get("mean"), blob.get("std"), dlatent_size) if isinstance(blob, dict) else "not a dict"
    if problem:
        raise WeightsError(f"{path} is not a PULSE Gaussian fit of dimension {dlatent_size}: {problem}")
    fit = GaussianFit(blob["mean"].float(), blob["std"].float(), DEFAULT_SAMPLES)
    score = fit_disagreement(fit, mapping, dlatent_size, device=device)
    if score > CHECK_Z:
        raise WeightsError(f"{path} does not describe these mapping weights (off by {score:.1f} standard errors); "
                           "remove it to have the fit computed")
    return fit


def _load_network(module: nn.Module, path: Path, what: str) -> nn.Module:
    """Strictly load a plain state dict from ``path`` into ``module`` (one-line WeightsError on failure)."""
    state = load_torch_file(path, f"{what} state dict")
    load_state_strict(module, state, path, what)
    return module


def load_stylegan1_ffhq(weights: Path | None = None, device: torch.device | str = "cpu",
                        fit_samples: int | None = None, config: StyleGAN1Config = FFHQ_1024) -> StyleGAN1Generator:
    """PULSE's StyleGAN1 FFHQ generator from a folder holding ``synthesis.pt`` and ``mapping.pt``.

    Both files are plain state dicts read by :func:`.checkpoint.load_torch_file` (bounded, no
    code) into the fixed architecture ``config`` and loaded strictly; NaN/inf weights are refused
    and the stored blur kernels are used as stored. The Gaussian fit is cached as
    ``gaussian_fit.pt`` in the same folder (computed once on ``device`` from ``fit_samples`` z
    draws, seed 0; keyed to the mapping file's SHA-256 and checked, see
    :func:`.gaussian_fit.load_or_compute_fit`). If the folder holds PULSE's own committed fit renamed
    to ``pulse_gaussian_fit.pt``, that one is used instead, reproducing PULSE's search space
    exactly, once :func:`load_pulse_fit` has checked it against the mapping weights.

    Args:
        weights: the folder (None = ``weights_home()/"stylegan1-ffhq"``).
        device: where the generator (and the fit computation) runs.
        fit_samples: z draws for the fit (None = ``$PULSE_AUDIT_FIT_SAMPLES`` if set, else 1,000,000).
        config: architecture; only tests change it (files must match it key for key).
    """
    from . import weights_home  # the registry imports this module lazily

    folder = Path(weights).expanduser() if weights is not None else weights_home() / "stylegan1-ffhq"
    if folder.is_file():
        raise WeightsError(f"{folder} is a file; stylegan1-ffhq expects a folder holding synthesis.pt and mapping.pt")
    hint = WEIGHTS_HINT.format(folder=folder)
    syn_path = require_file(folder / "synthesis.pt", "StyleGAN1 synthesis weights", hint)
    map_path = require_file(folder / "mapping.pt", "StyleGAN1 mapping weights", hint)
    arch = f"{config.resolution} px StyleGAN1 (PULSE layout, w dim {config.dlatent_size})"
    synthesis = _load_network(StyleGAN1Synthesis(config), syn_path, f"{arch} synthesis network")
    mapping = _load_network(StyleGAN1Mapping(config), map_path, f"{arch} mapping network")
    mapping.eval().requires_grad_(False).to(device)

    digests = (sha256_file(syn_path), sha256_file(map_path))
    pulse_fit = folder / "pulse_gaussian_fit.pt"
    if pulse_fit.is_file():
        log.info("using PULSE's own Gaussian fit %s instead of computing one", pulse_fit)
        fit = load_pulse_fit(pulse_fit, mapping, config.dlatent_size, device)
        fit_note = f"Gaussian fit: PULSE's own file {pulse_fit} (checked against the mapping weights)"
    else:
        samples = resolve_fit_samples(fit_samples)
        fit = load_or_compute_fit(folder / "gaussian_fit.pt", mapping, config.dlatent_size, samples, device=device,
                                  source=digests[1])
        fit_note = f"Gaussian fit: {fit.samples:,} z draws (seed 0), cached in {folder / 'gaussian_fit.pt'}"
    card = GeneratorCard(name="stylegan1-ffhq", weights=(syn_path, map_path),
                         weights_sha256=digests,
                         notes=(fit_note,), **FFHQ_CARD)
    return StyleGAN1Generator(synthesis, fit, card).freeze().to(device)
