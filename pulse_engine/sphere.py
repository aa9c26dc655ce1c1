"""Projection of search variables onto spheres.

Every search variable has shape (B, G, ...): batch, then G independent groups (the 18 W+ vectors
of StyleGAN, the single z of a DCGAN, the one channel of a noise map). Each (b, g) slice is
rescaled to a fixed L2 radius. PULSE's paper uses radius √d for a d-dimensional latent; its code
uses the norm sampled at initialisation. Both are offered (see :func:`sphere_radius`).
"""

from __future__ import annotations

import math

import torch

RADIUS_RULES = ("sqrt-dim", "initial")


def group_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm over dims ≥ 2, kept as shape (B, G, 1, ...). Adds 1e-9 inside the sqrt like PULSE."""
    dims = tuple(range(2, t.dim()))
    return (t.pow(2).sum(dim=dims, keepdim=True) + 1e-9).sqrt()


def sphere_radius(t: torch.Tensor, rule: str) -> torch.Tensor:
    """Target radius of each (b, g) group of ``t``, shape (B, G, 1, ...).

    ``sqrt-dim``: √(number of elements in one group), the paper's choice, identical for all groups.
    ``initial``: the current norm of each group (PULSE's code, called once at initialisation).
    """
    if t.dim() < 3:
        raise ValueError(f"search variables need shape (B, G, ...), got {tuple(t.shape)}")
    if rule == "sqrt-dim":
        n = math.prod(t.shape[2:])
        return torch.full((t.shape[0], t.shape[1]) + (1,) * (t.dim() - 2), math.sqrt(n),
                          dtype=t.dtype, device=t.device)
    if rule == "initial":
        return group_norm(t).detach().clone()
    raise ValueError(f"unknown sphere radius rule {rule!r}; choose one of {', '.join(RADIUS_RULES)}")


@torch.no_grad()
def project_(t: torch.Tensor, radius: torch.Tensor) -> None:
    """Rescale every (b, g) group of ``t`` in place to norm ``radius``."""
    t.mul_(radius / group_norm(t))
