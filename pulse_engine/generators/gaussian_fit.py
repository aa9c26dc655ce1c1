"""PULSE's Gaussian fit of StyleGAN's W space, computed once and cached beside the weights.

z ~ N(0, I) is pushed through the mapping network; LeakyReLU with negative slope 5 undoes the
last LeakyReLU(0.2) (for StyleGAN2's fused LeakyReLU·√2 it gives √2·pre-activation, whose scale
the fit absorbs); the per-dimension mean μ and standard deviation σ of the result define the
search space w = LeakyReLU₀.₂(latent ⊙ σ + μ). The fit runs in chunks (PULSE's single 1M-sample
pass runs out of memory) with a seeded CPU generator, so it is identical on CPU and CUDA up to
floating-point summation order.

A fit read from a file changes every output, so it is never taken on trust: it must have the
right shape, finite values and positive standard deviations (:func:`fit_problem`), a cache must
carry the sample count and the SHA-256 of the weights it was made from, and either must agree with
an independent draw of :data:`CHECK_DRAWS` samples through the mapping network to within
:data:`CHECK_Z` standard errors (:func:`fit_disagreement`); a cache that fails is recomputed.
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
from .checkpoint import load_torch_file

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 1_000_000
FIT_SEED = 0
FIT_SAMPLES_ENV = "PULSE_AUDIT_FIT_SAMPLES"
CHECK_SEED = 1
CHECK_DRAWS = 4096
CHECK_Z = 8.0


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
def _moments(mapping: Callable[[torch.Tensor], torch.Tensor], z_dim: int, samples: int, seed: int, chunk: int,
             device: torch.device | str, powers: int) -> list[torch.Tensor]:
    """Float64 sums of x, x², … x^powers over ``samples`` draws of x = LeakyReLU₅(mapping(z))."""
    gen = torch.Generator().manual_seed(seed)
    sums: list[torch.Tensor] = []
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        z = torch.randn(n, z_dim, generator=gen).to(device)
        x = F.leaky_relu(mapping(z), negative_slope=5.0).double().cpu()
        terms = [x.pow(p).sum(0) for p in range(1, powers + 1)]
        sums = terms if not sums else [a + b for a, b in zip(sums, terms)]
        done += n
    return sums


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
    total, total_sq = _moments(mapping, z_dim, samples, FIT_SEED, chunk, device, 2)
    mean = total / samples
    var = (total_sq - samples * mean * mean) / (samples - 1)
    return GaussianFit(mean.float(), var.clamp_min(0).sqrt().float(), samples)


def fit_problem(mean: object, std: object, dim: int) -> str:
    """Why (mean, std) read from a file cannot be a Gaussian fit of dimension ``dim`` ('' if it can)."""
    for name, value in (("mean", mean), ("std", std)):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (dim,) or not value.is_floating_point():
            return f"{name} is not a float tensor of shape ({dim},)"
        if not bool(torch.isfinite(value).all()):
            return f"{name} holds NaN or infinite values"
    if not bool((std > 0).all()):
        return "std has values that are not positive"
    return ""


def fit_disagreement(fit: GaussianFit, mapping: Callable[[torch.Tensor], torch.Tensor], z_dim: int,
                     draws: int = CHECK_DRAWS, device: torch.device | str = "cpu") -> float:
    """Largest standardised difference, over dimensions, between ``fit`` and ``draws`` fresh samples
    (seed :data:`CHECK_SEED`): |Δmean| and |Δvariance| each divided by the standard error of the
    difference (from both sample sizes and the fresh sample's variance and fourth moment)."""
    s1, s2, s3, s4 = _moments(mapping, z_dim, draws, CHECK_SEED, 10_000, device, 4)
    m = s1 / draws
    var = (s2 / draws - m * m).clamp_min(0)
    fourth = (s4 - 4 * m * s3 + 6 * m * m * s2) / draws - 3 * m**4  # central 4th moment
    n = max(fit.samples, 2)
    fit_mean, fit_var = fit.mean.double().cpu(), fit.std.double().cpu() ** 2
    tiny = 1e-12 * (1 + m.abs() + var.sqrt())
    z_mean = (fit_mean - m).abs() / ((var / draws + fit_var / n).sqrt() + tiny)
    excess = (fourth - var * var).clamp_min(0)
    z_var = (fit_var - var).abs() / ((excess / draws + excess / n).sqrt() + tiny)
    return float(torch.maximum(z_mean, z_var).max())


def _read_cache(cache: Path, z_dim: int, samples: int, source: str) -> tuple[GaussianFit | None, str]:
    """The cached fit if it is keyed to ``samples`` and ``source`` and well formed, else (None, why)."""
    try:
        blob = load_torch_file(cache, "Gaussian-fit cache")
    except WeightsError as exc:
        return None, str(exc)
    if not isinstance(blob, dict):
        return None, "not a dict"
    count = blob.get("samples")
    if not (isinstance(count, torch.Tensor) and count.numel() == 1 and not count.is_floating_point()):
        return None, "no integer sample count"
    if int(count) != samples or blob.get("source") != source:
        return None, "made with another sample count or from other weights"
    problem = fit_problem(blob.get("mean"), blob.get("std"), z_dim)
    if problem:
        return None, problem
    return GaussianFit(blob["mean"].float(), blob["std"].float(), samples), ""


def load_or_compute_fit(cache: Path, mapping: Callable[[torch.Tensor], torch.Tensor], z_dim: int,
                        samples: int = DEFAULT_SAMPLES, device: torch.device | str = "cpu",
                        source: str = "") -> GaussianFit:
    """Read the fit from ``cache`` if it was made with ``samples`` draws from the mapping weights
    identified by ``source`` (their SHA-256), is well formed (:func:`fit_problem`) and agrees with
    a fresh check sample (:func:`fit_disagreement` ≤ :data:`CHECK_Z`); else compute and save it.

    The cache holds plain tensors (readable by :func:`.torch_file.read_torch_file`), the sample
    count and the source digest, so replacing the weights invalidates it, and a planted or damaged
    cache is recomputed (with a warning), never used.
    """
    if cache.is_file():
        fit, why = _read_cache(cache, z_dim, samples, source)
        if fit is not None:
            score = fit_disagreement(fit, mapping, z_dim, device=device)
            if score <= CHECK_Z:
                return fit
            why = f"disagrees with the mapping network ({score:.1f} standard errors)"
        log.warning("recomputing the Gaussian-fit cache %s: %s", cache, why)
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
