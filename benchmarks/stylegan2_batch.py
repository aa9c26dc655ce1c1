"""StyleGAN2 search steps on the CPU by batch size: fused vs shared modulated convolution.

    python benchmarks/stylegan2_batch.py [--configs 32px-512,256px-f] [--batches 1,4,16] [--steps 4]
        [--repeats 2] [--threads 2] [--profile] [--out benchmarks/RESULTS.md]

:class:`~pulse_engine.generators.stylegan2_layers.ModulatedConv2d` has two formulations with the
same result: *fused* (each image's modulated weight built, the batch run as one grouped
convolution, one group per image) and *shared* (activations scaled by the styles, one ordinary
convolution with the shared weight over the batch, output scaled by the demodulation
coefficients). This script times PULSE search steps (PULSE defaults, ×8, randomly initialised
generator seeded 0 with a 2,000-sample Gaussian fit) with each, in one process: for every repeat,
config and batch, the two formulations run back to back, their order alternating between
repeats, so load from other processes hits both alike. Per run ``--steps`` steps are timed from
one progress call to the next and the first is dropped. Reported per image-step: wall seconds
and CPU seconds (user + system of this process, all threads: less sensitive to other processes'
load than wall time; system seconds beside them), medians over runs, and the ratios shared ÷ fused
of image-steps/s and fused ÷ shared of CPU seconds; and the peak memory of a run (the most, over its
runs, of the process's peak resident size during the run above the resident size it started from, with the
heap's free memory given back first: ``instruments.start_peak_window``), which says which batch fits.

Before timing, the two formulations' images are compared on one batch (the instrument checks
that it compares equal work). glibc's large-buffer settings are applied as ``pulse-audit``
applies them (:func:`pulse_engine.allocator.keep_large_buffers`; ``PULSE_AUDIT_MALLOC=default``
keeps glibc's defaults, under which every large per-image weight of the fused form is mapped and
page-faulted anew at each step).

``--profile`` also prints, for each config, batch and formulation, the operators with the most
self CPU time in one forward + backward pass of the synthesis (torch.profiler).
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from instruments import append_results, machine, peak_rss_gb, start_peak_window

from pulse_engine.allocator import keep_large_buffers
from pulse_engine.downsample import BicubicDownsample
from pulse_engine.generators.gaussian_fit import compute_fit
from pulse_engine.generators.stylegan2 import StyleGAN2Generator
from pulse_engine.search import SearchConfig, pulse_search

CONFIGS = {
    "32px-16": dict(size=32, channels={4: 16, 8: 16, 16: 16, 32: 16}),
    "32px-512": dict(size=32, channel_multiplier=1),
    "256px-f": dict(size=256, channel_multiplier=2),
}
"""Architectures: the gpu-check rehearsal's (16 channels), 512 channels at 4–32 px, config-f at 256 px."""
FORMULATIONS = {"fused": True, "shared": False}
FACTOR = 8


def random_generator(config: str) -> StyleGAN2Generator:
    """A randomly initialised (seed 0) frozen StyleGAN2 of ``config`` with a small Gaussian fit."""
    torch.manual_seed(0)
    model = StyleGAN2Generator(**CONFIGS[config]).freeze()
    return model.set_fit(compute_fit(model.mapping, model.style_dim, samples=2000))


def mark() -> tuple[float, float, float]:
    """(wall, user + system CPU, system CPU) seconds now."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_stime


def timed_steps(model: StyleGAN2Generator, low: torch.Tensor, steps: int) -> tuple[float, ...]:
    """(wall, CPU, system CPU) seconds per search step, from one progress call to the next, first step dropped,
    then the run's peak memory above the resident size it started from, GB (:func:`start_peak_window`)."""
    marks: list[tuple[float, float, float]] = []
    base = start_peak_window()
    pulse_search(model, low, SearchConfig(steps=steps), batch_size=len(low), progress=lambda _: marks.append(mark()))
    per_step = tuple((last - first) / (len(marks) - 1) for first, last in zip(marks[0], marks[-1]))
    return (*per_step, peak_rss_gb() - base)


def formulation_gap(model: StyleGAN2Generator, batch: int = 2) -> float:
    """max |fused − shared| of one batch of images (float32), relative to the images' max |value|."""
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(batch, *model.latent_shape, generator=gen)
    noise = [torch.randn(batch, *shape, generator=gen) for shape in model.noise_shapes]
    with torch.no_grad():
        fused = model.set_fused(True).synthesize(latent, noise)
        shared = model.set_fused(False).synthesize(latent, noise)
    model.set_fused(None)
    return float((fused - shared).abs().max() / fused.abs().max())


def profile_pass(model: StyleGAN2Generator, batch: int, rows: int = 6) -> str:
    """The ``rows`` operators with the most self CPU time in one synthesis forward + backward."""
    from torch.profiler import ProfilerActivity, profile

    latent = torch.randn(batch, *model.latent_shape, requires_grad=True)
    noise = [torch.randn(batch, *shape) for shape in model.noise_shapes]
    model.synthesize(latent, noise).square().sum().backward()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.synthesize(latent, noise).square().sum().backward()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}% ({e.self_cpu_time_total / 1e6:.2f} s)"
                     for e in events[:rows])


def results_table(times: dict[tuple[str, int, str], list[tuple[float, ...]]]) -> str:
    """Markdown table of the medians of (wall, CPU, system CPU) seconds per step and the largest peak memory of a
    run, keyed (config, batch, name)."""
    lines = ["| config | batch | fused image-steps/s (runs) | shared image-steps/s (runs) | shared ÷ fused | "
             "fused CPU s per image-step (system) | shared CPU s per image-step (system) | CPU s, fused ÷ shared | "
             "peak memory of a run, GB, fused / shared |",
             "|---|---|---|---|---|---|---|---|---|"]
    for config, batch in dict.fromkeys((config, batch) for config, batch, _ in times):
        rate, cpu, system, runs, peak = {}, {}, {}, {}, {}
        for name in FORMULATIONS:
            measured = times[config, batch, name]
            rate[name] = batch / statistics.median(m[0] for m in measured)
            cpu[name] = statistics.median(m[1] for m in measured) / batch
            system[name] = statistics.median(m[2] for m in measured) / batch
            runs[name] = ", ".join(f"{batch / m[0]:.3g}" for m in measured)
            peak[name] = max(m[3] for m in measured)
        lines.append(f"| {config} | {batch} | {rate['fused']:.2f} ({runs['fused']}) | "
                     f"{rate['shared']:.2f} ({runs['shared']}) | {rate['shared'] / rate['fused']:.2f}× | "
                     f"{cpu['fused']:.3f} ({system['fused']:.3f}) | {cpu['shared']:.3f} ({system['shared']:.3f}) | "
                     f"{cpu['fused'] / cpu['shared']:.2f}× | {peak['fused']:.2f} / {peak['shared']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="32px-512,256px-f", help=f"comma-separated, of {sorted(CONFIGS)}")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--steps", type=int, default=4, help="search steps per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per config, batch and formulation")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--profile", action="store_true", help="print the top operators of each pass")
    parser.add_argument("--out", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args()
    configs = args.configs.split(",")
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or args.steps < 2:
        sys.exit(f"unknown configs {unknown}" if unknown else "--steps must be at least 2")
    torch.set_num_threads(args.threads)
    malloc = keep_large_buffers()
    batches = [int(b) for b in args.batches.split(",")]
    began, load_before = time.perf_counter(), os.getloadavg()[0]
    models, lows, gaps = {}, {}, {}
    for config in configs:
        models[config] = model = random_generator(config)
        gaps[config] = formulation_gap(model)
        print(f"{config}: fused vs shared images differ by {gaps[config]:.2e} (relative)", flush=True)
        gen = torch.Generator().manual_seed(2)
        for batch in batches:
            high = torch.rand(batch, 3, model.resolution, model.resolution, generator=gen)
            lows[config, batch] = BicubicDownsample(FACTOR)(high).clamp(0, 1)
            for name, fused in FORMULATIONS.items():
                if args.profile:
                    print(f"  profile {config} batch {batch} {name}: "
                          f"{profile_pass(model.set_fused(fused), batch)}", flush=True)
    times: dict[tuple[str, int, str], list[tuple[float, ...]]] = {}
    resident = peak_rss_gb()
    for repeat in range(args.repeats):
        order = list(FORMULATIONS) if repeat % 2 == 0 else list(reversed(FORMULATIONS))
        for config in configs:
            for batch in batches:
                for name in order:
                    model = models[config].set_fused(FORMULATIONS[name])
                    wall, cpu, system, peak = timed_steps(model, lows[config, batch], args.steps)
                    times.setdefault((config, batch, name), []).append((wall, cpu, system, peak))
                    print(f"{config} batch {batch:2d} {name:6s}: {batch / wall:7.2f} image-steps/s, "
                          f"CPU {cpu / batch:.3f} s per image-step (system {system / batch:.3f}), "
                          f"peak memory {peak:.2f} GB", flush=True)
    lines = [f"\n## {datetime.date.today().isoformat()} — StyleGAN2 search step by batch: fused vs shared "
             f"modulated convolution (CPU)\n",
             (f"`benchmarks/stylegan2_batch.py --configs {args.configs} --batches {args.batches} --steps {args.steps} "
              f"--repeats {args.repeats} --threads {args.threads}`; {machine()}. Load average (1 min) "
              f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; {time.perf_counter() - began:.0f} s in all. "
              f"{malloc}. Random weights (seed 0), ×{FACTOR}, PULSE defaults, {args.steps - 1} timed steps per run, "
              f"median over {args.repeats} runs alternating the formulations' order. Images fused vs shared: "
              + ", ".join(f"{c} {gaps[c]:.1e}" for c in configs)
              + " (max relative difference). Peak memory of a run: the largest over its runs of the process's "
              "peak resident size during the run minus its resident size at the run's start, after the heap's "
              f"free memory was given back (the generators, inputs and libraries, {resident:.2f} GB resident "
              "before the first run, come on top).\n")]
    text = "\n".join(lines) + "\n" + results_table(times) + "\n"
    print(text)
    if args.out:
        append_results(args.out, text)


if __name__ == "__main__":
    main()
