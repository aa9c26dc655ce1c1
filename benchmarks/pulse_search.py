"""Throughput of the PULSE search on the DigiFace DCGAN, against the machine's fp32 GEMM peak.

    python benchmarks/pulse_search.py [--batches 1 8 64] [--out benchmarks/RESULTS.md]

Throughput is image-steps per second: one step = forward synthesis, downsampling, loss, backward to
the latent, Adam update and sphere projection for one image. FLOPs are counted analytically: the
transposed convolutions' multiply-adds (2 FLOPs each) for the forward pass, the same again for the
backward pass to the input (weights are frozen, so no weight gradients), plus the separable
downsampling filter forward and backward. Elementwise work (BN-folded bias, ReLU, tanh, Adam) is
not counted, so the fraction of peak understates the work done.

The peak is the best of three fp32 GEMM measurements on the same threads: torch.mm (MKL), a 1×1
convolution run by oneDNN (a GEMM), and NumPy's OpenBLAS run in a subprocess without the
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE overrides this workplace sets (so it picks its native kernel).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pulse_engine.downsample import BicubicDownsample
from pulse_engine.generators.dcgan import DCGANGenerator, load_dcgan_digiface
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


def best_rate(fn, flop: float, repeats: int = 5) -> float:
    """Best GFLOP/s of ``fn`` over ``repeats`` timed calls after two warm-ups."""
    fn(), fn()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = max(best, flop / (time.perf_counter() - start) / 1e9)
    return best


def gemm_peaks(threads: int) -> dict[str, float]:
    """fp32 GEMM GFLOP/s of each available implementation."""
    n = 3072
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    peaks = {"torch.mm (MKL)": best_rate(lambda: torch.mm(a, b, out=c), 2 * n**3)}
    x, w = torch.randn(1, n, 48, 64), torch.randn(n, n, 1, 1)
    peaks["oneDNN 1×1 conv GEMM"] = best_rate(lambda: F.conv2d(x, w), 2 * n * n * 48 * 64)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", NUMPY_PEAK], capture_output=True, text=True, env=env)
    if done.returncode == 0:
        peaks["NumPy OpenBLAS (native kernel)"] = float(done.stdout.strip())
    return peaks


def flops_per_image_step(model: DCGANGenerator, factor: int) -> float:
    """Analytic FLOPs of one search step for one image (see module docstring)."""
    total, side = 0.0, 1
    for layer in model.main:
        if isinstance(layer, torch.nn.ConvTranspose2d):
            c_in, c_out, k, _ = layer.weight.shape
            total += 2 * 2 * c_in * c_out * k * k * side * side  # forward + input gradient
            side = k if side == 1 else side * layer.stride[0]
    taps = 4 * factor
    low = side // factor
    down = 3 * (side * low * taps + low * low * taps)  # vertical then horizontal pass, 3 channels
    return total + 2 * 2 * down


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed search")
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per batch size (median kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plain", action="store_true",
                        help="baseline: run the generator's plain nn.Sequential (NCHW, BatchNorm not folded)")
    parser.add_argument("--out", type=Path, help="append a results section to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_dcgan_digiface()
    if args.plain:
        model._fused_layers = 0  # synthesize_w then runs self.main, the layout as loaded
    peaks = gemm_peaks(args.threads)
    peak = max(peaks.values())
    flops = flops_per_image_step(model, args.factor)
    side = model.resolution // args.factor
    rows = []
    for batch in args.batches:
        low = BicubicDownsample(args.factor)(torch.rand(batch, 3, model.resolution, model.resolution))
        assert low.shape[-1] == side
        config = SearchConfig(steps=args.steps, restarts=1)
        pulse_search(model, low, SearchConfig(steps=5), batch_size=batch)  # warm-up
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            pulse_search(model, low, config, batch_size=batch)
            rates.append(batch * args.steps / (time.perf_counter() - start))
        rate = statistics.median(rates)
        rows.append((batch, rate, rate * flops / 1e9))
        print(f"batch {batch:3d}: {rate:8.1f} image-steps/s, {rate * flops / 1e9:6.1f} GFLOP/s, "
              f"{100 * rate * flops / 1e9 / peak:5.1f}% of peak", flush=True)
    base = rows[0][1]
    variant = "plain nn.Sequential baseline" if args.plain else "optimised search path"
    lines = [f"\n## {datetime.date.today().isoformat()} — {machine()} — {variant}\n",
             f"Search: dcgan-digiface, ×{args.factor} ({side}→{model.resolution} px), {args.steps} steps per "
             f"search, median of {args.repeats}; {flops / 1e6:.1f} MFLOP per image-step (analytic).\n",
             "fp32 GEMM peaks (GFLOP/s): " + "; ".join(f"{k} {v:.1f}" for k, v in peaks.items())
             + f". Peak used: **{peak:.1f}**.\n",
             "| batch | image-steps/s | GFLOP/s | % of peak | vs batch 1 |", "|---|---|---|---|---|"]
    lines += [f"| {b} | {r:.1f} | {g:.1f} | {100 * g / peak:.1f}% | {r / base:.2f}× |" for b, r, g in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        if not args.out.exists():
            args.out.write_text("# Benchmark results\n\nAppended by `make bench` "
                                "(`benchmarks/pulse_search.py`); newest last.\n")
        with open(args.out, "a") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
