"""Labelled source sets for ``pulse-audit train-generator``, and the seeded draw of a training set
with a chosen group composition over one attribute.

Sources (``--source``):

- ``dcgan-digiface[:N]`` (offline default, N = 20,000): N seeded samples of the shipped 64 px DigiFace
  DCGAN, downscaled to the training resolution with PULSE's antialiased bicubic operator. Each is
  labelled over the attribute ``skin_tone`` from ITA° measured by the ``skin-tone`` classifier on the
  **64 px** image; samples without a detected face (or with too few skin pixels) are dropped. Groups:
  ``light`` = ITA above the sample's upper tercile, ``dark`` = ITA below its lower tercile, ``middle``
  in between. The cut points are data-driven because ITA on these renders is skewed: the median is
  about −36° and the dermatology bands call more than half of them "dark" (offline-assets notes §4),
  so fixed bands would leave a tiny "light" group. Terciles give equal-sized light and dark groups
  separated by a middle third that is never drawn, so the two groups clearly differ in measured
  tone. The labelled set is cached as ``.npz`` under :func:`cache_home` (never in the repository).
- any face-set spec of ``pulse-audit run`` (``folder:PATH``, ``fairface:PATH``, ``utkface:PATH``,
  ``celeba:PATH``, ``demo``): the groups are the set's labels of the attribute; images are
  centre-cropped and resized (Lanczos) to the training resolution; unreadable files are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pulse_engine.downsample import downsample
from pulse_engine.errors import InputImageError, PulseAuditError
from pulse_engine.generators import load_generator

from ..classifiers import build_classifier
from ..run.inputs import hr_face, load_faceset

DIGIFACE = "dcgan-digiface"
DIGIFACE_COUNT = 20_000
CACHE_VERSION = 1
"""Bump when the labelling changes, so that stale caches are not reused."""
TERCILES = (100 / 3, 200 / 3)
"""Percentiles (of the detected faces' ITA) that cut dark | middle | light."""


def cache_home() -> Path:
    """Cache folder for labelled source sets: ``$PULSE_AUDIT_CACHE`` (default ``~/.cache/pulse-audit``)."""
    return Path(os.environ.get("PULSE_AUDIT_CACHE", Path.home() / ".cache" / "pulse-audit")).expanduser()


@dataclass
class SourceSet:
    """Images labelled with a group over one attribute.

    Attributes:
        spec: the ``--source`` it was made from.
        attribute: the attribute the groups partition (``skin_tone`` for the DCGAN source).
        images: (N, R, R, 3) uint8 RGB at the training resolution.
        labels: (N,) group of each image ("" = no group: unlabelled, or no face measured).
        groups: group → how membership is decided (shown in the card).
        card: description of the source for the generator card (origin, counts, cut points, classifier).
        values: per-image ITA° for the DCGAN source (NaN where not measured), else None.
    """

    spec: str
    attribute: str
    images: np.ndarray
    labels: np.ndarray
    groups: dict[str, str]
    card: dict[str, Any] = field(default_factory=dict)
    values: np.ndarray | None = None

    def available(self) -> dict[str, int]:
        """Images per group."""
        return {g: int(np.count_nonzero(self.labels == g)) for g in self.groups}


def _digiface_images(count: int, seed: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` DCGAN samples (latents ``randn(count, 1, 100)`` from ``seed``): (64 px, R px) uint8 arrays."""
    generator = load_generator(DIGIFACE)
    z = torch.randn(count, *generator.latent_shape, generator=torch.Generator().manual_seed(seed))
    large, small = [], []
    with torch.no_grad():
        for chunk in z.split(256):
            x = generator.synthesize(chunk).clamp(0, 1)
            large.append(x)
            if resolution != generator.resolution:
                x = downsample(x, generator.resolution // resolution).clamp(0, 1)
            small.append(x)
    to_uint8 = lambda t: torch.cat(t).mul(255).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    return to_uint8(large), to_uint8(small)


def digiface_source(count: int = DIGIFACE_COUNT, seed: int = 0, resolution: int = 32,
                    cache: Path | None = None) -> SourceSet:
    """The labelled DCGAN source (see the module docstring), from the cache when it is there."""
    if resolution > 64 or 64 % resolution:
        raise PulseAuditError(f"the {DIGIFACE} source is 64 px; --resolution must divide 64, got {resolution}")
    path = (cache or cache_home()) / f"{DIGIFACE}-skin-tone-n{count}-seed{seed}-r{resolution}-v{CACHE_VERSION}.npz"
    if path.is_file():
        with np.load(path) as blob:
            images, ita = blob["images"], blob["ita"]
    else:
        large, images = _digiface_images(count, seed, resolution)
        tone = build_classifier("skin-tone")
        ita = np.array([tone.predict_one(image).values.get("ita", np.nan) for image in large], dtype=np.float64)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(partial, images=images, ita=ita)
        partial.replace(path)
    measured = np.isfinite(ita)
    low, high = (float(v) for v in np.percentile(ita[measured], TERCILES))
    labels = np.where(~measured, "", np.where(ita > high, "light", np.where(ita < low, "dark", "middle")))
    groups = {"light": f"ITA > {high:.2f}° (upper tercile)", "middle": f"{low:.2f}° ≤ ITA ≤ {high:.2f}°",
              "dark": f"ITA < {low:.2f}° (lower tercile)"}
    quantiles = np.percentile(ita[measured], [5, 25, 50, 75, 95])
    card = {
        "source": f"{DIGIFACE}:{count}",
        "origin": f"{count} samples of the dcgan-digiface generator (64 px, DigiFace-1M renders), latents "
                  f"torch.randn({count}, 1, 100) with torch.Generator().manual_seed({seed}), downscaled "
                  f"64 → {resolution} px with PULSE's antialiased bicubic operator",
        "labelling": "ITA° by the skin-tone classifier (dlib 68-landmark cheek + forehead mask, median L*, b*) "
                     "on the 64 px image; samples without a measured face dropped; groups cut at the terciles "
                     "of the measured ITA (data-driven: ITA on these renders is skewed towards 'dark' bands)",
        "samples": count, "measured": int(measured.sum()), "dropped_no_face": int((~measured).sum()),
        "ita_cut_points_deg": {"lower_tercile": round(low, 3), "upper_tercile": round(high, 3)},
        "ita_quantiles_deg": {f"p{q}": round(float(v), 3) for q, v in zip((5, 25, 50, 75, 95), quantiles)},
        "cache_file": path.name,
    }
    return SourceSet(f"{DIGIFACE}:{count}", "skin_tone", images, labels, groups, card, ita)


def faceset_source(spec: str, attribute: str, resolution: int) -> SourceSet:
    """A face set's images at ``resolution`` px, grouped by its labels of ``attribute``."""
    faces = load_faceset(spec)
    if attribute not in faces.attributes:
        raise PulseAuditError(f"dataset {spec} has no attribute {attribute!r}; its attributes: "
                              f"{', '.join(faces.attributes) or 'none'}")
    info = faces.attributes[attribute]
    images, labels, skipped = [], [], 0
    for item in faces.items:
        try:
            tensor = hr_face(item, resolution, "center")
        except InputImageError:
            skipped += 1
            continue
        images.append(tensor.mul(255).round().byte().permute(1, 2, 0).numpy())
        labels.append(str(item.labels.get(attribute, "")))
    groups = {value: f"dataset label {attribute} = {value} ({info.source})" for value in info.values}
    card = {"source": spec, "origin": f"face set {faces.name} ({faces.root})", "labelling":
            f"{attribute} labels {info.source}" + (f" by {info.model}" if info.model else ""),
            "samples": len(faces.items), "unreadable": skipped + len(getattr(faces, "skipped", [])),
            "licence": faces.licence, "citation": faces.citation}
    stack = np.stack(images) if images else np.zeros((0, resolution, resolution, 3), np.uint8)
    return SourceSet(spec, attribute, stack, np.array(labels, dtype=object), groups, card)


def load_source(spec: str, attribute: str, resolution: int, seed: int = 0, cache: Path | None = None) -> SourceSet:
    """``dcgan-digiface[:N]`` (attribute ``skin_tone`` only) or any face-set spec."""
    name, _, count = spec.partition(":")
    if name != DIGIFACE:
        return faceset_source(spec, attribute, resolution)
    if attribute != "skin_tone":
        raise PulseAuditError(f"the {DIGIFACE} source is labelled by skin_tone only, not {attribute!r}")
    try:
        n = int(count) if count else DIGIFACE_COUNT
    except ValueError:
        raise PulseAuditError(f"--source {spec!r}: write {DIGIFACE}:N with N a whole number") from None
    return digiface_source(n, seed, resolution, cache)


def parse_composition(text: str) -> dict[str, float]:
    """``light=0.85,dark=0.15`` → {group: share}; shares in [0, 1] summing to 1 (± 0.001)."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        group, eq, value = part.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not eq or not group.strip() or not 0 <= share <= 1:
            raise PulseAuditError(f"--composition {text!r}: write GROUP=SHARE pairs such as light=0.85,dark=0.15")
        shares[group.strip()] = share
    if not shares or abs(sum(shares.values()) - 1) > 1e-3:
        raise PulseAuditError(f"--composition {text!r}: the shares must sum to 1, not {sum(shares.values()):g}")
    return shares


def composition_counts(shares: dict[str, float], size: int) -> dict[str, int]:
    """Integer counts summing to ``size`` closest to ``share · size`` (largest remainders)."""
    exact = {g: s * size for g, s in shares.items()}
    counts = {g: int(v) for g, v in exact.items()}
    for g in sorted(exact, key=lambda g: counts[g] - exact[g])[:size - sum(counts.values())]:
        counts[g] += 1
    return counts


def draw_training_set(source: SourceSet, shares: dict[str, float], size: int, seed: int) -> tuple[np.ndarray,
                                                                                                   dict[str, int]]:
    """Seeded draw without replacement of ``size`` images with the composition ``shares``.

    Returns the sorted row indices into ``source.images`` and the count drawn per group.
    """
    unknown = [g for g in shares if g not in source.groups]
    if unknown:
        raise PulseAuditError(f"group {unknown[0]!r} is not in the source; its groups: {', '.join(source.groups)}")
    counts = composition_counts(shares, size)
    available = source.available()
    short = [f"{g}: {n} wanted, {available[g]} available" for g, n in counts.items() if n > available[g]]
    if short:
        raise PulseAuditError("the source has too few images for this composition (" + "; ".join(short)
                              + "); lower --size or use a larger --source")
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(source.labels == g), n, replace=False) for g, n in counts.items() if n]
    return np.sort(np.concatenate(picks)), counts
