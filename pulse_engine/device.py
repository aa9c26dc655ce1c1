"""Device selection shared by the CLI, the search and the benchmarks."""

from __future__ import annotations

import torch

from .errors import PulseAuditError


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a :class:`torch.device`.

    ``auto`` picks the first CUDA device when one is available, else the CPU. Asking for CUDA
    on a machine without it is an error, never a silent fall back to the CPU.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise PulseAuditError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PulseAuditError(f"device {spec!r} requested but CUDA is not available on this machine")
    return device
