"""Safe reading of weights files, and one-line errors when they are wrong.

Nothing here executes code from a file: torch files are read with ``weights_only=True`` (tensors
and plain containers only), and pickles go through a restricted unpickler elsewhere.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError


def require_file(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a readable file, else raise a WeightsError naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        where = f"; {hint}" if hint else ""
        raise WeightsError(f"missing {what}: expected the file {path}{where}")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_torch_file(path: Path, what: str, safe_globals: Iterable[Any] = ()) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU, turning every failure into one line.

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. "StyleGAN1 synthesis state dict").
        safe_globals: extra classes allowed in the file (e.g. ``argparse.Namespace``); keep narrow.
    """
    path = require_file(path, what)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} is not a plain {what}: it holds objects that are not tensors "
                           f"({first[:160]}); refusing to load it") from exc
    except (EOFError, OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
        raise WeightsError(f"{path} is truncated or not a torch file (expected a {what}): "
                           f"{type(exc).__name__}") from exc


def describe_mismatch(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Size]) -> str:
    """Summarise the differences between two {key: shape} maps in one line ('' when equal)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(expected[k]) != tuple(found[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: file {tuple(found[k])}, "
                     f"expected {tuple(expected[k])})")
    return ", ".join(parts)


def load_state_strict(module: nn.Module, state: Any, path: Path, arch: str) -> None:
    """Load ``state`` into ``module`` only if keys and shapes match exactly; else one-line error."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors (expected {arch})")
    expected = {k: v.shape for k, v in module.state_dict().items()}
    found = {k: v.shape for k, v in state.items()}
    problem = describe_mismatch(expected, found)
    if problem:
        raise WeightsError(f"{path} is not a {arch} checkpoint: {problem}")
    module.load_state_dict(dict(state), strict=True)
