"""A generator whose latent prior is shifted along a fixed direction: the controlled prior shift of
the known-answer experiment.

``ShiftedGenerator(base, direction, alpha)`` synthesises ``base(latent + alpha · direction)``. The
offset sits inside :meth:`latent_to_w`, so it acts on everything the PULSE search explores: the
search variable still lives on its sphere around the origin, but every point of that sphere is
rendered ``alpha · direction`` away, and a standard Gaussian draw of the search variable becomes a
draw from ``N(alpha · direction, I)`` for the base. With a unit ``direction`` in the latent space,
``alpha`` is the shift in standard deviations of the prior along it. Nothing else (weights, noise,
resolution) changes, so members of a family differ only in their prior.

Registry entry ``shifted:FOLDER``: ``FOLDER/card.json`` (written by ``python -m audit.commands.shift_family``)
names the base generator spec (a ``dcgan-file:`` path relative to the folder), the direction file
(relative to the folder, a (N, D) float tensor saved with ``torch.save``, with its SHA-256) and
``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import WeightsError, short_repr
from .base import SHIFTED_CARD_FORMAT as CARD_FORMAT
from .base import GeneratorCard, SearchableGenerator
from .card_file import CARD_MAX_BYTES, card_provenance, read_card
from .checkpoint import load_torch_file, require_file, sha256_file


class ShiftedGenerator(SearchableGenerator):
    """``base`` with its latent offset by ``alpha · direction`` before synthesis.

    Args:
        base: any searchable generator (frozen).
        direction: (N, D) or (D,) tensor, broadcast over the N latent vectors when 1-D.
        alpha: multiple of ``direction`` added to every latent.
        card: provenance for reports (default: derived from the base's card).
    """

    def __init__(self, base: SearchableGenerator, direction: torch.Tensor, alpha: float,
                 card: GeneratorCard | None = None) -> None:
        super().__init__()
        n, d = base.latent_shape
        direction = torch.as_tensor(direction, dtype=torch.float32).detach()
        if direction.dim() == 1:
            direction = direction.expand(n, -1)
        if tuple(direction.shape) != (n, d) or not torch.isfinite(direction).all() or not math.isfinite(alpha):
            raise ValueError(f"the direction must be a finite ({n}, {d}) or ({d},) tensor for this generator and "
                             f"alpha finite, got {tuple(direction.shape)} and {alpha}")
        self.base, self.alpha = base, float(alpha)
        self.resolution, self.latent_shape = base.resolution, base.latent_shape
        self.noise_shapes = base.noise_shapes
        self.default_trainable_noise, self.default_zero_noise = base.default_trainable_noise, base.default_zero_noise
        self.register_buffer("offset", (self.alpha * direction).reshape(1, n, d).clone())
        self.card = card or GeneratorCard(name=f"{base.card.name} shifted {self.alpha:+g}", family=base.card.family,
                                          training_data=base.card.training_data, licence=base.card.licence,
                                          weights=base.card.weights, weights_sha256=base.card.weights_sha256)
        self.freeze()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"

    def latent_to_w(self, latent: torch.Tensor) -> torch.Tensor:
        self.check_latent(latent)
        return self.base.latent_to_w(latent + self.offset)

    def synthesize_w(self, w: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        return self.base.synthesize_w(w, noise)


def load_direction(path: Path) -> torch.Tensor:
    """A direction tensor saved with ``torch.save`` (tensors only), as float32."""
    value = load_torch_file(path, "latent direction tensor")
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise WeightsError(f"{path} must hold one floating-point tensor (a latent direction), "
                           f"not {type(value).__name__}")
    return value.float()


#: Longest ``base`` spec and ``direction.file`` name a card may give (both end up in messages and paths).
CARD_MAX_NAME = 255
MAX_ALPHA = 1000.0
"""Largest |alpha| a card may give (the committed families use ±2; beyond this no prior is meaningful)."""


def read_shifted_card(card_path: Path) -> tuple[dict, str, float, str, str]:
    """A shifted generator card (read by :func:`.card_file.read_card`: bounded size and nesting) and its checked
    entries: (card, base spec, alpha, direction file name, its recorded SHA-256).

    The base must not be a ``shifted:`` generator itself (a base naming its own folder, or a chain of
    members, would load recursively); a family member's base is always a plain generator."""
    card = read_card(card_path, "shifted generator card")
    base, alpha, direction = card.get("base"), card.get("alpha"), card.get("direction")
    file, digest = (direction.get("file"), direction.get("sha256")) if isinstance(direction, dict) else (None, None)
    problem = ""
    if card.get("format") != CARD_FORMAT:
        problem = f"format {short_repr(card.get('format'), 60)}"
    elif not (isinstance(base, str) and 0 < len(base) <= CARD_MAX_NAME):
        problem = f"base {short_repr(base, 60)} (a generator spec of at most {CARD_MAX_NAME} characters)"
    elif type(alpha) not in (int, float) or not abs(alpha) <= MAX_ALPHA:  # an int beyond float range too, and NaN
        problem = f"alpha {short_repr(alpha, 60)} (a number within ±{MAX_ALPHA:g})"
    elif not (isinstance(file, str) and 0 < len(file) <= CARD_MAX_NAME and isinstance(digest, str)):
        problem = f"direction {short_repr(direction, 100)} (file name and sha256)"
    if problem:
        raise WeightsError(f"{card_path} is not a shifted generator card ({CARD_FORMAT}: base, alpha, direction "
                           f"file and sha256): {problem}")
    if base.partition(":")[0] == "shifted":
        raise WeightsError(f"{card_path}: its base {short_repr(base, 100)} is itself a shifted generator; a "
                           "family member's base must be a plain generator (e.g. dcgan-file:FOLDER)")
    return card, base, float(alpha), file, digest


def load_shifted(weights: Path | None = None, device: torch.device | str = "cpu") -> ShiftedGenerator:
    """A family member from its folder (see the module docstring); refuses a card whose recorded
    SHA-256 of the direction differs from the file, or whose base is itself shifted (:func:`read_shifted_card`)."""
    from . import load_generator  # the registry imports this module lazily

    if weights is None:
        raise WeightsError("shifted needs a folder: --generator shifted:FOLDER (a folder with card.json, "
                           "written by python -m audit.commands.shift_family)")
    folder = Path(weights).expanduser()
    card_path = require_file(folder / "card.json" if folder.is_dir() else folder, "shifted generator card")
    folder = card_path.parent
    card, base_spec, alpha, file, recorded = read_shifted_card(card_path)
    direction_file = require_file(folder / file, "latent direction (named by the card)")
    if sha256_file(direction_file) != recorded:
        raise WeightsError(f"{direction_file} does not match {card_path}: its SHA-256 differs from the card's")
    name, sep, rest = base_spec.partition(":")
    if sep and not Path(rest).is_absolute():
        base_spec = f"{name}:{(folder / rest).resolve()}"
    base = load_generator(base_spec, "cpu")
    gen_card = GeneratorCard(
        family=base.card.family, **card_provenance(card, folder.name, base.card.licence),
        weights=(*base.card.weights, direction_file, card_path),
        weights_sha256=(*base.card.weights_sha256, recorded, sha256_file(card_path, CARD_MAX_BYTES, "generator card")))
    try:
        return ShiftedGenerator(base, load_direction(direction_file), alpha, gen_card).to(device)
    except ValueError as exc:
        raise WeightsError(f"{direction_file} does not fit {base_spec}: {exc}") from exc
