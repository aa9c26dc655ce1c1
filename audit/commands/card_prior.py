"""Measure the skin tone of committed generators' own samples with the study's output instrument and write it into
their cards (``samples_skin_tone_aligned``, :data:`audit.commands.train_cli.ALIGNED_PRIOR_FIELD`).

The study's prior slope (how far the generators' own samples move per dose step) was read from the cards'
detector-based measure (``samples_skin_tone``: dlib must find a face first). On rough dark samples the detector
finds few faces (5–13 of 500 for some dark-skewed seeds, none for one), so those means are selected towards
lighter samples. The aligned-frame measure (``skin-tone-aligned``) reads every sample in the generator's face
frame, as the study reads every output; a prior slope from it is in the outputs' own units. The detector-based
field stays in the card for comparison.

Run: ``python -m audit.commands.card_prior FOLDER... [--samples 200] [--seed 1]`` (a ``dcgan-file`` folder or a
``shifted`` member folder each). The card's other fields are kept as they are; the README.md of a folder written
by ``train-generator`` is rendered again from the card (:func:`audit.commands.train_cli.card_markdown`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from pulse_engine.errors import PulseAuditError
from pulse_engine.generators import load_generator
from pulse_engine.generators.base import DCGAN_CARD_FORMAT, SHIFTED_CARD_FORMAT
from pulse_engine.generators.card_file import read_card

from .train_cli import ALIGNED_PRIOR_FIELD, aligned_prior, card_markdown

SPEC_PREFIX = {DCGAN_CARD_FORMAT: "dcgan-file", SHIFTED_CARD_FORMAT: "shifted"}


def with_field_after(card: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    """``card`` with ``key`` set to ``value``: in place when present, else right after ``after`` (at the end
    when ``after`` is absent); every other key keeps its order."""
    if key in card or after not in card:
        return {**card, key: value}
    out: dict[str, Any] = {}
    for name, entry in card.items():
        out[name] = entry
        if name == after:
            out[key] = value
    return out


def update_card(folder: Path, count: int, seed: int, command: str = "") -> dict[str, Any]:
    """Measure ``count`` samples (latent seed ``seed``) of the generator in ``folder`` in the aligned frame and write
    the result into its ``card.json``; returns the new entry."""
    path = folder / "card.json"
    card = read_card(path, "generator card")
    prefix = SPEC_PREFIX.get(card.get("format"))
    if prefix is None:
        raise PulseAuditError(f"{path}: format {card.get('format')!r} is not a committed generator card "
                              f"({', '.join(SPEC_PREFIX)})")
    entry = aligned_prior(load_generator(f"{prefix}:{folder}"), count, seed) | {"command": command}
    card = with_field_after(card, "samples_skin_tone", ALIGNED_PRIOR_FIELD, entry)
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    if "training" in card:  # written by train-generator, with its README.md rendered from the card
        (folder / "README.md").write_text(card_markdown(card))
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the aligned-frame skin tone of generators' own samples into "
                                                 "their cards (see the module docstring).")
    parser.add_argument("folders", type=Path, nargs="+", help="generator folders holding a card.json")
    parser.add_argument("--samples", type=int, default=200, help="samples measured per generator")
    parser.add_argument("--seed", type=int, default=1, help="latent seed (the cards' detector measure used 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    for folder in args.folders:
        command = f"python -m audit.commands.card_prior {folder.as_posix()} --samples {args.samples} --seed {args.seed}"
        entry = update_card(folder, args.samples, args.seed, command)
        print(folder.as_posix(), entry.get("ita_mean_deg"), entry.get("ita_ci95_deg"),
              f"{entry['measured']}/{entry['samples']}", flush=True)


if __name__ == "__main__":
    main()
