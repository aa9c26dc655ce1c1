"""The interface between a face generator and the PULSE search.

The search never looks inside a generator. It needs exactly:

- ``latent_shape``: per-image shape (N, D) of the search variable: N vectors of dimension D,
  each projected onto its own sphere. A DCGAN has (1, 100); StyleGAN at 1024 px has (18, 512).
- ``sample_latent``: a draw from the search space's Gaussian prior.
- ``latent_to_w``: the map from the search variable to the vectors GEOCROSS compares (for
  StyleGAN: LeakyReLU₀.₂(latent ⊙ σ + μ) in W+; for a DCGAN: z itself).
- ``noise_shapes``: per-image (1, r, r) shape of each explicit noise input, in layer order, plus
  which are optimised (``default_trainable_noise`` leading maps) and which are forced to zero
  (``default_zero_noise``) unless the search overrides them.
- ``synthesize_w``: the image from ``w`` and the noise maps, (B, 3, R, R) in [0, 1].

Every generator is frozen (no parameter requires grad) and in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

DCGAN_CARD_FORMAT = "pulse-audit generator card v1"
"""``format`` of the ``card.json`` beside the weights that ``pulse-audit train-generator`` writes (``dcgan-file``)."""
SHIFTED_CARD_FORMAT = "pulse-audit shifted generator card v1"
"""``format`` of a prior-shifted generator's ``card.json`` (``shifted``)."""

def power_of_two_log2(side: int, minimum: int, what: str) -> int:
    """log2 of an image side that must be a power of two ≥ ``minimum``; otherwise ValueError "``what`` must be a
    power of two ≥ ``minimum``, got ``side``"."""
    if side < minimum or 2 ** int(math.log2(side)) != side:
        raise ValueError(f"{what} must be a power of two ≥ {minimum}, got {side}")
    return int(math.log2(side))


@dataclass(frozen=True)
class GeneratorCard:
    """What a report needs to say about a generator. Unknown fields stay empty, never invented."""

    name: str
    family: str
    training_data: str = ""
    licence: str = ""
    weights: tuple[Path, ...] = ()
    weights_sha256: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


class SearchableGenerator(nn.Module):
    """Base class for generators the PULSE search can drive. Subclasses set the attributes below
    in ``__init__`` and implement :meth:`latent_to_w` and :meth:`synthesize_w`.

    Attributes:
        resolution: output side R in pixels (square RGB images).
        latent_shape: (N, D), the per-image search-variable shape.
        noise_shapes: per-image (1, r, r) shape of each noise input; empty when there is none.
        default_trainable_noise: how many leading noise maps PULSE optimises by default.
        default_zero_noise: indices of noise maps forced to zero by default.
        card: provenance shown in reports.
    """

    resolution: int
    latent_shape: tuple[int, int]
    noise_shapes: tuple[tuple[int, int, int], ...] = ()
    default_trainable_noise: int = 0
    default_zero_noise: tuple[int, ...] = ()
    card: GeneratorCard

    def freeze(self) -> SearchableGenerator:
        """Put the module in eval mode with no trainable parameters; returns self."""
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)
        return self

    def search_space_state(self) -> dict[str, torch.Tensor]:
        """Tensors besides the weights files that decide this generator's outputs, e.g. StyleGAN's Gaussian fit
        of W (from a cache file, PULSE's own fit file or a sample count): a resumed audit checks their digest.
        Default: those of the searchable generators this one wraps (a shifted generator's base), else none."""
        return {f"{name}.{key}": tensor for name, child in self.named_children()
                if isinstance(child, SearchableGenerator) for key, tensor in child.search_space_state().items()}

    def sample_latent(self, generator: torch.Generator) -> torch.Tensor:
        """One draw (1, N, D) from the search space's standard Gaussian prior, on the CPU."""
        return torch.randn((1, *self.latent_shape), generator=generator)

    def latent_to_w(self, latent: torch.Tensor) -> torch.Tensor:
        """Map the search variable (B, N, D) to the vectors fed to synthesis, (B, N, D')."""
        raise NotImplementedError

    def synthesize_w(self, w: torch.Tensor, noise: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """Images (B, 3, R, R) in [0, 1] from ``w`` and one tensor (B, 1, r, r) per noise input."""
        raise NotImplementedError

    def synthesize(self, latent: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Images (B, 3, R, R) in [0, 1] straight from the search variable."""
        return self.synthesize_w(self.latent_to_w(latent), noise)

    def check_latent(self, latent: torch.Tensor) -> None:
        """Raise a ValueError unless ``latent`` has shape (B, N, D)."""
        if latent.dim() != 3 or tuple(latent.shape[1:]) != tuple(self.latent_shape):
            raise ValueError(f"{type(self).__name__} expects latents (B, {self.latent_shape[0]}, "
                             f"{self.latent_shape[1]}), got {tuple(latent.shape)}")
