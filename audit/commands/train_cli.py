"""The work behind ``pulse-audit train-generator``: draw a training set with a chosen group
composition (:mod:`audit.commands.train_sources`), train a small DCGAN on it (:mod:`pulse_engine.training`),
measure the skin tone of its samples, and write into the output folder:

- ``weights.pt``: the generator's state dict (tensors only; ``--generator dcgan-file:FOLDER`` loads it);
- ``card.json`` and ``README.md``: the generator card (training-data composition with counts, the
  source and its cut points, settings, seed, wall time, final losses, sample skin tone, the exact
  command, package versions, git commit);
- ``losses.csv``: the loss log (:data:`pulse_engine.training.LOSS_COLUMNS`);
- ``samples.png``: an 8×8 grid of samples, for a look by eye.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pulse_engine.errors import PulseAuditError
from pulse_engine.generators.base import DCGAN_CARD_FORMAT, SearchableGenerator
from pulse_engine.generators.checkpoint import sha256_file
from pulse_engine.generators.dcgan import load_dcgan_file
from pulse_engine.training import TrainConfig, TrainResult, save_generator, train_dcgan, write_losses

from ..classifiers import build_classifier
from ..metrics.study import PRIOR_FIELDS
from ..run.provenance import git_commit, package_versions, utc_now
from ..stats import bootstrap_interval
from ..vision.images import to_image
from .train_sources import SourceSet, draw_training_set, load_source, parse_composition

LICENCE = ("research use only: trained on samples of dcgan-digiface (gan-face-generate 1.1.1, MIT), whose "
           "training data DigiFace-1M carries a non-commercial research licence")
LIMITS = ("A small 32 px DCGAN trained for minutes on a CPU: rough faces, limited diversity. Its training faces are "
          "synthetic renders, and their skin-tone groups come from a lighting-dependent ITA measurement, not from "
          "people's self-identification. It exists to put a known training composition behind an audit.")


@dataclass(frozen=True)
class TrainOptions:
    """Options of ``pulse-audit train-generator`` beyond the :class:`TrainConfig`.

    Attributes:
        out: output folder (created).
        source: ``dcgan-digiface[:N]`` or a face-set spec (see :mod:`audit.commands.train_sources`).
        attribute: attribute whose groups the composition is over.
        composition: ``GROUP=SHARE,…`` shares summing to 1.
        size: training images drawn.
        name: generator name in its card (default: the output folder's name).
        source_seed: seed of the DCGAN source's latents.
        cache: cache folder for the labelled source (default :func:`audit.commands.train_sources.cache_home`).
        evaluate: samples whose ITA goes into the card (0 skips the measurement).
        eval_seed: seed of those samples' latents.
        command: the command line, recorded verbatim in the card.
        config: training settings.
    """

    out: Path
    source: str = "dcgan-digiface"
    attribute: str = "skin_tone"
    composition: str = "light=0.5,dark=0.5"
    size: int = 5600
    name: str = ""
    source_seed: int = 0
    cache: Path | None = None
    evaluate: int = 500
    eval_seed: int = 1
    command: str = ""
    config: TrainConfig = field(default_factory=TrainConfig)


def sample_images(generator: SearchableGenerator, count: int, seed: int) -> torch.Tensor:
    """``count`` samples (count, 3, R, R) in [0, 1] from latents ``randn(count, *latent_shape)`` seeded by ``seed``."""
    z = torch.randn(count, *generator.latent_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.cat([generator.synthesize(chunk).clamp(0, 1) for chunk in z.split(256)])


def skin_tone_summary(images: torch.Tensor, cut_points: dict[str, float] | None = None,
                      seed: int = 0, instrument: str = "skin-tone") -> dict[str, Any]:
    """Skin tone of (N, 3, R, R) images by the ``instrument`` classifier (``skin-tone``: where dlib finds a face;
    ``skin-tone-aligned``: every image, in the generator's face frame): images measured, mean ITA° with a 95 %
    bootstrap interval (2000 resamples), mean Monk index (1–10), and with ``cut_points`` (``lower_tercile``,
    ``upper_tercile`` in degrees) the shares of measured images above / below them."""
    tone = build_classifier(instrument)
    predictions = tone.predict([np.asarray(to_image(image)) for image in images])
    ita = np.array([p.values.get("ita", np.nan) for p in predictions])
    monk = np.array([int(p.label("monk")[3:]) if "ita" in p.values else 0 for p in predictions])
    ok = np.isfinite(ita)
    summary: dict[str, Any] = {"samples": len(ita), "measured": int(ok.sum())}
    if ok.sum() < 2:
        return summary
    x = ita[ok]
    mean, low, high, _ = bootstrap_interval(lambda w: (w @ x) / w.sum(axis=1), len(x), seed=seed)
    summary |= {"ita_mean_deg": round(float(mean), 3), "ita_ci95_deg": [round(float(low), 3), round(float(high), 3)],
                "ita_median_deg": round(float(np.median(x)), 3), "monk_index_mean": round(float(monk[ok].mean()), 3)}
    if cut_points:
        summary["share_light"] = round(float(np.mean(x > cut_points["upper_tercile"])), 4)
        summary["share_dark"] = round(float(np.mean(x < cut_points["lower_tercile"])), 4)
    return summary


ALIGNED_PRIOR_FIELD = PRIOR_FIELDS["aligned"]
"""The card field with the aligned-frame skin tone of the generator's own samples: the instrument the study reads
its outputs with (``skin-tone-aligned``), so a prior slope from it is in the outputs' units and not selected by
detection (``samples_skin_tone`` is the detector-based measure, kept for comparison)."""


def aligned_prior(generator: SearchableGenerator, count: int, seed: int) -> dict[str, Any]:
    """The :data:`ALIGNED_PRIOR_FIELD` entry of a card: ``skin-tone-aligned`` on ``count`` samples of ``generator``
    at its own resolution (latents ``randn(count, *latent_shape)`` seeded by ``seed``, as the run measures outputs),
    with its provenance (instrument, frame file and SHA-256, samples, seed, date, git commit)."""
    frame = build_classifier("skin-tone-aligned").card
    summary = skin_tone_summary(sample_images(generator, count, seed), instrument="skin-tone-aligned")
    return summary | {"latent_seed": seed, "resolution": generator.resolution,
                      "instrument": f"skin-tone-aligned: {frame.model}",
                      "instrument_files": {Path(w).name: h for w, h in zip(frame.weights, frame.weights_sha256)},
                      "measured_on": utc_now(), "git_commit": git_commit()}


def sample_grid(images: torch.Tensor, columns: int = 8, scale: int = 2) -> Image.Image:
    """The first columns² images (N, 3, R, R) as one PIL grid, each pixel ``scale``×``scale`` (nearest)."""
    side = images.shape[-1]
    rows = min(columns, len(images) // columns)
    tiles = images[:rows * columns].reshape(rows, columns, 3, side, side).permute(2, 0, 3, 1, 4)
    grid = to_image(tiles.reshape(3, rows * side, columns * side))
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


def build_card(options: TrainOptions, source: SourceSet, counts: dict[str, int], indices: np.ndarray,
               result: TrainResult, weights: Path, evaluation: dict[str, Any],
               aligned: dict[str, Any] | None = None) -> dict[str, Any]:
    """The generator card as a JSON-ready dict (read back by ``dcgan-file``: ``architecture``, ``weights``);
    ``aligned`` is its :data:`ALIGNED_PRIOR_FIELD` entry (left out when None)."""
    config, size = options.config, int(sum(counts.values()))
    shares = ", ".join(f"{g} {n} ({n / size:.0%})" for g, n in counts.items())
    return {
        "format": DCGAN_CARD_FORMAT,
        "name": options.name or options.out.name,
        "family": "DCGAN",
        "folder": options.out.as_posix(),
        "architecture": config.architecture() | {"ndf": config.ndf},
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "bytes": weights.stat().st_size},
        "training_data": {
            "summary": f"{size} {source.spec} images at {config.resolution} px by {options.attribute}: {shares}",
            "attribute": options.attribute,
            "composition_requested": parse_composition(options.composition),
            "counts": counts,
            "groups": {g: {"rule": rule, "available": n} for (g, rule), n in zip(source.groups.items(),
                                                                               source.available().values())},
            "draw": f"numpy default_rng({config.seed}) choice without replacement per group",
            "indices_sha256": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest(),
            "source": source.card,
        },
        "training": config.as_dict() | {"steps_done": result.steps, "seconds": round(result.seconds, 1),
                                        "stopped_early": result.stopped_early,
                                        "final_losses_last100": {k: round(v, 4)
                                                                 for k, v in result.final_losses().items()}},
        "samples_skin_tone": evaluation | {"latent_seed": options.eval_seed},
        **({ALIGNED_PRIOR_FIELD: aligned} if aligned else {}),
        "command": options.command,
        "created": utc_now(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "licence": LICENCE,
        "limits": LIMITS,
        "notes": [f"trained composition: {shares}", f"seed {config.seed}, {result.steps} steps"],
    }


def _data_lines(card: dict[str, Any]) -> list[str]:
    data, total = card["training_data"], sum(card["training_data"]["counts"].values())
    lines = ["## Training data", "", "| group | rule | available | drawn | share |", "|---|---|---|---|---|"]
    for group, info in data["groups"].items():
        drawn = data["counts"].get(group, 0)
        lines.append(f"| {group} | {info['rule']} | {info['available']} | {drawn} | {drawn / total:.1%} |")
    src = data["source"]
    lines += ["", f"Source: {src.get('origin', '')}.", f"Labelling: {src.get('labelling', '')}.", ""]
    if "ita_cut_points_deg" in src:
        quantiles = ", ".join(f"{k} {v}" for k, v in src["ita_quantiles_deg"].items())
        lines += [f"Measured faces: {src['measured']} of {src['samples']} ({src['dropped_no_face']} dropped: no "
                  f"face measured). ITA quantiles (°): {quantiles}.", ""]
    return lines


def _training_lines(card: dict[str, Any]) -> list[str]:
    arch, train = card["architecture"], card["training"]
    capped = " (stopped by the time cap)" if train["stopped_early"] else ""
    losses = ", ".join(f"{k} {v}" for k, v in train["final_losses_last100"].items())
    return ["## Training", "",
            f"DCGAN {arch['resolution']} px, nz {arch['nz']}, ngf {arch['ngf']}, ndf {arch['ndf']}; "
            f"{train['steps_done']} of {train['steps']} steps, batch {train['batch_size']}, Adam lr "
            f"{train['learning_rate']} β₁ {train['beta1']}, seed {train['seed']}, {train['threads']} CPU threads, "
            f"wall time {train['seconds']} s{capped}.", "",
            f"Final losses (mean of the last 100 steps): {losses}. Log: `losses.csv`.", ""]


def _sample_lines(ev: dict[str, Any]) -> list[str]:
    if not ev or "ita_mean_deg" not in ev:
        return ["## Skin tone of its samples", "", f"Only {ev.get('measured', 0)} of {ev.get('samples', 0)} samples "
                "had a measurable face: no skin-tone summary. Samples: `samples.png`.", ""] if ev else []
    low, high = ev["ita_ci95_deg"]
    shares = (f", {ev['share_light']:.0%} above the light cut point and {ev['share_dark']:.0%} below the dark one"
              if "share_light" in ev else "")
    return ["## Skin tone of its samples", "",
            f"{ev['measured']} of {ev['samples']} samples (latent seed {ev['latent_seed']}) had a measurable face: "
            f"mean ITA {ev['ita_mean_deg']}° (95 % bootstrap CI {low} to {high}), median {ev['ita_median_deg']}°, "
            f"mean Monk index {ev['monk_index_mean']}{shares}. Samples: `samples.png`.", ""]


def _aligned_lines(ev: dict[str, Any] | None) -> list[str]:
    if not ev or "ita_mean_deg" not in ev:
        return []
    low, high = ev["ita_ci95_deg"]
    return [f"Aligned face frame (`{ALIGNED_PRIOR_FIELD}`, the instrument the study reads outputs with; every image "
            f"measured, not only those with a detected face): {ev['measured']} of {ev['samples']} samples (latent seed "
            f"{ev['latent_seed']}, "
            f"{ev['resolution']} px), mean ITA {ev['ita_mean_deg']}° (95 % bootstrap CI {low} to {high}), median "
            f"{ev['ita_median_deg']}°; measured {ev['measured_on'][:10]}.", ""]


def card_markdown(card: dict[str, Any]) -> str:
    """README.md of a generator folder: the card in prose and tables."""
    weights = card["weights"]
    packages = ", ".join(f"{k} {v}" for k, v in card["packages"].items())
    return "\n".join([f"# Generator `{card['name']}`", "", f"{card['training_data']['summary']}.", "",
                      f"Load it with `--generator dcgan-file:{card['folder']}` (the folder holding this file).", "",
                      *_data_lines(card), *_training_lines(card), *_sample_lines(card["samples_skin_tone"]),
                      *_aligned_lines(card.get(ALIGNED_PRIOR_FIELD)),
                      "## Provenance", "", f"Command: `{card['command']}`", "",
                      f"Created {card['created']}, git commit `{card['git_commit'] or 'unknown'}`. Weights "
                      f"`{weights['file']}` SHA-256 `{weights['sha256']}` ({weights['bytes']} bytes).", "",
                      f"Packages: {packages}.", "", f"Licence: {card['licence']}.", "", f"Limits: {card['limits']}",
                      ""])


def train_config(**settings: Any) -> TrainConfig:
    """A :class:`TrainConfig`, with invalid settings turned into a one-line user error."""
    try:
        return TrainConfig(**settings)
    except ValueError as exc:
        raise PulseAuditError(str(exc)) from exc


def summary_line(card: dict[str, Any]) -> str:
    """One line for the terminal: steps, time, final losses, sample ITA and where the folder is."""
    ev, train, losses = card["samples_skin_tone"], card["training"], card["training"]["final_losses_last100"]
    ita = (f"; sample ITA {ev['ita_mean_deg']}° (95 % CI {ev['ita_ci95_deg'][0]} to {ev['ita_ci95_deg'][1]})"
           if "ita_mean_deg" in ev else "")
    return (f"{train['steps_done']} steps in {train['seconds']} s, final loss_d {losses['loss_d']}, loss_g "
            f"{losses['loss_g']}{ita}; written to {card['folder']} (use --generator dcgan-file:{card['folder']})")


def train_generator(options: TrainOptions, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Draw, train, measure and write the generator folder; returns the card. ``on_step`` receives the number of
    update pairs done so far after each one."""
    config = options.config
    shares = parse_composition(options.composition)
    source = load_source(options.source, options.attribute, config.resolution, options.source_seed, options.cache)
    indices, counts = draw_training_set(source, shares, options.size, config.seed)
    images = torch.from_numpy(source.images[indices]).permute(0, 3, 1, 2).contiguous()
    result = train_dcgan(images, config, on_step)
    options.out.mkdir(parents=True, exist_ok=True)
    weights = save_generator(result.generator, options.out / "weights.pt")
    write_losses(options.out / "losses.csv", result.losses)
    samples = sample_images(result.generator, max(options.evaluate, 64), options.eval_seed)
    sample_grid(samples).save(options.out / "samples.png")
    cuts = source.card.get("ita_cut_points_deg")
    evaluation = skin_tone_summary(samples[:options.evaluate], cuts) if options.evaluate else {}
    aligned = aligned_prior(result.generator, options.evaluate, options.eval_seed) if options.evaluate else None
    card = build_card(options, source, counts, indices, result, weights, evaluation, aligned)
    (options.out / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    (options.out / "README.md").write_text(card_markdown(card))
    load_dcgan_file(options.out)  # the folder must load exactly as `--generator dcgan-file:FOLDER` will
    return card
