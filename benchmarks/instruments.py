"""Measuring instruments shared by the benchmarks: GEMM peaks, peak-bracketed runs, machine line, peak RSS,
results file.

Imported by the scripts beside it (``python benchmarks/X.py`` puts this folder on ``sys.path``).

On a shared machine the GEMM peak itself moves (on this 2-core VM it fell from 446 to 220 GFLOP/s
within seven minutes), so a fraction of peak means something only against a peak measured next to
the run it divides. :class:`Bracketed` holds a measured value with the peaks measured right before
and after it; when those peaks disagree by more than :data:`DISTURBED_SPREAD` the machine changed
during the run and the value is flagged and left out of :func:`steady_median`. Steady peaks do not
prove a quiet run, though: another process that holds one core all along halves the peak on both
sides and slows a run of many small kernels on two synchronised threads far more than half. So a
bracketed run also carries the CPU time other processes took during it (:func:`other_cores`, from
``/proc/stat``), and more than :data:`BUSY_CORES` of it flags the run as well.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

from pulse_engine.downsample import BicubicDownsample, factor_between
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.search import SearchConfig, pulse_search

NUMPY_PEAK = """
import sys, time, numpy as np
n, repeats = 3072, int(sys.argv[1])
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
a @ b; best = 0.0
for _ in range(repeats):
    t = time.perf_counter(); a @ b; best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
print(best)
"""

DISTURBED_SPREAD = 0.15
"""Largest relative spread (max / min − 1) of the peaks around a run for it to count as undisturbed."""

BUSY_CORES = 0.2
"""Most CPU other processes may use during a run (cores, averaged over it) for it to count as undisturbed."""


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
    openblas = openblas_peak(threads)
    if openblas is not None:
        peaks["NumPy OpenBLAS (native kernel)"] = openblas
    return peaks


def openblas_peak(threads: int, repeats: int = 5) -> float | None:
    """Best fp32 GFLOP/s of NumPy's OpenBLAS (3072² GEMM, one warm-up then ``repeats`` timed) on ``threads``
    threads, in a fresh subprocess (so no OpenBLAS thread of it lingers in this one) without the
    OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE overrides this workplace sets; None when NumPy fails there."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", NUMPY_PEAK, str(repeats)], check=False, capture_output=True,
                          text=True, env=env)
    return float(done.stdout.strip()) if done.returncode == 0 else None


@dataclass(frozen=True)
class Bracketed:
    """A measured value and the GEMM peaks (GFLOP/s) measured right before and after the run(s) behind it.

    Attributes:
        value: what was measured (a rate, a fraction of peak, a ratio of two adjacent runs).
        peaks: the peaks around it, in time order; a ratio of two runs carries both runs' peaks.
        others: CPU cores other processes used during the run, on average (the larger of two runs'
            for a ratio; 0 when not measured).
    """

    value: float
    peaks: tuple[float, ...]
    others: float = 0.0

    @property
    def spread(self) -> float:
        """max / min − 1 of the peaks (infinite when a peak is missing or not positive)."""
        return max(self.peaks) / min(self.peaks) - 1 if self.peaks and min(self.peaks) > 0 else float("inf")

    @property
    def disturbed(self) -> bool:
        """True when the peaks around the value differ by more than :data:`DISTURBED_SPREAD` or other
        processes used more than :data:`BUSY_CORES` during the run (or that was not measurable: NaN)."""
        return self.spread > DISTURBED_SPREAD or not self.others <= BUSY_CORES

    def fraction_of_peak(self, work: float) -> Bracketed:
        """``value`` × ``work`` (e.g. image-steps/s × GFLOP per image-step) over the larger adjacent peak."""
        return Bracketed(self.value * work / max(self.peaks), self.peaks, self.others)

    def over(self, other: Bracketed) -> Bracketed:
        """The ratio of two adjacent runs' values, carrying the peaks of both and the busier run's others."""
        return Bracketed(self.value / other.value, self.peaks + other.peaks, max(self.others, other.others))


def steady_median(items: Sequence[Bracketed]) -> tuple[float, int]:
    """Median of the values not :attr:`~Bracketed.disturbed`, and how many there were (NaN, 0 when none)."""
    kept = [item.value for item in items if not item.disturbed]
    return (statistics.median(kept), len(kept)) if kept else (float("nan"), 0)


def cpu_seconds() -> tuple[float, float]:
    """(busy seconds of all CPUs so far, steal included; CPU seconds of this process, all threads), both from
    the kernel's tick accounting in ``/proc``; NaNs where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        with open("/proc/self/stat") as handle:
            own = handle.read().rsplit(")", 1)[1].split()  # fields after the command name
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / tick, (int(own[11]) + int(own[12])) / tick


def other_cores(before: tuple[float, float], after: tuple[float, float], seconds: float) -> float:
    """Cores other processes (and the hypervisor's steal) kept busy, on average, between two
    :func:`cpu_seconds` readings ``seconds`` apart; never below 0 (tick rounding)."""
    busy, own = after[0] - before[0], after[1] - before[1]
    return max(0.0, (busy - own) / seconds)


def load_average() -> float:
    """The 1-minute load average (other processes' demand for the cores); NaN where the OS has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _transposed_conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """2 × multiply-adds of a transposed convolution: every input value times a C_out × kh × kw slice."""
    return 2 * math.prod(x_shape) * out_shape[1] * math.prod(w_shape[2:])


def _conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """2 × multiply-adds of a convolution: every output value from a C_in/groups × kh × kw slice of the weight
    (the packed weight keeps its logical (C_out, C_in/groups, kh, kw) shape)."""
    return 2 * math.prod(out_shape) * math.prod(w_shape[1:])


def _linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """2 × multiply-adds of ``x @ wᵀ``."""
    return 2 * math.prod(x_shape) * out_shape[-1]


# FlopCounterMode knows torch's own operators only; the DCGAN's CPU path also calls these oneDNN ones.
for _op, _formula in ((torch.ops.mkldnn._convolution_transpose_pointwise, _transposed_conv_flops),
                      (torch.ops.mkldnn._convolution_pointwise, _conv_flops),
                      (torch.ops.mkldnn._linear_pointwise, _linear_flops)):
    if _op not in flop_registry:
        register_flop_formula(_op)(_formula)


def search_step_flops(generator: SearchableGenerator, low: torch.Tensor) -> float:
    """FLOPs of one search step on the batch ``low``, counted by torch's FlopCounterMode.

    Counts convolutions and matrix products, forward and backward (the generator is frozen, so
    no weight gradients), oneDNN's convolution, transposed convolution and linear operators included;
    elementwise work is not counted. A one-step search also renders its best
    iterate once more at the end and downsamples it, so those forward passes are counted
    separately and subtracted.

    The count is taken on the first image alone and multiplied by the batch size: a step's work is
    the same for every image of a batch, and FlopCounterMode (torch 2.13) ignores ``groups`` in the
    weight gradient of a grouped convolution, which StyleGAN2's modulated convolution is in its fused form
    (the CUDA default) at batch B > 1 (one group per image), so counting the whole batch would over-count that
    gradient B times.
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


def _status_gb(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` in GB (1e9 B)."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024 / 1e9


def peak_rss_gb() -> float:
    """Peak resident size of this process since start or the last :func:`reset_peak_rss`, GB (1e9 B)."""
    return _status_gb("VmHWM")


def rss_gb() -> float:
    """Resident size of this process now, GB (1e9 B)."""
    return _status_gb("VmRSS")


def start_peak_window() -> float:
    """Begin measuring one run's peak memory: collect garbage, give the heap's free memory back to the system
    (glibc ``malloc_trim``; :func:`pulse_engine.allocator.keep_large_buffers` otherwise keeps it), reset the peak
    (:func:`reset_peak_rss`); returns the resident size the run starts from, GB. Read the run's peak with
    :func:`peak_rss_gb` after it. Raises OSError where the peak cannot be reset (not Linux)."""
    gc.collect()
    if platform.libc_ver()[0] == "glibc":
        ctypes.CDLL(None).malloc_trim(ctypes.c_size_t(0))
    if not reset_peak_rss():
        raise OSError("this system cannot reset a process's peak resident size (/proc/self/clear_refs)")
    return rss_gb()


def append_results(out: Path, text: str) -> None:
    """Append a Markdown section to ``out``, creating the file with its heading when missing."""
    if not out.exists():
        out.write_text("# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last.\n")
    with open(out, "a") as handle:
        handle.write(text)
