"""One PULSE step on a 1024 px StyleGAN1 on the CPU: this engine beside the original PULSE code.

    python benchmarks/stylegan1_step.py [--original /path/to/pulse] [--steps 6] [--repeats 3]
        [--batch 1] [--factor 32] [--threads 2] [--out benchmarks/RESULTS.md]

``--original`` is a checkout of adamian98/pulse made outside this repository (its code is imported
from there at run time and never copied here); without it the original's rows are skipped.
Everything runs in this one process, on the same seeded random weights (``seeded_random_state`` of
PULSE's layout, loaded strictly into both networks), the same Gaussian fit and the same LR inputs.

The original's step is the body of ``PULSE.forward`` (latent → LeakyReLU(latent·σ + μ), synthesis,
``LossBuilder``, best-image copy, backward, ``SphericalOptimizer`` step, LR schedule) driven with
its own modules; the one change is that its downsampler is built with ``cuda=False``, since the
code hard-wires CUDA. This engine's step is ``pulse_search`` with PULSE's defaults, timed from
one progress call to the next.

Two phases: first glibc's default malloc settings (as the original runs), then after
``pulse_engine.allocator.keep_large_buffers()`` (as ``pulse-audit`` runs). Within a phase the
variants alternate, ``--repeats`` times each, so load from other processes hits both alike. Per
step: wall seconds (the first step of each run is dropped; median and min–max of the rest), CPU
seconds (user + system, all threads; less sensitive to other processes' load than wall time),
system seconds and minor page faults (getrusage). Peak RSS: VmHWM reset before each run; in the tuned
phase it includes heap memory kept from earlier runs, which is the cost of the tuning. FLOPs per
step are counted by torch's FlopCounterMode on this engine's step (convolutions and matrix
products, forward and backward; weights are frozen so no weight gradients).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import itertools
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from instruments import (
    append_results,
    cpu_gemm_peaks,
    machine,
    peak_rss_gb,
    reset_peak_rss,
    search_step_flops,
)

from pulse_engine.allocator import keep_large_buffers
from pulse_engine.downsample import BicubicDownsample
from pulse_engine.generators.gaussian_fit import GaussianFit
from pulse_engine.generators.stylegan1 import (
    FFHQ_1024,
    StyleGAN1Generator,
    StyleGAN1Synthesis,
    seeded_random_state,
)
from pulse_engine.schedule import lr_multiplier
from pulse_engine.search import SearchConfig, pulse_search

Marks = list[tuple[float, float, float, int]]
"""(wall, user CPU, system CPU, minor faults) at each step boundary."""


def mark() -> tuple[float, float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime, usage.ru_stime, usage.ru_minflt


def run_ours(generator: StyleGAN1Generator, reference: torch.Tensor, steps: int) -> Marks:
    marks: Marks = []
    pulse_search(generator, reference, SearchConfig(steps=steps), batch_size=len(reference),
                 progress=lambda _: marks.append(mark()))
    return marks


def original_runner(path: Path, state: dict[str, torch.Tensor], fit: GaussianFit,
                    reference: torch.Tensor) -> tuple[Callable[[int], Marks], torch.nn.Module]:
    """A function running ``steps`` steps of the original PULSE loop (see module docstring), and
    the original's synthesis network holding ``state``."""
    sys.path.insert(0, str(path))
    try:
        stylegan = importlib.import_module("stylegan")
        pulse_loss = importlib.import_module("loss")
        bicubic = importlib.import_module("bicubic")
        spherical = importlib.import_module("SphericalOptimizer")
    finally:
        sys.path.remove(str(path))
    synthesis = stylegan.G_synthesis()
    synthesis.load_state_dict(state)
    for param in synthesis.parameters():
        param.requires_grad = False
    lrelu = torch.nn.LeakyReLU(negative_slope=0.2)
    factor = 1024 // reference.shape[-1]

    def run(steps: int) -> Marks:
        batch = reference.shape[0]
        latent = torch.randn((batch, 18, 512), dtype=torch.float, requires_grad=True)
        noise, noise_vars = [], []
        for i in range(18):
            res = (batch, 1, 2 ** (i // 2 + 2), 2 ** (i // 2 + 2))
            new_noise = torch.zeros(res) if i == 17 else torch.randn(res)
            if i < 5:
                new_noise.requires_grad = True
                noise_vars.append(new_noise)
            noise.append(new_noise)
        opt = spherical.SphericalOptimizer(torch.optim.Adam, [latent] + noise_vars, lr=0.4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt.opt, lr_multiplier("linear1cycledrop", steps))
        loss_builder = pulse_loss.LossBuilder(reference, "100*L2+0.05*GEOCROSS", 2e-3)
        loss_builder.D = bicubic.BicubicDownSample(factor=factor, cuda=False)
        min_loss, marks = float("inf"), []
        for _ in range(steps):
            opt.opt.zero_grad()
            latent_in = lrelu(latent * fit.std + fit.mean)
            gen_im = (synthesis(latent_in, noise) + 1) / 2
            loss, _ = loss_builder(latent_in, gen_im)
            if loss < min_loss:
                min_loss, best_im = loss, gen_im.clone()  # noqa: F841 (the original keeps it)
            loss.backward()
            opt.step()
            scheduler.step()
            marks.append(mark())
        return marks

    return run, synthesis


@torch.no_grad()
def largest_difference(ours: StyleGAN1Generator, original: torch.nn.Module, seed: int) -> float:
    """Max |difference| of the two synthesis outputs for one random w and noise (checks the weights match)."""
    gen = torch.Generator().manual_seed(seed + 2)
    w = torch.randn(1, *ours.latent_shape, generator=gen)
    noise = [torch.randn(1, *shape, generator=gen) for shape in ours.noise_shapes]
    return float((ours.synthesis(w, noise) - original(w, noise)).abs().max())


def per_step(marks: Marks) -> list[tuple[float, float, float, int]]:
    """(wall, user, system, faults) of each step after the first."""
    return [tuple(b - a for a, b in zip(prev, cur)) for prev, cur in itertools.pairwise(marks[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", type=Path, help="checkout of adamian98/pulse (omit to skip its rows)")
    parser.add_argument("--steps", type=int, default=6, help="steps per timed run (the first is dropped)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant and phase")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--factor", type=int, default=32, help="downscaling factor of the LR input")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="append a results section to this Markdown file")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3 (the first step of a run is dropped)")
    if args.original is not None and not (args.original / "stylegan.py").is_file():
        parser.error(f"--original {args.original} holds no stylegan.py (expected a checkout of adamian98/pulse)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    synthesis = StyleGAN1Synthesis(FFHQ_1024)
    state = seeded_random_state(synthesis, args.seed)
    synthesis.load_state_dict(state)
    gen = torch.Generator().manual_seed(args.seed + 1)
    fit = GaussianFit(torch.randn(512, generator=gen) * 0.5, torch.rand(512, generator=gen) + 0.5, 0)
    ours = StyleGAN1Generator(synthesis, fit).freeze()
    images = torch.rand(args.batch, 3, 1024, 1024, generator=gen)
    reference = BicubicDownsample(args.factor)(images).clamp(0, 1)

    variants: dict[str, Callable[[int], Marks]] = {}
    check = "original PULSE not run (no --original)"
    if args.original is not None:
        variants["original PULSE"], original = original_runner(args.original, state, fit, reference)
        check = (f"same weights check: the two synthesis networks differ by at most "
                 f"{largest_difference(ours, original, args.seed):.2e} on one random w and noise")
        print(check, flush=True)
    variants["pulse-audit"] = lambda steps: run_ours(ours, reference, steps)

    results: dict[tuple[str, str], dict] = {}
    for phase in ("glibc defaults", "keep_large_buffers"):
        if phase == "keep_large_buffers":
            print(keep_large_buffers(), flush=True)
        for _ in range(args.repeats):
            for name, run in variants.items():
                reset_peak_rss()
                steps = per_step(run(args.steps))
                entry = results.setdefault((phase, name), {"steps": [], "peak": 0.0})
                entry["steps"] += steps
                entry["peak"] = max(entry["peak"], peak_rss_gb())
                walls = [s[0] for s in steps]
                print(f"{phase:18s} {name:15s} {statistics.median(walls):6.3f} s/step "
                      f"(CPU {statistics.median(s[1] + s[2] for s in steps):.3f} s, "
                      f"sys {statistics.median(s[2] for s in steps):.3f} s, "
                      f"{statistics.median(s[3] for s in steps):.0f} faults)", flush=True)

    flops = search_step_flops(ours, reference)
    peaks = cpu_gemm_peaks(args.threads)
    peak = max(peaks.values())
    base_key = ("glibc defaults", "original PULSE")
    base = statistics.median(s[0] for s in results[base_key]["steps"]) if base_key in results else None
    lines = [(f"\n## {datetime.date.today().isoformat()} — {machine()} — 1024 px StyleGAN1 step, "
              "pulse-audit vs original PULSE\n"),
             (f"`benchmarks/stylegan1_step.py`: batch {args.batch}, ×{args.factor} input "
              f"({1024 // args.factor} px), seeded random weights (seed {args.seed}) shared by both codes, "
              f"{args.repeats} runs of {args.steps} steps per variant and phase (first step of each run dropped), "
              f"variants alternating. {flops / 1e9:.1f} GFLOP per step (FlopCounterMode, conv + matmul, "
              f"forward + input gradients); {check}.\n"),
             "fp32 GEMM peaks (GFLOP/s): " + "; ".join(f"{k} {v:.1f}" for k, v in peaks.items())
             + f". Peak used: **{peak:.1f}**.\n",
             ("| malloc | code | s/step median (min–max) | CPU s/step (user + system) | system s/step "
              "| minor faults/step | GFLOP/s | % of peak | peak RSS GB | time vs original (glibc defaults) |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (phase, name), entry in results.items():
        walls = [s[0] for s in entry["steps"]]
        wall = statistics.median(walls)
        ratio = f"{wall / base:.2f}×" if base else "—"
        lines.append(f"| {phase} | {name} | {wall:.3f} ({min(walls):.3f}–{max(walls):.3f}) | "
                     f"{statistics.median(s[1] + s[2] for s in entry['steps']):.3f} | "
                     f"{statistics.median(s[2] for s in entry['steps']):.3f} | "
                     f"{statistics.median(s[3] for s in entry['steps']):.0f} | {flops / wall / 1e9:.1f} | "
                     f"{100 * flops / wall / 1e9 / peak:.1f}% | {entry['peak']:.2f} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        append_results(args.out, text)


if __name__ == "__main__":
    main()
