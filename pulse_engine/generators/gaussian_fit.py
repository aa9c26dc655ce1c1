"""PULSE's Gaussian fit of StyleGAN's W space, computed once and cached beside the weights.

z ~ N(0, I) is pushed through the mapping network; LeakyReLU with negative slope 5 undoes the
last LeakyReLU(0.2) (for StyleGAN2's fused LeakyReLU·√2 it gives √2·pre-activation, whose scale
the fit absorbs); the per-dimension mean μ and standard deviation σ of the result define the
search space w = LeakyReLU₀.₂(latent ⊙ σ + μ). The fit runs in chunks (PULSE's single 1M-sample
pass runs out of memory) with a seeded CPU generator, so it is identical on CPU and CUDA up to
floating-point summation order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import PulseAuditError, WeightsError

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 1_000_000
FIT_SEED = 0
FIT_SAMPLES_ENV = "PULSE_AUDIT_FIT_SAMPLES"


def resolve_fit_samples(fit_samples: int | None = None) -> int:
    """``fit_samples`` if given, else ``$PULSE_AUDIT_FIT_SAMPLES``, else 1,000,000 (PULSE's count)."""
    if fit_samples is None:
        raw = os.environ.get(FIT_SAMPLES_ENV, "").strip()
        if not raw:
            return DEFAULT_SAMPLES
        try:
            fit_samples = int(raw.replace("_", ""))
        except ValueError:
            raise PulseAuditError(f"{FIT_SAMPLES_ENV}={raw!r} is not an integer") from None
    if fit_samples < 2:
        raise PulseAuditError(f"the Gaussian fit needs at least 2 samples, got {fit_samples}")
    return int(fit_samples)


@dataclass(frozen=True)
class GaussianFit:
    """Per-dimension mean and std (each of shape (D,)) of LeakyReLU₅(mapping(z))."""

    mean: torch.Tensor
    std: torch.Tensor
    samples: int

    def to_w(self, latent: torch.Tensor) -> torch.Tensor:
        """w = LeakyReLU₀.₂(latent ⊙ σ + μ), broadcast over (B, N, D)."""
        return F.leaky_relu(latent * self.std + self.mean, negative_slope=0.2)


@torch.no_grad()
def compute_fit(mapping: Callable[[torch.Tensor], torch.Tensor], z_dim: int, samples: int = DEFAULT_SAMPLES,
                chunk: int = 10_000, device: torch.device | str = "cpu") -> GaussianFit:
    """Fit μ, σ from ``samples`` draws of z (seed 0), ``chunk`` at a time, accumulating in float64.

    Args:
        mapping: z (B, z_dim) → w (B, w_dim) on ``device``.
        z_dim: latent dimension of z.
        samples: number of z draws (PULSE: 1,000,000).
        chunk: draws per forward pass.
        device: where the mapping runs.
    """
    if samples < 2:
        raise ValueError("the Gaussian fit needs at least 2 samples")
    gen = torch.Generator().manual_seed(FIT_SEED)
    total = total_sq = None
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        z = torch.randn(n, z_dim, generator=gen).to(device)
        x = F.leaky_relu(mapping(z), negative_slope=5.0).double().cpu()
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
        done += n
    mean = total / samples
    var = (total_sq - samples * mean * mean) / (samples - 1)
    return GaussianFit(mean.float(), var.clamp_min(0).sqrt().float(), samples)


def load_or_compute_fit(cache: Path, mapping: Callable[[torch.Tensor], torch.Tensor], z_dim: int,
                        samples: int = DEFAULT_SAMPLES, device: torch.device | str = "cpu",
                        source: str = "") -> GaussianFit:
    """Read the fit from ``cache`` if it was made with ``samples`` draws from the mapping weights
    identified by ``source`` (e.g. their SHA-256), else compute and save it.

    The cache holds plain tensors (loadable with ``weights_only=True``), the sample count and the
    source digest, so replacing the weights invalidates it.
    """
    if cache.is_file():
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged cache is recomputed, and said so
            log.warning("recomputing unreadable Gaussian-fit cache %s (%s)", cache, type(exc).__name__)
        else:
            if (isinstance(blob, dict) and int(blob.get("samples", -1)) == samples
                    and blob.get("source", "") == source):
                return GaussianFit(blob["mean"].float(), blob["std"].float(), samples)
    log.info("computing the Gaussian fit of W from %d samples (seed %d)", samples, FIT_SEED)
    fit = compute_fit(mapping, z_dim, samples, device=device)
    try:
        tmp = cache.with_suffix(cache.suffix + ".tmp")
        torch.save({"mean": fit.mean, "std": fit.std, "samples": torch.tensor(samples), "source": source}, tmp)
        tmp.replace(cache)
    except OSError as exc:
        raise WeightsError(f"cannot write the Gaussian-fit cache {cache} beside the weights ({exc.strerror}); "
                           "make that folder writable") from exc
    return fit
