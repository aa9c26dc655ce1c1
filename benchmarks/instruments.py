"""Measuring instruments shared by the benchmarks: GEMM peaks, machine line, peak RSS, results file.

Imported by the scripts beside it (``python benchmarks/X.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from pulse_engine.downsample import BicubicDownsample, factor_between
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.search import SearchConfig, pulse_search

NUMPY_PEAK = """
import time, numpy as np
n = 3072
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
a @ b; best = 0.0
for _ in range(5):
    t = time.perf_counter(); a @ b; best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
print(best)
"""


def best_rate(fn: Callable[[], object], flop: float, repeats: int = 5, sync: Callable[[], None] = lambda: None,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Best GFLOP/s of ``fn`` over ``repeats`` timed calls after two warm-ups (``sync`` waits for a device)."""
    fn(), fn()
    sync()
    best = 0.0
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        best = max(best, flop / (clock() - start) / 1e9)
    return best


def torch_mm_peak(device: torch.device | str = "cpu", n: int = 3072, repeats: int = 5) -> float:
    """fp32 GFLOP/s of ``torch.mm`` on ``device`` (on CUDA with TF32 as torch is currently set)."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return best_rate(lambda: torch.mm(a, b, out=c), 2 * n**3, repeats, sync)


def cpu_gemm_peaks(threads: int) -> dict[str, float]:
    """fp32 GEMM GFLOP/s of each CPU implementation on ``threads`` threads.

    torch.mm (MKL), a 1×1 convolution run by oneDNN (a GEMM), and NumPy's OpenBLAS run in a
    subprocess without the OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE overrides this workplace sets (so it
    picks its native kernel). The peak to divide by is the largest.
    """
    n = 3072
    peaks = {"torch.mm (MKL)": torch_mm_peak("cpu", n)}
    x, w = torch.randn(1, n, 48, 64), torch.randn(n, n, 1, 1)
    peaks["oneDNN 1×1 conv GEMM"] = best_rate(lambda: F.conv2d(x, w), 2 * n * n * 48 * 64)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", NUMPY_PEAK], check=False, capture_output=True, text=True, env=env)
    if done.returncode == 0:
        peaks["NumPy OpenBLAS (native kernel)"] = float(done.stdout.strip())
    return peaks


def search_step_flops(generator: SearchableGenerator, low: torch.Tensor) -> float:
    """FLOPs of one search step on the batch ``low``, counted by torch's FlopCounterMode.

    Counts convolutions and matrix products, forward and backward (the generator is frozen, so
    no weight gradients); elementwise work is not counted. A one-step search also renders its best
    iterate once more at the end and downsamples it, so those forward passes are counted
    separately and subtracted.

    The count is taken on the first image alone and multiplied by the batch size: a step's work is
    the same for every image of a batch, and FlopCounterMode (torch 2.13) ignores ``groups`` in the
    weight gradient of a grouped convolution, which StyleGAN2's modulated convolution is at batch B > 1
    (one group per image), so counting the whole batch over-counts that gradient B times.
    """
    first = low[:1]
    with FlopCounterMode(display=False) as counter:
        pulse_search(generator, first, SearchConfig(steps=1), batch_size=1)
    device = low.device
    latent = torch.zeros(1, *generator.latent_shape, device=device)
    noise = [torch.zeros(1, *shape, device=device) for shape in generator.noise_shapes]
    down = BicubicDownsample(factor_between(generator.resolution, low.shape[-1])).to(device)
    with FlopCounterMode(display=False) as render, torch.no_grad():
        down(generator.synthesize_w(generator.latent_to_w(latent), noise))
    return len(low) * (counter.get_total_flops() - render.get_total_flops())


def machine() -> str:
    """CPU model, core count, torch version, thread count (and OMP_WAIT_POLICY if set), for results headings."""
    model = platform.processor()
    if Path("/proc/cpuinfo").exists():
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    wait = f", OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}" if "OMP_WAIT_POLICY" in os.environ else ""
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads{wait}"


def reset_peak_rss() -> bool:
    """Reset this process's peak resident size (Linux ``clear_refs``); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_gb() -> float:
    """Peak resident size of this process since start or the last :func:`reset_peak_rss`, GB (1e9 B)."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024 / 1e9


def append_results(out: Path, text: str) -> None:
    """Append a Markdown section to ``out``, creating the file with its heading when missing."""
    if not out.exists():
        out.write_text("# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last.\n")
    with open(out, "a") as handle:
        handle.write(text)
