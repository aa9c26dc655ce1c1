"""Both engines search under the same process setup: the search process is set up like the process that starts
it, the command line and the API let OpenMP threads sleep while they wait (before torch loads), and loading and
using the classifiers (dlib, onnxruntime) changes nothing a search depends on.

Each check runs in a fresh Python, so that what a library does when it is first imported is seen, and the
test process keeps its own settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audit.classifiers import REGISTRY
from pulse_engine import allocator

REPO = Path(__file__).resolve().parents[1]

CHILD_SETUP = """
import json
from audit.run.chunk_worker import WorkerSpec
from audit.run.search_process import SearchProcess, prepare_search
from pulse_engine.search import SearchConfig
here = prepare_search(1)  # not torch's default on a multi-core machine: the child must take the parent's count
spec = WorkerSpec("pulse", "dcgan-tiny", None, SearchConfig(steps=2, restarts=1), "cpu", None, 4, (), (), ())
with SearchProcess(spec) as searcher:
    print(json.dumps({"here": here, "child": searcher.wait_ready()}))
"""

CLASSIFIERS_STATE = """
import json, os, sys
import numpy as np, torch
from PIL import Image
torch.set_num_threads(1)  # not the default: a library that resets the count to the default is caught too

def state():
    return {"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
            "environment": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "OPENBLAS_", "KMP_"))},
            "denormals kept": float(torch.tensor([1e-39]) * 1.0) != 0.0}  # 0 if a library set flush-to-zero

before = state()
from audit.classifiers import build_classifier
portrait = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
found = [build_classifier(name).predict([portrait])[0].face_found for name in ("skin-tone", "age-gender", "identity")]
print(json.dumps({"before": before, "after": state(), "found": found}))
"""


WAIT_POLICY = """
import json, os, sys
if sys.argv[1] == "torch first":
    import torch
import audit.commands.cli
print(json.dumps(os.environ.get("OMP_WAIT_POLICY")))
"""


def run_python(code: str, *args: str, **environment: str | None) -> Any:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env = {k: v for k, v in ({**env, **environment}).items() if v is not None}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_search_process_is_set_up_like_the_process_that_starts_it():
    lines = run_python(CHILD_SETUP)
    assert lines["child"] == lines["here"]
    assert lines["here"].startswith("torch threads 1;")
    policy = os.environ.get("OMP_WAIT_POLICY") or "unset"
    assert f"OMP_WAIT_POLICY {policy}" in lines["here"]
    if sys.platform.startswith("linux") and allocator.platform.libc_ver()[0] == "glibc" \
            and os.environ.get(allocator.OPT_OUT_VARIABLE, "").lower() != "default":
        assert "thresholds set to 1024 MiB" in lines["here"]


@pytest.mark.skipif(any(REGISTRY[name].missing_assets() for name in ("skin-tone", "age-gender", "identity")),
                    reason="the default classifiers' model files are not installed")
def test_loading_and_using_the_classifiers_leaves_what_the_search_depends_on_alone():
    """torch's thread counts, the CPU affinity, the OpenMP/BLAS environment and the handling of denormal floats are
    the same after the three default classifiers were built and used on a portrait (in which each finds the face)."""
    state = run_python(CLASSIFIERS_STATE, str(REPO / "datasets" / "showcase" / "obama.png"))
    assert state["found"] == [True, True, True]
    assert state["after"] == state["before"]
    assert state["before"]["threads"] == 1


def test_the_command_line_lets_openmp_threads_sleep_unless_told_otherwise():
    """Set before torch loads (libgomp reads it once); a user's own policy is kept; nothing is set once torch is
    loaded (the parent would spin and its search process sleep: unequal conditions)."""
    assert run_python(WAIT_POLICY, "cli first", OMP_WAIT_POLICY=None) == "PASSIVE"
    assert run_python(WAIT_POLICY, "cli first", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    assert run_python(WAIT_POLICY, "torch first", OMP_WAIT_POLICY=None) is None
