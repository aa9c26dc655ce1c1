"""pulse_engine.allocator: the glibc malloc settings that keep large buffers between search steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulse_engine import allocator

REPO = Path(__file__).resolve().parents[1]

# Allocate, touch and free 64 MiB 16 times, as search steps do; print the fewest page faults of the
# last four cycles (glibc's memalign needs a few cycles before freed blocks merge into reusable ones).
REALLOCATE = """
import resource, sys, torch
from pulse_engine.allocator import keep_large_buffers
print(keep_large_buffers(), file=sys.stderr)
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[-4:]))
"""

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or allocator.platform.libc_ver()[0] != "glibc",
                                reason="the settings exist only on Linux with glibc")


def steady_faults_per_cycle(opt_out: bool) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop(allocator.OPT_OUT_VARIABLE, None)
    if opt_out:
        env[allocator.OPT_OUT_VARIABLE] = "default"
    done = subprocess.run([sys.executable, "-c", REALLOCATE], check=False, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip()), done.stderr.strip()


@glibc_only
def test_tuned_process_reuses_freed_large_blocks_without_page_faults():
    default_faults, default_line = steady_faults_per_cycle(opt_out=True)
    tuned_faults, tuned_line = steady_faults_per_cycle(opt_out=False)
    assert "defaults kept" in default_line and "thresholds set to 1024 MiB" in tuned_line
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    if default_faults < pages // 2:
        pytest.skip(f"glibc's default already reused the block here ({default_faults} faults; huge pages?)")
    assert tuned_faults < pages // 20, (tuned_faults, default_faults)


def test_opt_out_variable_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(allocator.OPT_OUT_VARIABLE, "Default")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *_: pytest.fail("libc must not be touched"))
    assert allocator.keep_large_buffers() == "malloc: glibc defaults kept (PULSE_AUDIT_MALLOC=default)"


def test_other_libc_is_left_alone(monkeypatch):
    monkeypatch.delenv(allocator.OPT_OUT_VARIABLE, raising=False)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *_: pytest.fail("libc must not be touched"))
    assert allocator.keep_large_buffers().startswith("malloc: unchanged (not Linux-glibc")


@glibc_only
def test_threshold_must_fit_mallopts_int(monkeypatch):
    monkeypatch.delenv(allocator.OPT_OUT_VARIABLE, raising=False)
    with pytest.raises(ValueError, match="threshold"):
        allocator.keep_large_buffers(2**31)
