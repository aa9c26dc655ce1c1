"""CPU training of a small DCGAN whose generator has :class:`DCGANGenerator`'s layout, so that the
weights load with the same code as every other DCGAN (registry entry ``dcgan-file``).

The recipe is the PyTorch DCGAN tutorial's (Radford et al. 2016): normal(0, 0.02) initialisation
(BatchNorm scales normal(1, 0.02)), the non-saturating GAN loss with binary cross-entropy, Adam with
lr 2e-4 and β₁ = 0.5 for both networks, one discriminator step then one generator step per batch.
The discriminator mirrors the generator: stride-2 4×4 convs doubling the width from ``ndf`` with
LeakyReLU(0.2) (BatchNorm on all but the first), then a 4×4 valid conv to one logit.

Everything random (initialisation, batch order, flips, noise) draws from one ``torch.Generator``
seeded by ``TrainConfig.seed``; the global RNG is left alone. On the CPU with a fixed thread count
repeated runs give the same losses up to floating-point reduction order.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .generators.base import power_of_two_log2
from .generators.dcgan import DCGANGenerator

LOSS_COLUMNS = ("step", "loss_d", "loss_g", "d_real", "d_fake")
"""Columns of ``losses.csv``: step (last step of the window, 1-based), mean discriminator loss
(BCE on real + fake), mean generator loss (non-saturating BCE), mean D(x) and D(G(z)) in [0, 1]."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one DCGAN training run.

    Attributes:
        resolution: image side in px, a power of two ≥ 8 (32 for the committed generators).
        nz: latent dimension.
        ngf: generator width at its last hidden layer (channels double towards the latent).
        ndf: discriminator width at its first layer.
        steps: discriminator + generator update pairs.
        batch_size: images per step.
        learning_rate: Adam learning rate of both networks.
        beta1: Adam β₁ of both networks.
        seed: seeds initialisation, batch order, flips and noise.
        flip: mirror each real image left-right with probability 1/2 (faces are near-symmetric).
        threads: torch CPU threads while training.
        log_every: steps averaged into one ``losses.csv`` row.
        max_seconds: wall-time cap in seconds (0 = none); training stops early when it is reached.
    """

    resolution: int = 32
    nz: int = 100
    ngf: int = 32
    ndf: int = 32
    steps: int = 4000
    batch_size: int = 64
    learning_rate: float = 2e-4
    beta1: float = 0.5
    seed: int = 0
    flip: bool = True
    threads: int = 2
    log_every: int = 10
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        power_of_two_log2(self.resolution, 8, "resolution")
        for name in ("nz", "ngf", "ndf", "steps", "batch_size", "threads", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or not 0 <= self.beta1 < 1 or self.max_seconds < 0:
            raise ValueError("learning_rate must be > 0, beta1 in [0, 1) and max_seconds ≥ 0")

    def architecture(self) -> dict[str, int | str]:
        """The generator's shape, as stored in a generator card (read back by the loader)."""
        return {"family": "DCGAN", "layout": "pulse_engine.generators.dcgan.DCGANGenerator", "nz": self.nz,
                "ngf": self.ngf, "resolution": self.resolution, "channels": 3}

    def as_dict(self) -> dict[str, int | float | bool]:
        return asdict(self)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for R×R RGB images in [−1, 1]; returns one logit per image, shape (B,)."""

    def __init__(self, ndf: int = 32, resolution: int = 32, channels: int = 3) -> None:
        super().__init__()
        n = int(math.log2(resolution))
        widths = [ndf * 2 ** i for i in range(n - 2)]  # R/2, R/4, …, 4 px
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images).flatten()


@torch.no_grad()
def dcgan_init_(module: nn.Module, generator: torch.Generator) -> None:
    """The DCGAN initialisation in place: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), shift 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02, generator=generator)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02, generator=generator)
            nn.init.zeros_(layer.bias)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        generator: the trained generator, frozen, in eval mode (BatchNorm running statistics).
        losses: one dict per ``losses.csv`` row (keys :data:`LOSS_COLUMNS`).
        steps: update pairs done (< ``config.steps`` when the time cap stopped training).
        seconds: wall time of the training loop.
        stopped_early: the ``max_seconds`` cap was reached.
    """

    generator: DCGANGenerator
    losses: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def final_losses(self, window: int = 100) -> dict[str, float]:
        """Means of the last ``window`` steps' losses (rows weighted equally)."""
        rows = [r for r in self.losses if r["step"] > self.steps - window] or self.losses[-1:]
        return {k: sum(r[k] for r in rows) / len(rows) for k in LOSS_COLUMNS[1:]}


def _batches(count: int, batch_size: int, generator: torch.Generator):
    """Endless stream of index batches: a fresh permutation per epoch, last partial batch dropped."""
    per_epoch = max(1, count // batch_size)
    while True:
        order = torch.randperm(count, generator=generator)
        for i in range(per_epoch):
            yield order[i * batch_size:(i + 1) * batch_size]


def train_dcgan(images: torch.Tensor, config: TrainConfig, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train a DCGAN on ``images`` and return the generator with its loss log.

    Args:
        images: (N, 3, R, R) uint8 RGB training images, R = ``config.resolution``, N ≥ batch size.
        config: the settings.
        on_step: called after every update pair with the number done so far (progress).
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, config.resolution,
                                                                                        config.resolution):
        raise ValueError(f"expected uint8 images (N, 3, {config.resolution}, {config.resolution}), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if len(images) < config.batch_size:
        raise ValueError(f"{len(images)} training images are fewer than one batch of {config.batch_size}")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    rng = torch.Generator().manual_seed(config.seed)
    netg = DCGANGenerator(config.nz, config.ngf, config.resolution)
    netd = DCGANDiscriminator(config.ndf, config.resolution)
    dcgan_init_(netg, rng)
    dcgan_init_(netd, rng)
    netg.train()
    netd.train()
    opt_g = torch.optim.Adam(netg.parameters(), lr=config.learning_rate, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(netd.parameters(), lr=config.learning_rate, betas=(config.beta1, 0.999))
    batches = _batches(len(images), config.batch_size, rng)
    ones, zeros = torch.ones(config.batch_size), torch.zeros(config.batch_size)
    window: list[tuple[float, float, float, float]] = []
    result = TrainResult(netg)
    began = time.perf_counter()
    try:
        for step in range(1, config.steps + 1):
            real = images[next(batches)].float().div_(127.5).sub_(1.0)
            if config.flip:
                mirror = torch.rand(config.batch_size, generator=rng) < 0.5
                real[mirror] = real[mirror].flip(-1)
            noise = torch.randn(config.batch_size, config.nz, 1, 1, generator=rng)
            fake = netg.main(noise)
            opt_d.zero_grad(set_to_none=True)
            logit_real, logit_fake = netd(real), netd(fake.detach())
            loss_d = (F.binary_cross_entropy_with_logits(logit_real, ones)
                      + F.binary_cross_entropy_with_logits(logit_fake, zeros))
            loss_d.backward()
            opt_d.step()
            opt_g.zero_grad(set_to_none=True)
            loss_g = F.binary_cross_entropy_with_logits(netd(fake), ones)
            loss_g.backward()
            opt_g.step()
            window.append((loss_d.item(), loss_g.item(), torch.sigmoid(logit_real).mean().item(),
                           torch.sigmoid(logit_fake).mean().item()))
            result.steps = step
            if len(window) == config.log_every or step == config.steps:
                result.losses.append(_log_row(step, window))
                window = []
            if on_step is not None:
                on_step(step)
            if config.max_seconds and time.perf_counter() - began >= config.max_seconds:
                result.stopped_early = step < config.steps
                break
        if window:
            result.losses.append(_log_row(result.steps, window))
    finally:
        torch.set_num_threads(threads)
    result.seconds = time.perf_counter() - began
    netg.freeze()
    return result


def _log_row(step: int, window: Sequence[tuple[float, float, float, float]]) -> dict[str, float]:
    means = [sum(values) / len(window) for values in zip(*window)]
    return {"step": step, **dict(zip(LOSS_COLUMNS[1:], means))}


def write_losses(path: Path, rows: Sequence[dict[str, float]]) -> Path:
    """Write the loss log as CSV (columns :data:`LOSS_COLUMNS`, 6 significant digits)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOSS_COLUMNS)
        for row in rows:
            writer.writerow([int(row["step"]), *(f"{row[k]:.6g}" for k in LOSS_COLUMNS[1:])])
    return path


def save_generator(generator: DCGANGenerator, path: Path) -> Path:
    """Save the generator's state dict (tensors only, loadable with ``weights_only=True``)."""
    state = {k: v.detach().clone().contiguous() for k, v in generator.state_dict().items()}
    torch.save(state, path)
    return path
