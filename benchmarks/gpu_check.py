"""``make gpu-check``: is this CUDA machine ready for audits at 1024 px? One summary table.

    python benchmarks/gpu_check.py [--device cuda] [--steps 10] [--audit-steps 100] [--skip-tests]
        [--skip-audit] [--size 1024] [--fit-samples 100000] [--mm-size 8192] [--channels C]
        [--modconv auto|fused|shared] [--out benchmarks/RESULTS.md]

On a machine without CUDA it prints one line saying so and exits 0. Otherwise, in order:

1. the CUDA tests (``pytest -k cuda tests``: the tests that skip without a CUDA device);
2. the device's matmul peak, ``torch.mm`` on 8192² fp32 matrices with TF32 off and on;
3. the search (PULSE defaults, ``--steps`` timed steps after two warm-up steps) on
   ``dcgan-digiface`` at batch 1, 4, 16 and on a randomly initialised 1024 px StyleGAN2
   (rosinality config-f layout, seed 0, written to a temporary ``.pt`` and loaded by the normal
   loader) at batch 1, 4, 16: image-steps/s, peak GPU memory (``max_memory_allocated``), FLOPs per
   image-step counted by FlopCounterMode (convs and matmuls, forward and backward) and the fraction
   of both peaks. Convolutions follow torch's defaults (cuDNN may use TF32), so compare with the
   TF32 column; a batch that runs out of memory is a row saying so. The StyleGAN2's modulated convolution
   runs as on any audit on that device (fused on CUDA, shared on the CPU; ``stylegan2_layers.prefer_fused``)
   unless ``--modconv`` forces one, and the check prints which (run it once with each to compare on a GPU);
4. a 20-input audit (demo set, 10 per gender, ×8 → 128 px inputs, classifier skin-tone, one
   attempt) on that random generator through ``pulse-audit run``: rows/s and wall time.

It then prints one table. Budget: about 5 minutes on one modern GPU (most of it in step 4).

``--device cpu`` is a rehearsal of the same steps on the CPU (no CUDA tests, no GPU memory column), for a
machine without a GPU to check that the script itself runs; ``tests/test_gpu_check.py`` runs it so, with
``--size 32``, ``--channels 16``, one step and small ``--fit-samples`` and ``--mm-size``. Its numbers say
nothing about a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from instruments import append_results, search_step_flops, torch_mm_peak

from pulse_engine.downsample import BicubicDownsample
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.search import SearchConfig, pulse_search

REPO = Path(__file__).resolve().parents[1]
FIT_SAMPLES = 100_000
"""z draws of the random StyleGAN2's Gaussian fit (its weights are random: a smaller fit suffices)."""


@dataclass
class Row:
    """One line of the summary: a measured workload or a step that ran (tests, audit)."""

    what: str
    batch: int | None = None
    rate: float | None = None  # image-steps/s, or rows/s for the audit
    unit: str = "image-steps/s"
    gflops: float | None = None
    memory_gb: float | None = None
    note: str = ""


def no_cuda_line() -> str | None:
    """The one line printed when CUDA is unusable, or None when a device is there."""
    if torch.cuda.is_available():
        return None
    build = torch.version.cuda
    why = f"built with CUDA {build} but no device is visible" if build else "a CPU-only build"
    return f"gpu-check: no CUDA device (torch {torch.__version__}, {why}); nothing to check."


def device_peak_memory_gb(device: torch.device) -> float | None:
    """Peak memory allocated by torch on ``device`` since the last reset, GB; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def device_name(device: torch.device) -> str:
    """The CUDA device's name, or ``cpu (rehearsal)``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (rehearsal)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_search(name: str, generator: SearchableGenerator, batch: int, steps: int, factor: int) -> Row:
    """Image-steps/s, GFLOP/s and peak device memory of a ``steps``-step search at ``batch``.

    Two warm-up steps run first; the timed search includes its setup and final render, which
    makes the rate a slight underestimate. Out-of-memory becomes a row saying so.
    """
    device = next(iter(generator.buffers()), next(generator.parameters())).device
    gen = torch.Generator().manual_seed(batch)
    low = BicubicDownsample(factor)(torch.rand(batch, 3, generator.resolution, generator.resolution,
                                               generator=gen)).clamp(0, 1).to(device)
    try:
        pulse_search(generator, low, SearchConfig(steps=2), batch_size=batch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        start = time.perf_counter()
        pulse_search(generator, low, SearchConfig(steps=steps), batch_size=batch)
        synchronize(device)
        rate = batch * steps / (time.perf_counter() - start)
        memory = device_peak_memory_gb(device)
        flops = search_step_flops(generator, low) / batch
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return Row(name, batch, note="out of memory")
    return Row(name, batch, rate, gflops=rate * flops / 1e9, memory_gb=memory)


def random_stylegan2_checkpoint(path: Path, size: int = 1024, seed: int = 0, **architecture) -> Path:
    """Write a randomly initialised StyleGAN2 in rosinality's ``{"g_ema": state}`` format to ``path``."""
    from pulse_engine.generators.stylegan2 import StyleGAN2Generator

    torch.manual_seed(seed)
    model = StyleGAN2Generator(size, **architecture)
    torch.save({"g_ema": model.state_dict()}, path)
    return path


def summary_table(rows: Sequence[Row], fp32_peak: float | None, tf32_peak: float | None) -> str:
    """The Markdown summary: one line per row, fractions of the two matmul peaks where known."""

    def fraction(gflops: float | None, peak: float | None) -> str:
        return f"{100 * gflops / peak:.1f}%" if gflops is not None and peak else "—"

    def number(value: float | None, digits: int) -> str:
        return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

    lines = ["| workload | batch | rate | GFLOP/s | % fp32 mm peak | % TF32 mm peak | GPU GB | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        rate = f"{row.rate:.1f} {row.unit}" if row.rate is not None else "—"
        lines.append(f"| {row.what} | {row.batch if row.batch is not None else '—'} | {rate} | "
                     f"{number(row.gflops, 1)} | {fraction(row.gflops, fp32_peak)} | "
                     f"{fraction(row.gflops, tf32_peak)} | {number(row.memory_gb, 2)} | {row.note} |")
    return "\n".join(lines)


def matmul_peaks(device: torch.device, n: int = 8192) -> tuple[float, float]:
    """(fp32, TF32) GFLOP/s of ``torch.mm`` on ``device``; the TF32 setting is restored afterwards."""
    kept = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        fp32 = torch_mm_peak(device, n)
        torch.backends.cuda.matmul.allow_tf32 = True
        tf32 = torch_mm_peak(device, n)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = kept
    return fp32, tf32


def run_cuda_tests() -> Row:
    """``pytest -q -k cuda tests`` in a subprocess; the row carries pytest's summary line."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "tests"],
                          cwd=REPO, check=False, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else done.stderr.strip()[-200:]
    verdict = "passed" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    return Row("CUDA tests (pytest -k cuda)", note=f"{verdict}: {summary} in {time.perf_counter() - start:.0f} s")


def run_audit(weights: Path, device: torch.device, steps: int, out: Path, size: int = 1024,
              fit_samples: int = FIT_SAMPLES) -> Row:
    """A 20-input audit on the random ``size`` px generator through the CLI; rows/s over the whole command."""
    command = [sys.executable, "-m", "audit.commands.cli", "run", "--dataset", "demo", "--group-by", "gender",
               "--per-group", "10", "--generator", f"stylegan2:{weights}", "--factor", "8",
               "--classifiers", "skin-tone", "--restarts", "1", "--steps", str(steps), "--batch-size", "10",
               "--device", str(device), "--out", str(out)]
    env = {**os.environ, "PULSE_AUDIT_FIT_SAMPLES": str(fit_samples)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return Row(f"audit, 20 inputs ×8, random {size} px StyleGAN2", note=f"FAILED: {tail[0][:160]}")
    from audit.run.run_store import read_results

    rows = read_results(out).num_rows
    return Row(f"audit, 20 inputs ×8, random {size} px StyleGAN2", 10, rows / wall, unit="rows/s",
               note=f"{rows} rows in {wall:.0f} s, {steps} steps, skin-tone classifier, whole command")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=10, help="timed search steps per measurement")
    parser.add_argument("--audit-steps", type=int, default=100)
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-audit", action="store_true")
    parser.add_argument("--size", type=int, default=1024, help="resolution of the random StyleGAN2 (px)")
    parser.add_argument("--fit-samples", type=int, default=FIT_SAMPLES, help="z draws of its Gaussian fit")
    parser.add_argument("--mm-size", type=int, default=8192, help="side of the matrices of the matmul peak")
    parser.add_argument("--channels", type=int, help="channels of every layer of the random StyleGAN2 "
                        "(default: rosinality's config-f widths)")
    parser.add_argument("--modconv", choices=("auto", "fused", "shared"), default="auto",
                        help="StyleGAN2 modulated convolution of the search rows (auto: the device's default; "
                        "the audit always runs auto)")
    parser.add_argument("--out", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    line = no_cuda_line() if device.type == "cuda" else None
    if line is not None:
        print(line)
        return 0
    from pulse_engine.generators import load_generator
    from pulse_engine.generators.stylegan2_loaders import load_stylegan2

    began = time.perf_counter()
    rows = [] if args.skip_tests or device.type != "cuda" else [run_cuda_tests()]
    fp32, tf32 = matmul_peaks(device, args.mm_size)
    print(f"torch.mm peak on {device_name(device)}: fp32 {fp32:.0f}, TF32 {tf32:.0f} GFLOP/s", flush=True)
    dcgan = load_generator("dcgan-digiface", device)
    for batch in (1, 4, 16):
        rows.append(measure_search("search, dcgan-digiface ×4", dcgan, batch, args.steps, 4))
        print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        widths = {} if args.channels is None else {"channels": {4 * 2**i: args.channels
                                                                  for i in range(args.size.bit_length() - 2)}}
        weights = random_stylegan2_checkpoint(Path(folder) / f"random{args.size}.pt", size=args.size, **widths)
        stylegan2 = load_stylegan2(weights, device, fit_samples=args.fit_samples)
        stylegan2.set_fused({"auto": None, "fused": True, "shared": False}[args.modconv])
        modconv = stylegan2.modconv_formulation(device)
        print(f"StyleGAN2 modulated convolution on {device}: {modconv}", flush=True)
        for batch in (1, 4, 16):
            rows.append(measure_search(f"search, random StyleGAN2 {args.size} px ×8", stylegan2, batch,
                                       args.steps, 8))
            print(rows[-1], flush=True)
        del stylegan2
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not args.skip_audit:
            rows.append(run_audit(weights, device, args.audit_steps, Path(folder) / "audit", args.size,
                                  args.fit_samples))
    heading = (f"\n## {datetime.date.today().isoformat()} — gpu-check — {device_name(device)}, "
               f"torch {torch.__version__}, CUDA {torch.version.cuda}\n\n"
               f"torch.mm peaks (GFLOP/s): fp32 {fp32:.0f}, TF32 {tf32:.0f}. Search: PULSE defaults, "
               f"{args.steps} timed steps; StyleGAN2 modulated convolution {modconv}. "
               f"Whole check: {time.perf_counter() - began:.0f} s.\n\n")
    text = heading + summary_table(rows, fp32, tf32) + "\n"
    print(text)
    if args.out:
        append_results(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
