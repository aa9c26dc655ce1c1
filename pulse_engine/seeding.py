"""Per-sample seeds derived from (base seed, item key, restart index).

PULSE's reference seeds the global RNG on every call and treats seed 0 as "unseeded"; here every
sample draws from its own :class:`torch.Generator`, so a result does not depend on which other
images share its batch, seed 0 is an ordinary seed, and restarts differ from each other.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(base_seed: int, item_key: str, restart: int) -> int:
    """A 63-bit seed that is a pure function of its three arguments.

    Args:
        base_seed: the run's seed (any integer, 0 included).
        item_key: a stable identifier of the input (file name, dataset id, or its index).
        restart: 0-based restart index.
    """
    digest = hashlib.blake2b(f"{base_seed}\x1f{item_key}\x1f{restart}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``; draws are made on the CPU so CPU and CUDA runs match."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen
