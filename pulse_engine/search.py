"""PULSE's latent search, batched, seeded and with explicit restarts.

For each low-resolution image y (values in [0, 1]) the search looks for a latent whose generated
image G downsamples onto y: minimise ``100·L2 + 0.05·GEOCROSS`` (configurable) with Adam over the
latent (and the first noise maps), re-projecting every latent vector and trainable noise map onto
its sphere after each step, with PULSE's ``linear1cycledrop`` learning-rate schedule.

Departures from the reference code, all deliberate (see docs in README and the issue notes):

- success is judged per image (mean squared LR error ≤ eps at some step), not on the batch sum;
- the returned HR image and its LR version come from the same, best iterate: the lowest total
  loss among iterates that meet eps, or the lowest total loss when none does;
- every sample draws its latent and noise from its own generator seeded by
  (seed, item key, restart), so seed 0 works, repeats reproduce, and results do not depend on
  which other images share the batch;
- an image that fails is retried up to ``restarts`` times with fresh seeds; failure is returned
  as data, never dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .downsample import BicubicDownsample, factor_between
from .errors import ConfigError
from .generators.base import SearchableGenerator
from .losses import LossSpec
from .schedule import lr_multiplier
from .seeding import cpu_generator, derive_seed
from .sphere import RADIUS_RULES, project_, sphere_radius

OPTIMIZERS = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "sgdm": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "adamax": lambda params, lr: torch.optim.Adamax(params, lr=lr),
}
NOISE_TYPES = ("trainable", "fixed", "zero")

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class SearchConfig:
    """Settings of one search; the defaults are PULSE's.

    Attributes:
        loss: weighted terms, e.g. ``"100*L2+0.05*GEOCROSS"`` (terms L2, L1, GEOCROSS).
        eps: success threshold on the per-image mean squared LR error, [0, 1] pixel units; also
            the clamp of the data terms.
        steps: optimiser steps per attempt.
        learning_rate: base learning rate (multiplied by the schedule).
        optimizer: adam, sgd, sgdm (momentum 0.9) or adamax.
        schedule: fixed, linear1cycle or linear1cycledrop.
        restarts: maximum attempts per image; an image stops after its first success.
        seed: base seed; any integer, 0 included.
        noise_type: trainable (first ``trainable_noise`` maps optimised, others fixed random),
            fixed (all random, frozen) or zero.
        trainable_noise: number of leading noise maps optimised; None = the generator's default.
        zero_noise: noise maps forced to zero; None = the generator's default.
        sphere_radius: ``sqrt-dim`` (paper: radius √d per vector / √(r²) per noise map) or
            ``initial`` (the reference code: the norm of the initial draw).
        tile_latent: search one latent vector shared by all layers (PULSE's ``-tile_latent``).
    """

    loss: str = "100*L2+0.05*GEOCROSS"
    eps: float = 2e-3
    steps: int = 100
    learning_rate: float = 0.4
    optimizer: str = "adam"
    schedule: str = "linear1cycledrop"
    restarts: int = 1
    seed: int = 0
    noise_type: str = "trainable"
    trainable_noise: int | None = None
    zero_noise: tuple[int, ...] | None = None
    sphere_radius: str = "sqrt-dim"
    tile_latent: bool = False

    def __post_init__(self) -> None:
        try:
            self._check()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def _check(self) -> None:
        LossSpec.parse(self.loss)
        lr_multiplier(self.schedule, self.steps)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(f"unknown noise type {self.noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")
        if self.sphere_radius not in RADIUS_RULES:
            raise ValueError(f"unknown sphere radius {self.sphere_radius!r}; choose one of {', '.join(RADIUS_RULES)}")
        if self.restarts < 1 or self.eps <= 0 or self.learning_rate <= 0:
            raise ValueError("restarts must be ≥ 1, eps and learning_rate > 0")


@dataclass
class SearchResult:
    """The outcome for one input image.

    Attributes:
        item_key: the caller's identifier of the input.
        image: best HR output (3, R, R), float32 in [0, 1], on the CPU.
        low: that output downsampled (3, h, w), [0, 1].
        lr_l2: mean squared error between ``low`` and the input, [0, 1] units (not clamped).
        success: True when ``lr_l2`` ≤ eps was reached in some attempt.
        best_step: 0-based step of the returned iterate within its attempt.
        steps: optimiser steps run for this image over all its attempts.
        restarts_used: attempts made (1 … restarts).
        seed: the per-sample seed of the attempt that produced ``image``.
        seconds: wall time of the attempts this image took part in (shared with its batch).
        terms: loss terms of the returned iterate (per-image values, e.g. L2, GEOCROSS, TOTAL).
    """

    item_key: str
    image: torch.Tensor
    low: torch.Tensor
    lr_l2: float
    success: bool
    best_step: int
    steps: int
    restarts_used: int
    seed: int
    seconds: float
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class _Best:
    """Best-so-far bookkeeping for a batch, one row per image, on the search device.

    It keeps the search variables of the best iterate (latent and trainable noise maps), not its
    image: the image is synthesised once from them at the end, which is cheaper than copying
    every step's images and gives the same pixels (the forward pass is deterministic).
    """

    variables: list[torch.Tensor]
    ok: torch.Tensor
    total: torch.Tensor
    l2: torch.Tensor
    step: torch.Tensor
    terms: dict[str, torch.Tensor]
    eps: float

    @classmethod
    def first(cls, variables: list[torch.Tensor], l2: torch.Tensor, terms: dict[str, torch.Tensor],
              eps: float) -> _Best:
        """Bookkeeping initialised with the iterate of step 0."""
        step = torch.zeros(len(l2), dtype=torch.long, device=l2.device)
        return cls([v.detach().clone() for v in variables], l2 <= eps, terms["TOTAL"], l2, step, terms, eps)

    def update(self, step: int, variables: list[torch.Tensor], l2: torch.Tensor,
               terms: dict[str, torch.Tensor]) -> None:
        ok = l2 <= self.eps
        total = terms["TOTAL"]
        lower = (total < self.total) | ((total == self.total) & (l2 < self.l2))
        better = (ok & ~self.ok) | ((ok == self.ok) & lower)
        if not bool(better.any()):
            return
        self.variables = [torch.where(better.view(-1, *[1] * (v.dim() - 1)), v.detach(), kept)
                          for v, kept in zip(variables, self.variables)]
        self.ok = self.ok | ok
        self.total = torch.where(better, total, self.total)
        self.l2 = torch.where(better, l2, self.l2)
        self.step = torch.where(better, torch.full_like(self.step, step), self.step)
        self.terms = {k: torch.where(better, v, self.terms[k]) for k, v in terms.items()}


def _noise_plan(generator: SearchableGenerator, config: SearchConfig) -> list[str]:
    """For each noise input: "zero", "fixed" or "trainable"."""
    count = len(generator.noise_shapes)
    zero = set(generator.default_zero_noise if config.zero_noise is None else config.zero_noise)
    bad = [i for i in zero if not 0 <= i < count]
    if bad:
        raise ValueError(f"zero_noise indices {bad} out of range for {count} noise inputs")
    trainable = generator.default_trainable_noise if config.trainable_noise is None else config.trainable_noise
    plan = []
    for i in range(count):
        if i in zero or config.noise_type == "zero":
            plan.append("zero")
        elif config.noise_type == "trainable" and i < trainable:
            plan.append("trainable")
        else:
            plan.append("fixed")
    return plan


def _initial_state(generator: SearchableGenerator, config: SearchConfig, seeds: Sequence[int],
                   device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor], list[str]]:
    """Latents (B, N or 1, D) and noise maps drawn from each sample's own seeded generator."""
    plan = _noise_plan(generator, config)
    latents, noises = [], [[] for _ in plan]
    for seed in seeds:
        rng = cpu_generator(seed)
        latent = generator.sample_latent(rng)
        latents.append(latent[:, :1] if config.tile_latent else latent)
        for i, (shape, kind) in enumerate(zip(generator.noise_shapes, plan)):
            draw = torch.randn((1, *shape), generator=rng)
            noises[i].append(torch.zeros_like(draw) if kind == "zero" else draw)
    latent = torch.cat(latents).to(device)
    noise = [torch.cat(maps).to(device) for maps in noises]
    return latent, noise, plan


def _attempt(generator: SearchableGenerator, reference: torch.Tensor, seeds: Sequence[int],
             config: SearchConfig, down: BicubicDownsample,
             on_step: ProgressFn | None) -> tuple[_Best, torch.Tensor, torch.Tensor]:
    """One PULSE optimisation of ``config.steps`` steps for a batch.

    Returns the bookkeeping of the best iterates, their HR images and their downsampled images.
    """
    device = reference.device
    loss = LossSpec.parse(config.loss)
    multiplier = lr_multiplier(config.schedule, config.steps)
    latent, noise, plan = _initial_state(generator, config, seeds, device)
    params = [latent] + [n for n, kind in zip(noise, plan) if kind == "trainable"]
    radii = [sphere_radius(p, config.sphere_radius) for p in params]
    for p, r in zip(params, radii):
        project_(p, r)
        p.requires_grad_(True)
    optimizer = OPTIMIZERS[config.optimizer](params, config.learning_rate)
    n_vectors = generator.latent_shape[0]
    trainable = [i for i, kind in enumerate(plan) if kind == "trainable"]

    def render(variables: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, image) for the latent and trainable noise maps in ``variables``."""
        maps = list(noise)
        for i, value in zip(trainable, variables[1:]):
            maps[i] = value
        full = variables[0].expand(-1, n_vectors, -1) if config.tile_latent else variables[0]
        w = generator.latent_to_w(full)
        return w, generator.synthesize_w(w, maps)

    best: _Best | None = None
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * multiplier(step)
        optimizer.zero_grad(set_to_none=True)
        w, image = render(params)
        low = down(image)
        terms = loss.evaluate(low, reference, w, config.eps)
        with torch.no_grad():
            l2 = (low - reference).pow(2).mean(dim=(1, 2, 3))
            detached = {k: v.detach() for k, v in terms.items()}
            if best is None:
                best = _Best.first(params, l2, detached, config.eps)
            else:
                best.update(step, params, l2, detached)
        terms["TOTAL"].sum().backward()
        optimizer.step()
        for p, r in zip(params, radii):
            project_(p, r)
        if on_step is not None:
            on_step(len(seeds))
    assert best is not None
    with torch.no_grad():
        _, image = render(best.variables)
        return best, image, down(image)


def pulse_search(generator: SearchableGenerator, low_res: torch.Tensor, config: SearchConfig = SearchConfig(),
                 item_keys: Sequence[str] | None = None, batch_size: int = 16,
                 progress: ProgressFn | None = None) -> list[SearchResult]:
    """Run PULSE on every image of ``low_res`` (B, 3, h, h) in [0, 1].

    Args:
        generator: any :class:`SearchableGenerator`; the search runs on its device.
        low_res: the LR inputs; R / h must be an integer (R = generator resolution).
        config: search settings (defaults are PULSE's).
        item_keys: stable identifiers used to derive seeds (default: "0", "1", …).
        batch_size: images optimised together (memory vs throughput; results do not depend on it
            beyond floating-point rounding).
        progress: called with the number of image-steps just completed.

    Returns:
        One :class:`SearchResult` per input, in input order.
    """
    if low_res.dim() != 4 or low_res.shape[1] != 3 or low_res.shape[2] != low_res.shape[3]:
        raise ValueError(f"expected square RGB inputs (B, 3, h, h), got {tuple(low_res.shape)}")
    keys = [str(i) for i in range(len(low_res))] if item_keys is None else [str(k) for k in item_keys]
    if len(keys) != len(low_res) or len(set(keys)) != len(keys):
        raise ValueError("item_keys must be unique and one per input")
    device = next(iter(generator.buffers()), next(generator.parameters())).device
    down = BicubicDownsample(factor_between(generator.resolution, low_res.shape[-1])).to(device)
    results: dict[int, SearchResult] = {}
    pending = list(range(len(keys)))
    for restart in range(config.restarts):
        still_failing = []
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            seeds = [derive_seed(config.seed, keys[i], restart) for i in chunk]
            reference = low_res[chunk].to(device=device, dtype=torch.float32)
            began = time.perf_counter()
            best, images, lows = _attempt(generator, reference, seeds, config, down, progress)
            seconds = time.perf_counter() - began
            for row, index in enumerate(chunk):
                previous = results.get(index)
                ok = bool(best.ok[row])
                replace = previous is None or ok or float(best.total[row]) < previous.terms["TOTAL"]
                spent = (previous.steps if previous else 0) + config.steps
                elapsed = (previous.seconds if previous else 0.0) + seconds
                if replace:
                    results[index] = SearchResult(
                        item_key=keys[index], image=images[row].float().cpu(), low=lows[row].float().cpu(),
                        lr_l2=float(best.l2[row]), success=ok, best_step=int(best.step[row]), steps=spent,
                        restarts_used=restart + 1, seed=seeds[row], seconds=elapsed,
                        terms={k: float(v[row]) for k, v in best.terms.items()})
                else:
                    previous.steps, previous.seconds, previous.restarts_used = spent, elapsed, restart + 1
                if not ok:
                    still_failing.append(index)
        pending = still_failing
        if not pending:
            break
    return [results[i] for i in range(len(keys))]


def search_samples(generator: SearchableGenerator, low_res: Sequence[torch.Tensor], item_keys: Sequence[str],
                   samples: int, config: SearchConfig = SearchConfig(), batch_size: int = 16,
                   progress: ProgressFn | None = None) -> list[list[SearchResult]]:
    """``samples`` independent outputs for each LR image (3, h, h), grouped per input.

    Sample k of input ``key`` is searched under the item key ``"<key>#<k>"``, so its seed depends
    only on (seed, key, k, restart), never on the other inputs or on ``samples``.
    """
    if not len(low_res):
        return []
    keys = [f"{key}#{k}" for key in item_keys for k in range(samples)]
    lows = torch.stack([low for low in low_res for _ in range(samples)])
    results = pulse_search(generator, lows, config, keys, batch_size=batch_size, progress=progress)
    return [results[i * samples:(i + 1) * samples] for i in range(len(item_keys))]
