"""PULSE's loss terms, per image, and the loss-string parser.

All image terms compare the downsampled generator output D(G) with the low-resolution reference
in [0, 1] pixel units and return one value per image (shape (B,)). The search sums them over the
batch for the backward pass and keeps them per image for its bookkeeping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

TERMS = ("L2", "L1", "GEOCROSS")


def l2_term(low: torch.Tensor, reference: torch.Tensor, eps: float) -> torch.Tensor:
    """mean over C,H,W of the squared error, clamped below at ``eps`` (zero gradient under eps)."""
    return (low - reference).pow(2).mean(dim=(1, 2, 3)).clamp_min(eps)


def l1_term(low: torch.Tensor, reference: torch.Tensor, eps: float) -> torch.Tensor:
    """10 × mean absolute error, clamped below at ``eps`` (PULSE's scaling)."""
    return 10.0 * (low - reference).abs().mean(dim=(1, 2, 3)).clamp_min(eps)


def geocross(w: torch.Tensor) -> torch.Tensor:
    """PULSE's cross loss on the mapped latent vectors ``w`` of shape (B, N, D).

    For every ordered pair (j, k), diagonal included, θ_jk = 2·atan2(‖w_j − w_k‖, ‖w_j + w_k‖)
    (1e-9 added inside each sqrt); the loss is mean_jk(D·θ_jk²) / 8 per image. A single vector
    (N = 1) gives ≈ 0.
    """
    if w.dim() != 3:
        raise ValueError(f"GEOCROSS expects (B, N, D), got {tuple(w.shape)}")
    a = w.unsqueeze(1)
    b = w.unsqueeze(2)
    diff = ((a - b).pow(2).sum(-1) + 1e-9).sqrt()
    summ = ((a + b).pow(2).sum(-1) + 1e-9).sqrt()
    theta = 2.0 * torch.atan2(diff, summ)
    return (w.shape[-1] * theta.pow(2)).mean(dim=(1, 2)) / 8.0


@dataclass(frozen=True)
class LossSpec:
    """A weighted sum of named terms, parsed from e.g. ``"100*L2+0.05*GEOCROSS"``."""

    terms: tuple[tuple[float, str], ...]

    @classmethod
    def parse(cls, text: str) -> LossSpec:
        terms = []
        for part in text.replace(" ", "").split("+"):
            match = re.fullmatch(r"(?:([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\*)?([A-Za-z0-9]+)", part)
            if not match or match.group(2) not in TERMS:
                raise ValueError(f"bad loss term {part!r} in {text!r}: use WEIGHT*NAME joined by '+', "
                                 f"NAME one of {', '.join(TERMS)}")
            terms.append((float(match.group(1) or 1.0), match.group(2)))
        if not any(name in ("L2", "L1") for _, name in terms):
            raise ValueError(f"loss {text!r} has no data term (L2 or L1)")
        return cls(tuple(terms))

    def __str__(self) -> str:
        return "+".join(f"{weight:g}*{name}" for weight, name in self.terms)

    def evaluate(self, low: torch.Tensor, reference: torch.Tensor, w: torch.Tensor,
                 eps: float) -> dict[str, torch.Tensor]:
        """Per-image values of every term used, plus ``"TOTAL"``, each of shape (B,)."""
        values: dict[str, torch.Tensor] = {}
        total = torch.zeros(low.shape[0], device=low.device, dtype=low.dtype)
        for weight, name in self.terms:
            if name not in values:
                if name == "L2":
                    values[name] = l2_term(low, reference, eps)
                elif name == "L1":
                    values[name] = l1_term(low, reference, eps)
                else:
                    values[name] = geocross(w)
            total = total + weight * values[name]
        values["TOTAL"] = total
        return values
