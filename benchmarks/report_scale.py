"""Time ``pulse-audit report`` end to end on a synthetic run of 20,000 rows (target: under 30 s on 2 cores).

    python benchmarks/report_scale.py [--rows 20000] [--samples 2] [--out benchmarks/RESULTS.md]

The run is written in the real run-store schema by the test support ``tests/synthetic_run.py`` (FairFace-like race
labels, a ``fairface`` stand-in, ``skin-tone`` and ``identity`` columns, UCPR rows, a PNG per stored image); making
it is not timed. The timed part is the command a user runs, in a fresh process (imports included), with default
settings (2,000 bootstrap replicates), pinned to the first ``--cores`` CPUs when ``taskset`` exists. A section is
appended to ``--out`` (the file is created when missing; other sections are never touched).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from synthetic_run import synthetic_run  # noqa: E402


def machine() -> str:
    """CPU model, core count and Python version."""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), platform.processor())
    except OSError:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def timed_report(run: Path, cores: int) -> float:
    """Wall time of ``python -m audit.commands.cli report RUN`` in a fresh process."""
    command = [sys.executable, "-m", "audit.commands.cli", "report", str(run)]
    if shutil.which("taskset") and (os.cpu_count() or 1) >= cores:
        command = ["taskset", "-c", f"0-{cores - 1}", *command]
    env = dict(os.environ, OMP_NUM_THREADS=str(cores), OPENBLAS_NUM_THREADS=str(cores))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"report failed:\n{done.stderr}")
    return elapsed


def append_section(path: Path, text: str) -> None:
    """Append ``text``; create the file with a title when missing."""
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last.\n")
    with open(path, "a") as handle:
        handle.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000, help="face rows (inputs × samples)")
    parser.add_argument("--samples", type=int, default=2, help="outputs per input")
    parser.add_argument("--ucpr", type=int, default=20, help="uninformative-input rows per race")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed reports (median kept)")
    parser.add_argument("--target", type=float, default=30.0, help="seconds")
    parser.add_argument("--out", type=Path, help="append a results section to this Markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-scale-") as tmp:
        start = time.perf_counter()
        run = synthetic_run(Path(tmp) / "run", inputs=args.rows // args.samples, samples=args.samples,
                            ucpr=args.ucpr)
        made = time.perf_counter() - start
        times = [timed_report(run, args.cores) for _ in range(args.repeats)]
        sizes = {p.name: p.stat().st_size for p in (run / "report").iterdir()}
    total = args.rows + 7 * args.ucpr
    median = statistics.median(times)
    verdict = "meets" if median < args.target else "MISSES"
    text = "\n".join([
        f"\n## {datetime.date.today().isoformat()} — report at scale — {machine()}\n",
        f"`benchmarks/report_scale.py`: synthetic run of {total:,} rows ({args.rows:,} face rows = "
        f"{args.rows // args.samples:,} inputs × {args.samples} samples, plus {7 * args.ucpr} UCPR rows; made in "
        f"{made:.1f} s, not timed). `pulse-audit report RUN` in a fresh process with default settings (2,000 "
        f"bootstrap replicates), on {args.cores} cores (taskset), median of {args.repeats}.\n",
        "| rows | report wall time (s), each run | median (s) | target | |",
        "|---|---|---|---|---|",
        f"| {total:,} | {', '.join(f'{t:.1f}' for t in times)} | **{median:.1f}** | < {args.target:g} s | "
        f"{verdict} |\n",
        "Output sizes: " + ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in sorted(sizes.items())) + ".\n"])
    print(text)
    if args.out:
        append_section(args.out, text)


if __name__ == "__main__":
    main()
