"""Safe reading of weights files, and one-line errors when they are wrong.

Nothing here executes code from a file or trusts a size it gives: torch files are read by
:func:`.torch_file.read_torch_file` (scanned pickles, tensors and plain containers only, storages
checked against the bytes in the file), a network is built from a file's shapes only after the
same architecture built on the ``meta`` device (no memory) has exactly those shapes
(:func:`build_and_load`), and weights holding NaN or infinities are refused.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bounded_read import NotRegularFile, OverBudget, open_checked, sha256_hex
from ..errors import WeightsError, short_repr
from .pickle_scan import DEFAULT_BUDGET, LoadBudget, MalformedPickle
from .torch_file import read_torch_file


def require_file(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a readable file, else raise a WeightsError naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        where = f"; {hint}" if hint else ""
        raise WeightsError(f"missing {what}: expected the file {path}{where}")
    return path


WEIGHTS_MAX_BYTES = DEFAULT_BUDGET.max_file_bytes
"""Largest weights file hashed or read (:attr:`.pickle_scan.LoadBudget.max_file_bytes`)."""


def sha256_file(path: Path, max_bytes: int = WEIGHTS_MAX_BYTES, what: str = "weights file") -> str:
    """Hex SHA-256 of the regular file ``path`` of at most ``max_bytes`` bytes, read in 1 MiB chunks.

    The file is opened without blocking (a FIFO cannot hang the reader) and checked on the open
    descriptor before a byte is read: anything but a regular file, or a file over ``max_bytes``
    (e.g. a sparse 200 GB file, which would take minutes of CPU), is a one-line WeightsError naming
    the file, ``what`` it should be, its size and the budget; so is a file that grows past the
    budget while being read, or one that cannot be read.
    """
    try:
        fd, _ = open_checked(path, max_bytes)
    except OSError as exc:
        raise WeightsError(f"{path}: the {what} cannot be opened ({exc.strerror or type(exc).__name__})") from None
    except NotRegularFile:
        raise WeightsError(f"{path}: the {what} is not a regular file; refusing to read it") from None
    except OverBudget as exc:
        raise WeightsError(f"{path}: the {what} has {exc.info.st_size:,} bytes, over the {max_bytes:,}-byte budget; "
                           "refusing to read it") from None
    with os.fdopen(fd, "rb") as handle:
        try:
            return sha256_hex(handle.read, max_bytes)
        except OverBudget:
            raise WeightsError(f"{path}: the {what} grew over the {max_bytes:,}-byte budget while being read") from None
        except OSError as exc:
            raise WeightsError(f"{path}: the {what} cannot be read ({exc.strerror or type(exc).__name__})") from None


def load_torch_file(path: Path, what: str, budget: LoadBudget = DEFAULT_BUDGET) -> Any:
    """A ``torch.save`` file read within ``budget`` on the CPU (:mod:`.torch_file`), every failure
    turned into one line.

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. "StyleGAN1 synthesis state dict").
        budget: size, depth and opcode limits.
    """
    path = require_file(path, what)
    try:
        return read_torch_file(path, budget)
    except MalformedPickle as exc:
        raise WeightsError(f"{path} is truncated or not a torch file (expected a {what}): {_first_line(exc)}") from None
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{path} is not a plain {what}: {_first_line(exc)}; refusing to load it") from None
    except (EOFError, OSError, RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, struct.error) as exc:
        raise WeightsError(f"{path} is truncated or not a torch file (expected a {what}): "
                           f"{type(exc).__name__}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def describe_mismatch(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Size]) -> str:
    """Summarise the differences between two {key: shape} maps in one line ('' when equal)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(expected[k]) != tuple(found[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {short_repr(missing[0])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {short_repr(unexpected[0])})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {short_repr(k)}: file {short_repr(tuple(found[k]))}, "
                     f"expected {tuple(expected[k])})")
    return ", ".join(parts)


def tensor_state(state: Any, path: Path, arch: str) -> dict[str, torch.Tensor]:
    """``state`` as a {str: tensor} dict whose floating-point tensors are all finite; else one line."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise WeightsError(f"{path} does not hold a state dict of tensors (expected {arch})")
    for key, value in state.items():
        if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
            raise WeightsError(f"{path}: {short_repr(key)} holds NaN or infinite values; refusing weights "
                               "that cannot make images")
    return dict(state)


def load_state_strict(module: nn.Module, state: Any, path: Path, arch: str) -> None:
    """Load ``state`` into ``module`` only if keys and shapes match exactly and every value is
    finite; else one-line error."""
    state = tensor_state(state, path, arch)
    expected = {k: v.shape for k, v in module.state_dict().items()}
    problem = describe_mismatch(expected, {k: v.shape for k, v in state.items()})
    if problem:
        raise WeightsError(f"{path} is not a {arch} checkpoint: {problem}")
    module.load_state_dict(state, strict=True)


def build_and_load(build: Callable[[], nn.Module], state: Any, path: Path, arch: str) -> nn.Module:
    """``build()`` loaded strictly with ``state``, the shapes checked before any memory is used.

    ``build`` runs first on the ``meta`` device (parameters without storage), so an architecture
    whose sizes come from an untrusted file is compared with the file's tensors before it is built
    for real: a real build then holds exactly as many elements as the file's data. The caller
    bounds the architecture's hyper-parameters (layer counts, widths) beforehand, since even a
    meta build takes time per layer.
    """
    state = tensor_state(state, path, arch)
    with torch.device("meta"):
        skeleton = build()
    problem = describe_mismatch({k: v.shape for k, v in skeleton.state_dict().items()},
                                {k: v.shape for k, v in state.items()})
    if problem:
        raise WeightsError(f"{path} is not a {arch} checkpoint: {problem}")
    module = build()
    module.load_state_dict(state, strict=True)
    return module
