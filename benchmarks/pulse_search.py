"""Throughput of the PULSE search on the DigiFace DCGAN, against the machine's fp32 GEMM peak.

    python benchmarks/pulse_search.py [--batches 1 8 64] [--out benchmarks/RESULTS.md]

Throughput is image-steps per second: one step = forward synthesis, downsampling, loss, backward to
the latent, Adam update and sphere projection for one image. FLOPs are counted analytically: the
transposed convolutions' multiply-adds (2 FLOPs each) for the forward pass, the same again for the
backward pass to the input (weights are frozen, so no weight gradients), plus the separable
downsampling filter forward and backward; torch's FlopCounterMode count is printed beside it as a
check. Elementwise work (BN-folded bias, ReLU, sigmoid, Adam) is not counted, so the fraction of
peak understates the work done.

Each batch size is timed for the optimised search path and, in the same process and alternating
with it, for the plain loop: the same search over the generator's ``nn.Sequential`` as loaded (NCHW,
BatchNorm not folded). glibc's malloc is set up as ``pulse-audit`` sets it
(``pulse_engine.allocator``) unless ``--malloc-default``; both paths share the setting.

The peak is the best of three fp32 GEMM measurements on the same threads (see
``instruments.cpu_gemm_peaks``): torch.mm (MKL), a oneDNN 1×1 convolution, NumPy's OpenBLAS.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import torch
from instruments import (
    append_results,
    cpu_gemm_peaks,
    machine,
    peak_rss_gb,
    search_step_flops,
)

from pulse_engine.allocator import keep_large_buffers
from pulse_engine.downsample import BicubicDownsample
from pulse_engine.generators.dcgan import DCGANGenerator, load_dcgan_digiface
from pulse_engine.search import SearchConfig, pulse_search


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


def timed_rate(model: DCGANGenerator, low: torch.Tensor, steps: int) -> float:
    """Image-steps/s of one ``steps``-step search over the batch ``low``."""
    start = time.perf_counter()
    pulse_search(model, low, SearchConfig(steps=steps, restarts=1), batch_size=len(low))
    return len(low) * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed search")
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per path and batch size (median kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-loop baseline")
    parser.add_argument("--malloc-default", action="store_true", help="keep glibc's default malloc settings")
    parser.add_argument("--out", type=Path, help="append a results section to this Markdown file")
    args = parser.parse_args()
    malloc = "malloc: glibc defaults (--malloc-default)" if args.malloc_default else keep_large_buffers()
    torch.set_num_threads(args.threads)
    paths = {"optimised": load_dcgan_digiface()}
    if not args.no_plain:
        paths["plain"] = load_dcgan_digiface()
        paths["plain"]._fused_layers = 0  # synthesize_w then runs self.main, the layout as loaded
    peaks = cpu_gemm_peaks(args.threads)
    peak = max(peaks.values())
    model = paths["optimised"]
    flops = flops_per_image_step(model, args.factor)
    side = model.resolution // args.factor
    rows = []
    for batch in args.batches:
        low = BicubicDownsample(args.factor)(torch.rand(batch, 3, model.resolution, model.resolution))
        assert low.shape[-1] == side
        counted = search_step_flops(model, low) / batch
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for path in paths.values():
            pulse_search(path, low, SearchConfig(steps=5), batch_size=batch)  # warm-up
        for _ in range(args.repeats):
            for name, path in paths.items():
                rates[name].append(timed_rate(path, low, args.steps))
        median = {name: statistics.median(values) for name, values in rates.items()}
        rows.append((batch, median, rates))
        text = ", ".join(f"{name} {median[name]:8.1f} image-steps/s ({100 * median[name] * flops / 1e9 / peak:5.1f}% "
                         f"of peak)" for name in paths)
        print(f"batch {batch:3d}: {text}; FlopCounterMode {counted / 1e6:.1f} MFLOP/image-step", flush=True)
    base = rows[0][1]["optimised"]
    lines = [f"\n## {datetime.date.today().isoformat()} — {machine()} — PULSE search, optimised vs plain loop\n",
             (f"Search: dcgan-digiface, ×{args.factor} ({side}→{model.resolution} px), {args.steps} steps per "
              f"search, median of {args.repeats} alternating runs per path; {flops / 1e6:.1f} MFLOP per image-step "
              f"(analytic; FlopCounterMode: {counted / 1e6:.1f}). {malloc}. "
              f"Peak RSS of the process: {peak_rss_gb():.2f} GB.\n"),
             "fp32 GEMM peaks (GFLOP/s): " + "; ".join(f"{k} {v:.1f}" for k, v in peaks.items())
             + f". Peak used: **{peak:.1f}**.\n"]
    plain = "plain" in paths
    lines += [("| batch | image-steps/s (runs) | GFLOP/s | % of peak | vs batch 1 |"
               + (" plain loop image-steps/s (runs) | plain % of peak | optimised ÷ plain |" if plain else "")),
              "|---|---|---|---|---|" + ("---|---|---|" if plain else "")]
    for batch, median, rates in rows:
        gflops = median["optimised"] * flops / 1e9
        line = (f"| {batch} | {median['optimised']:.1f} ({', '.join(f'{r:.4g}' for r in rates['optimised'])}) | "
                f"{gflops:.1f} | {100 * gflops / peak:.1f}% | {median['optimised'] / base:.2f}× |")
        if plain:
            line += (f" {median['plain']:.1f} ({', '.join(f'{r:.4g}' for r in rates['plain'])}) | "
                     f"{100 * median['plain'] * flops / 1e9 / peak:.1f}% | "
                     f"{median['optimised'] / median['plain']:.2f}× |")
        lines.append(line)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        append_results(args.out, text)


if __name__ == "__main__":
    main()
