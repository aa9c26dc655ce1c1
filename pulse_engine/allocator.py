"""Keep large CPU buffers mapped between search steps (glibc malloc settings, Linux only).

glibc serves every allocation above its mmap threshold (128 KiB, raised dynamically to at most
32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` when it is freed. A 1024 px
generator's activations are 16–64 MiB per image, so every search step maps them anew and the
kernel page-faults and zeroes each 4 KiB page again: on a 2-core EPYC half of a CPU StyleGAN1
step was system time (``benchmarks/stylegan1_step.py``). :func:`keep_large_buffers` raises the
mmap threshold and the trim threshold to :data:`THRESHOLD_BYTES`, so such blocks come from the
heap, stay there when freed and are reused by the next step without a fault.

Cost: memory the process frees is kept for reuse instead of going back to the system until the
process exits, so the resident size stays near its high-water mark. Worse, glibc 2.36's
``posix_memalign`` (torch's CPU allocator) cannot reuse a freed block of exactly the requested
size, so the heap grows by a few copies of a large buffer before freed neighbours merge into
reusable blocks; for a 1024 px StyleGAN1 at batch 1 the peak RSS grows by about 1 GB (measured
figures in ``benchmarks/RESULTS.md``). Set ``PULSE_AUDIT_MALLOC=default`` to keep glibc's own
behaviour. Off Linux-glibc nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

OPT_OUT_VARIABLE = "PULSE_AUDIT_MALLOC"
"""Environment variable: ``default`` leaves glibc's malloc settings alone."""

THRESHOLD_BYTES = 1 << 30
"""mmap and trim threshold set by :func:`keep_large_buffers` (1 GiB; mallopt takes a C int)."""

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt parameter numbers from glibc's <malloc.h>."""


def keep_large_buffers(threshold: int = THRESHOLD_BYTES) -> str:
    """Make glibc keep freed blocks up to ``threshold`` bytes in the heap; return what was done.

    Call once at start-up, before large tensors exist. Returns one line for logs: the settings
    applied, or why nothing was changed (opt-out variable, not Linux-glibc, mallopt refused).
    """
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() == "default":
        return f"malloc: glibc defaults kept ({OPT_OUT_VARIABLE}=default)"
    libc_name, _ = platform.libc_ver()
    if not sys.platform.startswith("linux") or libc_name != "glibc":
        return f"malloc: unchanged (not Linux-glibc: {sys.platform}, {libc_name or 'unknown libc'})"
    if not 0 < threshold < 2**31:
        raise ValueError(f"threshold must be in (0, 2**31) bytes, got {threshold}")
    libc = ctypes.CDLL(None)
    for name, param in (("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD), ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD)):
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(threshold)) != 1:
            return f"malloc: glibc refused mallopt({name}, {threshold}); that setting is unchanged"
    return f"malloc: glibc mmap and trim thresholds set to {threshold / 2**20:.0f} MiB (large buffers are reused)"
