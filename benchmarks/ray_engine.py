"""Rows per second of ``--engine local`` and ``--engine ray`` (1 and 2 workers) on this machine, Ray's overhead,
and what N GPU workers would give before the driver becomes the bottleneck.

    python benchmarks/ray_engine.py [--per-group 8] [--samples 2] [--steps 100] [--repeats 1]
                                    [--classifiers skin-tone,age-gender,identity] [--out benchmarks/RESULTS.md]

Every configuration runs the same audit (demo set, ``dcgan-digiface``, ×4, one attempt per output so that
every chunk does the same work) into a fresh folder, in this process, through :func:`audit.run.harness.run_audit`;
``--repeats`` interleaves the configurations (local, ray ×1, ray ×2, local, …) and the medians are reported,
since other processes share the machine. Instruments: the driver's store writes (``Audit.write``) and input
preparation (``Audit.face_job``) are wrapped with timers, and every chunk result carries its worker's stage
times (search, classify, encode), measured where the chunk was computed.

Reported per configuration: wall time of the run, time to the first stored chunk (for ray: starting the local
cluster and the actors, each loading the generator and the classifiers), rows/s end to end and in the steady
state (from the first stored chunk to the last), and the ratio to local. Two cores cannot give a speed-up:
the numbers measure Ray's overhead.

Scaling estimate (printed, and written with ``--out``): with N actors each computing a chunk in w seconds
(search + classify + encode, measured in the ray ×1 run) plus Ray's per-chunk overhead o (seconds per chunk
in the steady state with one actor, which is never idle, minus w; means over the chunks after the first),
and the driver spending d seconds per chunk (store write + input preparation), chunks flow at
min(N / (w + o), 1 / d) per second: the driver is the bottleneck from N* = (w + o) / d actors on. On a GPU
the search part of w shrinks by the device's speed-up k (not measured here: no GPU), so N* is given for
k = 1, 10 and 100; classification (dlib, onnxruntime) stays on the actors' CPUs. Not in d: the driver's
share of Ray's (de)serialisation of tasks and results, which this measurement cannot separate from waiting.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import audit.run.harness as harness  # noqa: E402
from audit.run.harness import AuditConfig, run_audit  # noqa: E402

CONFIGS = (("local", {}), ("ray, 1 worker", {"engine": "ray", "workers": 1}),
           ("ray, 2 workers", {"engine": "ray", "workers": 2}))
GPU_SPEEDUPS = (1, 10, 100)


class Timers:
    """Driver-side timers of one run: per stored chunk its worker stage seconds, write seconds, stored rows and
    time stored; input preparation seconds in all."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.chunks: list[dict[str, float]] = []
        self.prepare = 0.0

    def install(self) -> tuple:
        """Wrap ``Audit.write`` and ``Audit.face_job``; returns the originals (for :meth:`remove`)."""
        write, face_job = harness.Audit.write, harness.Audit.face_job

        def timed_write(audit, result):
            began = time.perf_counter()
            write(audit, result)
            ended = time.perf_counter()
            self.chunks.append({**result.seconds, "write": ended - began, "rows": len(result.rows), "at": ended})

        def timed_face_job(audit, item):
            began = time.perf_counter()
            job = face_job(audit, item)
            self.prepare += time.perf_counter() - began
            return job

        harness.Audit.write, harness.Audit.face_job = timed_write, timed_face_job
        return write, face_job

    @staticmethod
    def remove(originals: tuple) -> None:
        harness.Audit.write, harness.Audit.face_job = originals


def measure(name: str, options: dict, base: dict, folder: Path) -> dict:
    """Run the audit once with ``options``; the timings of :class:`Timers` summarised."""
    config = AuditConfig.from_mapping({**base, **options, "out": str(folder / f"run-{len(list(folder.iterdir()))}")})
    timers = Timers()
    originals = timers.install()
    try:
        run_audit(config)
    finally:
        Timers.remove(originals)
    chunks = timers.chunks
    wall = time.perf_counter() - timers.start
    rows = sum(c["rows"] for c in chunks)
    first = chunks[0]["at"] - timers.start
    span = chunks[-1]["at"] - chunks[0]["at"]  # the steady state: from the first stored chunk to the last
    later = chunks[1:]
    mean = {key: sum(c[key] for c in later) / max(1, len(later)) for key in ("search", "classify", "encode", "write")}
    return {"name": name, "rows": rows, "chunks": len(chunks), "wall": wall, "first": first,
            "rows_per_s": rows / wall, "steady_rows_per_s": sum(c["rows"] for c in later) / max(1e-9, span),
            "steady_chunk_s": span / max(1, len(later)), "rows_per_chunk": sum(c["rows"] for c in later) / len(later),
            "prepare_per_chunk": timers.prepare / len(chunks), **mean}


def median_runs(runs: list[dict]) -> dict:
    """Per configuration, the median of each measurement over its repeats."""
    return {key: (statistics.median(r[key] for r in runs) if isinstance(runs[0][key], float | int) else runs[0][key])
            for key in runs[0]}


def engine_table(results: list[dict]) -> str:
    local = results[0]
    lines = ["| engine | rows | chunks | wall s | first chunk stored s | rows/s | steady rows/s | "
             "rows/s vs local | steady vs local |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['rows']:.0f} | {r['chunks']:.0f} | {r['wall']:.1f} | {r['first']:.1f} | "
                     f"{r['rows_per_s']:.2f} | {r['steady_rows_per_s']:.2f} | "
                     f"{r['rows_per_s'] / local['rows_per_s']:.2f}× | "
                     f"{r['steady_rows_per_s'] / local['steady_rows_per_s']:.2f}× |")
    return "\n".join(lines)


def scaling(one: dict) -> str:
    """The driver bottleneck from the ray ×1 run's per-chunk times (see the module docstring)."""
    work = one["search"] + one["classify"] + one["encode"]
    overhead = one["steady_chunk_s"] - work
    driver = one["write"] + one["prepare_per_chunk"]
    rows = one["rows_per_chunk"]
    lines = [f"Per chunk of {rows:.1f} rows (means over the steady state, ray ×1): search {one['search']:.2f} s, "
             f"classify {one['classify']:.2f} s, encode {one['encode']:.3f} s in the actor; Ray's overhead "
             f"{overhead:.2f} s (steady {one['steady_chunk_s']:.2f} s per chunk − {work:.2f} s of work); driver "
             f"{driver:.3f} s (write {one['write']:.3f} s + input preparation {one['prepare_per_chunk']:.3f} s).",
             "", "| GPU search speed-up k | actor s per chunk | rows/s per actor | driver limit rows/s | "
             "driver-bound from N* actors |", "|---|---|---|---|---|"]
    for k in GPU_SPEEDUPS:
        per_chunk = one["search"] / k + one["classify"] + one["encode"] + max(0.0, overhead)
        lines.append(f"| {k} | {per_chunk:.2f} | {rows / per_chunk:.1f} | {rows / driver:.0f} | "
                     f"{per_chunk / driver:.0f} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--classifiers", default="skin-tone,age-gender,identity")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    base = dict(dataset="demo", generator="dcgan-digiface", factor=4, per_group=args.per_group,
                samples=args.samples, steps=args.steps, restarts=1, classifiers=args.classifiers, device="cpu")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rb", dir="/tmp") as folder:  # short: Ray's socket paths live below
        os.environ["RAY_TMPDIR"] = folder
        runs = Path(folder) / "runs"
        runs.mkdir()
        measured: dict[str, list[dict]] = {name: [] for name, _ in CONFIGS}
        for _ in range(args.repeats):
            for name, options in CONFIGS:
                measured[name].append(measure(name, options, base, runs))
                print(engine_table([m[-1] for m in measured.values() if m]), flush=True)
    results = [median_runs(measured[name]) for name, _ in CONFIGS]
    load_after = os.getloadavg()
    text = (f"Audit: demo set, dcgan-digiface ×4, {args.classifiers}, per group {args.per_group}, "
            f"{args.samples} samples, {args.steps} steps, 1 attempt, batch 16; medians of {args.repeats} interleaved "
            f"repeat(s); load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.\n\n"
            f"{engine_table(results)}\n\n{scaling(results[1])}\n")
    print(text)
    if args.out:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(args.out, "a") as handle:
            handle.write(f"\n## {stamp} — Ray engine vs local (`benchmarks/ray_engine.py`): {machine()}\n\n{text}")


if __name__ == "__main__":
    main()
