"""Generator registry: names usable as ``--generator NAME[:WEIGHTS]``.

Each entry knows how to load its generator from an optional weights location, where it looks
by default, and which files must be there. Nothing is downloaded: a missing file is an error that
names it and says where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PulseAuditError, WeightsError
from ..registry import Entry, Registry
from .base import DCGAN_CARD_FORMAT, SHIFTED_CARD_FORMAT, GeneratorCard, SearchableGenerator

__all__ = ["GeneratorEntry", "REGISTRY", "GeneratorCard", "SearchableGenerator", "load_generator",
           "weights_home", "parse_generator_spec", "folder_generators"]


def weights_home() -> Path:
    """Root for user-supplied weights: ``$PULSE_AUDIT_HOME/weights`` (default ``~/.pulse-audit``)."""
    return Path(os.environ.get("PULSE_AUDIT_HOME", Path.home() / ".pulse-audit")).expanduser() / "weights"


@dataclass(frozen=True)
class GeneratorEntry(Entry):
    """One registered generator (:class:`pulse_engine.registry.Entry`; ``loader`` takes
    ``(weights: Path | None, device)`` and returns the generator).

    Attributes:
        default_location: where weights are looked for when none is given (None = shipped in a package,
            or nowhere when the entry takes a folder).
        required_files: file names that must exist inside ``default_location`` when it is a folder.
        card_format: for an entry whose spec must name a folder (``NAME:FOLDER``), the ``format`` of the
            ``card.json`` such a folder holds ("" for the others).
    """

    default_location: Callable[[], Path | None] = lambda: None
    required_files: tuple[str, ...] = ()
    card_format: str = ""

    @property
    def form(self) -> str:
        return f"{self.name}:FOLDER" if self.card_format else self.name

    def missing_files(self, weights: Path | None = None) -> list[Path]:
        """Files this entry needs that are absent (empty when it can load); an entry that takes a folder
        and is given none lists its required files under ``FOLDER``."""
        location = weights or self.default_location() or (Path("FOLDER") if self.card_format else None)
        if location is None:
            return []
        if self.required_files and (location.is_dir() or not location.suffix):
            return [location / f for f in self.required_files if not (location / f).is_file()]
        return [] if location.is_file() else [location]

    def missing(self, arg: str = "") -> list[str]:
        return [f"{path} is missing" for path in self.missing_files(Path(arg).expanduser() if arg else None)]

    def load(self, weights: Path | None, device: torch.device) -> SearchableGenerator:
        return REGISTRY.function(self)(weights, device)


def _digiface_location() -> Path | None:
    from .dcgan import digiface_weights_path
    try:
        return digiface_weights_path()
    except PulseAuditError:
        return Path("gan_face_generate/weights.tar (package not installed)")


REGISTRY: Registry[GeneratorEntry] = Registry("generator", __name__, (
    GeneratorEntry("dcgan-digiface", "64 px DCGAN trained on DigiFace-1M (ships in gan-face-generate)",
                   ".dcgan:load_dcgan_digiface", _digiface_location),
    GeneratorEntry("stylegan1-ffhq", "1024 px StyleGAN1 FFHQ in PULSE's layout (synthesis.pt + mapping.pt)",
                   ".stylegan1:load_stylegan1_ffhq", lambda: weights_home() / "stylegan1-ffhq",
                   ("synthesis.pt", "mapping.pt")),
    GeneratorEntry("stylegan2", "StyleGAN2: rosinality .pt (g_ema) or NVlabs stylegan2-ada .pkl, any resolution",
                   ".stylegan2_loaders:load_stylegan2", lambda: weights_home() / "stylegan2" / "stylegan2.pt"),
    GeneratorEntry("dcgan-tiny", "random 32 px DCGAN (seed 0), for tests and smoke runs",
                   ".dcgan:load_tiny_dcgan", lambda: None),
    GeneratorEntry("dcgan-file", "DCGAN made by `pulse-audit train-generator`: dcgan-file:FOLDER with weights.pt "
                   "+ card.json (e.g. datasets/generators/balanced)",
                   ".dcgan:load_dcgan_file", lambda: None, ("weights.pt", "card.json"),
                   DCGAN_CARD_FORMAT),
    GeneratorEntry("shifted", "a generator with its latent prior shifted along a direction: shifted:FOLDER with "
                   "card.json (e.g. datasets/generators/digiface-shift/alpha+2)",
                   ".shifted:load_shifted", lambda: None, ("card.json",), SHIFTED_CARD_FORMAT),
))


def folder_generators(root: Path, unusable: list[str] | None = None) -> list[str]:
    """``NAME:FOLDER`` of every generator folder under ``root`` (sorted): a folder whose ``card.json`` has the
    ``format`` of a registry entry that takes a folder. Each card is read by :func:`.card_file.read_card`
    (bounded size and nesting), so a card that is not a JSON object within those bounds is a WeightsError
    naming it, not a folder silently left out; a lister (``doctor``, ``generators``) passes ``unusable``, which
    receives that error's line instead, and goes on with the other folders."""
    from .card_file import read_card  # listing the registry imports no more than its own types

    entries = {entry.card_format: entry.name for entry in REGISTRY.values() if entry.card_format}
    specs = []
    for card in sorted(Path(root).rglob("card.json")):
        try:
            fmt = read_card(card, "generator card").get("format")
        except WeightsError as exc:
            if unusable is None:
                raise
            unusable.append(str(exc))
            continue
        if isinstance(fmt, str) and fmt in entries:
            specs.append(f"{entries[fmt]}:{card.parent}")
    return specs


def parse_generator_spec(spec: str) -> tuple[GeneratorEntry, Path | None]:
    """Split ``NAME[:WEIGHTS]`` into its registry entry and optional weights path."""
    entry, weights = REGISTRY.parse(spec)
    return entry, (Path(weights).expanduser() if weights else None)


def load_generator(spec: str, device: torch.device | str = "cpu") -> SearchableGenerator:
    """Load a generator from ``NAME[:WEIGHTS]`` onto ``device``."""
    entry, weights = parse_generator_spec(spec)
    return entry.load(weights, torch.device(device))
