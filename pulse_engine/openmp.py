"""OpenMP threads that sleep while they wait, instead of spinning (``OMP_WAIT_POLICY=PASSIVE``).

torch's CPU kernels run on an OpenMP team (GNU libgomp). With no wait policy set, a thread that reaches a
barrier before its partners spins on the CPU for a while before it sleeps. That costs little on an idle
machine, but when another busy thread shares the cores (the classification beside the search in the pipelined
engine, or any other job) a spinning thread takes CPU from the partner it waits for, at every one of the
≈ 8,000 barriers of a chunk's search. Measured on 2 cores (``benchmarks/search_contention.py``, results in
``benchmarks/RESULTS.md``, 2026-11-30): one chunk's search took 2.5 s alone spinning and 2.7 s sleeping, but
beside one busy thread 7.7 s spinning (and twice the CPU seconds) and 4.5 s sleeping.

libgomp reads the policy once, when torch loads it, so :func:`prefer_passive_waits` must run before
``import torch``; it sets nothing when the user chose a policy, or when torch is already loaded (the setting
would not apply to this process but would be inherited by its children, which would then run otherwise).
"""

from __future__ import annotations

import os
import sys

POLICY_VARIABLE = "OMP_WAIT_POLICY"


def prefer_passive_waits() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this process and its children, unless a policy is set or torch is
    loaded already (see the module docstring)."""
    if "torch" not in sys.modules:
        os.environ.setdefault(POLICY_VARIABLE, "PASSIVE")
