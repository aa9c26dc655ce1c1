"""Throughput of the PULSE search on the DigiFace DCGAN, against the machine's fp32 GEMM peak.

    python benchmarks/pulse_search.py [--batches 1 8 64] [--out benchmarks/RESULTS.md]

Throughput is image-steps per second: one step = forward synthesis, downsampling, loss, backward to
the latent, Adam update and sphere projection for one image. FLOPs are counted analytically: the
transposed convolutions' multiply-adds (2 FLOPs each) for the forward pass, the same again for the
backward pass to the input (weights are frozen, so no weight gradients), plus the separable
downsampling filter's 4·f taps forward and backward. The downsampler runs that filter as two dense
matrix products, which do more multiply-adds than the taps (0.7 MFLOP more per image at 64 px);
they are not counted, and the count of what runs (``dense_downsample=True``) is printed beside
torch's FlopCounterMode count as a check. Elementwise work (BN-folded bias, ReLU, sigmoid, Adam)
is not counted either, so the fraction of peak understates the work done.

Each batch size is timed for the optimised search path and, in the same process and alternating
with it, for the plain loop: the same search over the generator's ``nn.Sequential`` as loaded (NCHW,
BatchNorm not folded). glibc's malloc is set up as ``pulse-audit`` sets it
(``pulse_engine.allocator``) unless ``--malloc-default``; both paths share the setting.

On this shared machine the GEMM peak moves by a factor of two within minutes, so every fraction of
peak divides by a peak measured beside the run: NumPy's OpenBLAS fp32 GEMM (the machine's fastest,
see ``instruments.openblas_peak``) is measured right before, between and after the timed runs of
each repeat; a run whose two adjacent peaks differ by more than ``instruments.DISTURBED_SPREAD`` is
flagged and left out of the medians, and the optimised ÷ plain ratio is taken pairwise (the two
runs of one repeat) under the same rule. The three peaks of ``instruments.cpu_gemm_peaks`` (torch.mm
on MKL, a oneDNN 1×1 convolution, OpenBLAS) are printed once at the start for reference.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from instruments import (
    BUSY_CORES,
    DISTURBED_SPREAD,
    Bracketed,
    append_results,
    cpu_gemm_peaks,
    cpu_seconds,
    load_average,
    machine,
    openblas_peak,
    other_cores,
    peak_rss_gb,
    search_step_flops,
    steady_median,
)

from pulse_engine.allocator import keep_large_buffers
from pulse_engine.downsample import BicubicDownsample
from pulse_engine.generators.dcgan import DCGANGenerator, load_dcgan_digiface
from pulse_engine.search import SearchConfig, pulse_search


def flops_per_image_step(model: DCGANGenerator, factor: int, dense_downsample: bool = False) -> float:
    """Analytic FLOPs of one search step for one image (see module docstring); ``dense_downsample``
    counts the downsampler's dense matrix products as run instead of its filter taps."""
    total, side = 0.0, 1
    for layer in model.main:
        if isinstance(layer, torch.nn.ConvTranspose2d):
            c_in, c_out, k, _ = layer.weight.shape
            total += 2 * 2 * c_in * c_out * k * k * side * side  # forward + input gradient
            side = k if side == 1 else side * layer.stride[0]
    low = side // factor
    taps = side if dense_downsample else 4 * factor  # multiply-adds per output value of each pass
    down = 3 * (side * low * taps + low * low * taps)  # vertical then horizontal pass, 3 channels
    return total + 2 * 2 * down


@dataclass(frozen=True)
class Repeat:
    """One repeat at one batch size: each path timed once, an OpenBLAS peak before, between and after.

    Attributes:
        order: the paths in the order they ran (alternating between repeats).
        runs: image-steps/s of each path with the two peaks adjacent to its run and the cores other
            processes used during it beyond those the run leaves idle (``--threads`` below the core count).
        loads: the 1-minute load average at each peak measurement, in time order.
    """

    order: tuple[str, ...]
    runs: dict[str, Bracketed]
    loads: tuple[float, ...]


def bracketed_repeat(paths: dict[str, DCGANGenerator], order: Sequence[str], low: torch.Tensor, steps: int,
                     threads: int) -> Repeat:
    """Time each path once in ``order``, with a short OpenBLAS peak measured before, between and after."""
    def peak() -> float:
        value = openblas_peak(threads, repeats=3)
        if value is None:
            raise SystemExit("NumPy's OpenBLAS GEMM failed in a subprocess: no peak to divide by")
        loads.append(load_average())
        return value

    loads: list[float] = []
    idle_cores = max(0, (os.cpu_count() or threads) - threads)  # cores the run leaves to other processes
    peaks = [peak()]
    runs = {}
    for name in order:
        before, start = cpu_seconds(), time.perf_counter()
        pulse_search(paths[name], low, SearchConfig(steps=steps, restarts=1), batch_size=len(low))
        seconds = time.perf_counter() - start
        others = max(0.0, other_cores(before, cpu_seconds(), seconds) - idle_cores)
        peaks.append(peak())
        runs[name] = Bracketed(len(low) * steps / seconds, (peaks[-2], peaks[-1]), others)
    return Repeat(tuple(order), runs, tuple(loads))


def flagged(item: Bracketed, text: str) -> str:
    """``text`` for one run or pair, marked when it was disturbed."""
    return text + (" (disturbed)" if item.disturbed else "")


def median_cell(items: list[Bracketed], unit: str, scale: float = 1.0, digits: int = 1) -> str:
    """The median of the undisturbed values (a dash when none) and how many there were."""
    value, kept = steady_median(items)
    shown = f"{scale * value:.{digits}f}{unit}" if kept else "—"
    return f"{shown} ({kept} of {len(items)} undisturbed)"


def repeat_row(batch: int, index: int, rep: Repeat, fractions: dict[str, Bracketed], ratio: Bracketed | None) -> str:
    """One repeat's table row: peaks and loads in time order, each path's rate, others' CPU and fraction."""
    peaks = [rep.runs[rep.order[0]].peaks[0]] + [rep.runs[name].peaks[1] for name in rep.order]
    line = (f"| {batch} | {index + 1} ({' → '.join(rep.order)}) | {' → '.join(f'{p:.0f}' for p in peaks)} | "
            f"{' → '.join(f'{x:.1f}' for x in rep.loads)} |")
    for name, share in fractions.items():
        run = rep.runs[name]
        line += f" {run.value:.1f} | {run.others:.2f} | {flagged(share, f'{100 * share.value:.1f}%')} |"
    return line + (f" {flagged(ratio, f'{ratio.value:.2f}×')} |" if ratio else "")


def summary_row(batch: int, repeats: list[Repeat], versus_first: float, fractions: dict[str, list[Bracketed]],
                ratios: list[Bracketed]) -> str:
    """One batch size's medians over the undisturbed runs (pairs for the ratio)."""
    row = (f"| {batch} | {median_cell([rep.runs['optimised'] for rep in repeats], '')} | "
           f"{'—' if math.isnan(versus_first) else f'{versus_first:.2f}×'} |")
    row += "".join(f" {median_cell(shares, '%', 100)} |" for shares in fractions.values())
    return row + (f" {median_cell(ratios, '×', digits=2)} |" if ratios else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed search")
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per path and batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-loop baseline")
    parser.add_argument("--malloc-default", action="store_true", help="keep glibc's default malloc settings")
    parser.add_argument("--out", type=Path, help="append a results section to this Markdown file")
    args = parser.parse_args()
    malloc = "malloc: glibc defaults (--malloc-default)" if args.malloc_default else keep_large_buffers()
    torch.set_num_threads(args.threads)
    began = datetime.datetime.now(datetime.UTC)
    paths = {"optimised": load_dcgan_digiface()}
    if not args.no_plain:
        paths["plain"] = load_dcgan_digiface()
        paths["plain"]._fused_layers = 0  # synthesize_w then runs self.main, the layout as loaded
    names = list(paths)
    start_peaks = cpu_gemm_peaks(args.threads)
    model = paths["optimised"]
    flops = flops_per_image_step(model, args.factor)
    side = model.resolution // args.factor
    tables, summary, base = [], [], None
    for batch in args.batches:
        low = BicubicDownsample(args.factor)(torch.rand(batch, 3, model.resolution, model.resolution))
        assert low.shape[-1] == side
        counted = search_step_flops(model, low) / batch
        for path in paths.values():
            pulse_search(path, low, SearchConfig(steps=5), batch_size=batch)  # warm-up
        repeats = [bracketed_repeat(paths, names if r % 2 == 0 else names[::-1], low, args.steps, args.threads)
                   for r in range(args.repeats)]
        fractions = {name: [rep.runs[name].fraction_of_peak(flops / 1e9) for rep in repeats] for name in names}
        ratios = [rep.runs["optimised"].over(rep.runs["plain"]) for rep in repeats] if "plain" in paths else []
        for r, rep in enumerate(repeats):
            tables.append(repeat_row(batch, r, rep, {name: values[r] for name, values in fractions.items()},
                                     ratios[r] if ratios else None))
            print(tables[-1], flush=True)
        rate, _ = steady_median([rep.runs["optimised"] for rep in repeats])
        base = rate if base is None else base
        summary.append(summary_row(batch, repeats, rate / base, fractions, ratios))
        print(f"batch {batch}: FlopCounterMode {counted / 1e6:.1f} MFLOP/image-step", flush=True)
    plain = "plain" in paths
    ended = datetime.datetime.now(datetime.UTC)
    lines = [f"\n## {began:%Y-%m-%d %H:%M}–{ended:%H:%M} UTC — {machine()} — PULSE search, optimised vs plain loop, "
             "peak measured beside every run\n",
             (f"Search: dcgan-digiface, ×{args.factor} ({side}→{model.resolution} px), {args.steps} steps per "
              f"search, {args.repeats} repeats per batch size, paths alternating in order; {flops / 1e6:.1f} MFLOP "
              f"per image-step (analytic; counting the downsampler's dense matrix products as run: "
              f"{flops_per_image_step(model, args.factor, dense_downsample=True) / 1e6:.1f}, FlopCounterMode: "
              f"{counted / 1e6:.1f}). {malloc}. "
              f"Peak RSS of the process: {peak_rss_gb():.2f} GB.\n"),
             ("Peak: NumPy's OpenBLAS fp32 GEMM (native kernel, best of 3 after a warm-up, in a subprocess) measured "
              "right before, between and after the timed runs of each repeat; a run's fraction divides by the larger "
              f"of its two adjacent peaks. A run (or a pair, for the ratio) whose adjacent peaks differ by more than "
              f"{100 * DISTURBED_SPREAD:.0f} %, or during which other processes used more than {BUSY_CORES} cores on "
              "average (from /proc/stat) beyond the cores the run leaves idle, is marked disturbed and left out of "
              "the medians. Peaks at start "
              "(GFLOP/s): " + "; ".join(f"{k} {v:.1f}" for k, v in start_peaks.items()) + ".\n"),
             ("| batch | repeat (order) | OpenBLAS peaks, GFLOP/s | load (1 min) at each peak |"
              + "".join(f" {name} image-steps/s | other processes' CPU during it beyond idle cores | "
                        f"{name} % of adjacent peak |" for name in names)
              + (" optimised ÷ plain |" if plain else "")),
             "|---|---|---|---|" + "---|---|---|" * len(names) + ("---|" if plain else ""), *tables,
             "\nMedians over the undisturbed runs (pairs for the ratio):\n",
             ("| batch | optimised image-steps/s | vs first batch |"
              + "".join(f" {name} % of adjacent peak |" for name in names)
              + (" optimised ÷ plain (pairwise) |" if plain else "")),
             "|---|---|---|" + "---|" * len(names) + ("---|" if plain else ""), *summary]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        append_results(args.out, text)


if __name__ == "__main__":
    main()
