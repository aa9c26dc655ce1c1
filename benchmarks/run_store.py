"""Time the run store: rows appended in flushes of 16, then a resume, for runs of several sizes.

    python benchmarks/run_store.py [--rows 2000 20000 100000] [--flush 16] [--window 50] [--out benchmarks/RESULTS.md]

Rows are synthetic but shaped like an audit's (111 columns: ids, labels, paths, search diagnostics, timings,
three classifiers on both sides, comparisons). For each run size a fresh run folder (under the system temp
folder) receives the rows through :meth:`audit.run.run_store.RunStore.append`, ``--flush`` rows per call, as the
harness does; every call is timed. Reported per size: the median time per flush over the first ``--window``
flushes, over the ``--window`` flushes around row 2,000 and over the last ``--window`` flushes, the total,
the closing of the session (``results.parquet`` written once), and a resume (:meth:`RunStore.open` of the finished
folder, which reads the stored keys). Images are not written (they cost
the same per row whatever the run's size). Medians, because other processes share the machine; the spread is
printed beside them; the verdict compares flushes of one run (at 2,000 rows and at its end), since the load
of a shared machine changes between runs. A section is appended to ``--out`` when given.
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

from audit.core import schema as s  # noqa: E402
from audit.run.run_store import RunStore  # noqa: E402

RACES = ("White", "Black", "East Asian", "Indian", "Southeast Asian", "Latino_Hispanic", "Middle Eastern")
MONK = tuple(f"MST{i}" for i in range(1, 11))
AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
SEARCH = ("success", "lr_l2", "best_step", "steps", "restarts_used", "seed", "seconds", "lr_linf", "loss",
          "geocross", "radius")


def synthetic_row(index: int, samples: int = 2) -> dict:
    """Row ``index`` of a run with ``samples`` outputs per input (values vary, the columns do not)."""
    item, sample = f"val/{index // samples:06d}.jpg", index % samples
    frac = (index * 7919 % 1000) / 1000
    row = {s.ITEM: item, s.SAMPLE: sample, s.INPUT_KIND: "face", s.GROUP: RACES[index % 7], s.ERROR: "",
           s.label_column("race"): RACES[index % 7], s.label_column("gender"): "Female" if index % 3 else "Male",
           s.label_column("age"): AGES[index % 9]}
    row |= {s.label_source_column(a): "annotated" for a in ("race", "gender", "age")}
    row |= {s.PATH_SOURCE: f"/data/fairface/{item}", s.PATH_TRUTH: f"images/{item}/truth.png",
            s.PATH_LR: f"images/{item}/lr.png", s.PATH_OUT: f"images/{item}/out_{sample}.png",
            s.T_UPSAMPLE: 1.5 + frac, s.T_CLASSIFY: 0.3 * frac}
    fractional = ("lr_l2", "seconds", "lr_linf", "loss", "geocross", "radius")
    row |= {s.upsampler_column(key): (frac if key in fractional else index % 100) for key in SEARCH}
    row[s.SUCCESS] = bool(index % 4)
    for side in s.SIDES:
        shift = frac if side == "out" else 1 - frac
        row |= {s.face_column(side, "skin-tone"): True,
                s.classifier_column(side, "skin-tone", "monk"): MONK[index % 10],
                s.value_column(side, "skin-tone", "ita"): 60 * shift - 20,
                s.value_column(side, "skin-tone", "lightness"): 70 * shift,
                s.value_column(side, "skin-tone", "hue"): 50 * shift}
        row |= {s.probability_column(side, "skin-tone", "monk", m): shift / 10 for m in MONK}
        row |= {s.face_column(side, "age-gender"): True, s.classifier_column(side, "age-gender", "gender"): "Female",
                s.probability_column(side, "age-gender", "gender", "Female"): shift,
                s.probability_column(side, "age-gender", "gender", "Male"): 1 - shift,
                s.classifier_column(side, "age-gender", "age"): AGES[index % 9],
                s.value_column(side, "age-gender", "age_years"): 20 + 40 * shift}
        row |= {s.probability_column(side, "age-gender", "age", a): shift / 9 for a in AGES}
        row |= {s.classifier_column(side, "age-gender", "race"): RACES[index % 7]}
        row |= {s.probability_column(side, "age-gender", "race", r): shift / 7 for r in RACES}
        row |= {s.face_column(side, "identity"): bool(index % 5)}
    row |= {s.IDENTITY_DISTANCE: 0.4 + frac / 2, s.DELTA_ITA: frac * 10 - 5, s.PSNR: 20 + frac, s.SSIM: frac}
    return row


def machine() -> str:
    """CPU model, core count, Python and pyarrow versions."""
    import pyarrow

    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                         platform.processor())
    except OSError:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, pyarrow {pyarrow.__version__}"


def load() -> str:
    """The 1-minute load average, to read the figures against."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def quartiles(times: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile) in ms."""
    q1, median, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return q1 * 1e3, median * 1e3, q3 * 1e3


def measure(rows: int, flush: int, window: int, folder: Path) -> dict:
    """Append ``rows`` rows in flushes of ``flush`` to a fresh run in ``folder``, then resume it."""
    root = folder / f"run-{rows}"
    times, cpu = [], []
    began = time.perf_counter()
    store = RunStore.open(root, {"benchmark": rows})
    for start in range(0, rows, flush):
        batch = [synthetic_row(i) for i in range(start, min(rows, start + flush))]
        tic, cpu_tic = time.perf_counter(), time.process_time()
        store.append(batch)
        times.append(time.perf_counter() - tic)
        cpu.append(time.process_time() - cpu_tic)
    tic = time.perf_counter()
    store.close()
    closing = time.perf_counter() - tic
    total = time.perf_counter() - began
    tic = time.perf_counter()
    resumed = RunStore.open(root, {"benchmark": rows})
    resume = time.perf_counter() - tic
    assert len(resumed.done) == rows, "the resumed store does not hold every row"
    resumed.close()
    columns = 1 + len(synthetic_row(0))  # + run_id
    at_2000 = max(0, min(len(times) - window, 2000 // flush - window // 2))
    return {"rows": rows, "columns": columns, "flushes": len(times), "start": quartiles(times[:window]),
            "at_2000": quartiles(times[at_2000:at_2000 + window]), "end": quartiles(times[-window:]),
            "cpu_2000": quartiles(cpu[at_2000:at_2000 + window]), "cpu_end": quartiles(cpu[-window:]),
            "total": total, "close": closing, "resume": resume, "load": load()}


def table(results: list[dict], flush: int, window: int) -> str:
    """The Markdown table of ``results``."""
    intro = (f"Rows of {results[0]['columns']} columns appended in flushes of {flush}; per-flush time = median "
             f"(25th–75th percentile) of {window} flushes at the start, around row 2,000 and at the end, in ms. "
             "CPU = this process's CPU time (not the waits for the disk or for other processes). "
             "Resume = `RunStore.open` of the finished run (reads the stored keys). Close = `results.parquet` "
             "written once.")
    header = ("| rows | per flush, start | around row 2,000 | at the end | end / row 2,000 | CPU per flush, row 2,000 "
              "| CPU, end | CPU end / row 2,000 | append total | close | resume | resume per 1,000 rows | load avg |")
    lines = [intro, "", header, "|---" * 13 + "|"]

    def cell(q: tuple[float, float, float]) -> str:
        return f"{q[1]:.2f} ({q[0]:.2f}–{q[2]:.2f})"

    for r in results:
        line = (f"| {r['rows']:,} | {cell(r['start'])} | {cell(r['at_2000'])} | {cell(r['end'])}"
                f" | {r['end'][1] / r['at_2000'][1]:.2f}× | {cell(r['cpu_2000'])} | {cell(r['cpu_end'])}"
                f" | {r['cpu_end'][1] / r['cpu_2000'][1]:.2f}× | {r['total'] - r['close']:.1f} s | {r['close']:.1f} s"
                f" | {r['resume']:.2f} s | {1e6 * r['resume'] / r['rows']:.0f} ms | {r['load']} |")
        lines.append(line)
    largest = results[-1]
    verdict = (f"Per-flush time at the end of the {largest['rows']:,}-row run / around its row 2,000: wall "
               f"**{largest['end'][1] / largest['at_2000'][1]:.2f}×**, CPU of this process "
               f"**{largest['cpu_end'][1] / largest['cpu_2000'][1]:.2f}×** (goal ≤ 1.5×).")
    lines += ["", verdict]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000, 100000])
    parser.add_argument("--flush", type=int, default=16)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--title", default="", help="text after the date in the section title")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-bench-") as folder:
        results = []
        for rows in args.rows:
            results.append(measure(rows, args.flush, args.window, Path(folder)))
            print(table(results, args.flush, args.window).splitlines()[-3], flush=True)
    text = table(results, args.flush, args.window)
    print(text)
    if args.out:
        title = f"## {datetime.date.today().isoformat()} — run store: {machine()}{args.title}"
        with open(args.out, "a") as handle:
            handle.write(f"\n{title}\n\n{text}\n")


if __name__ == "__main__":
    main()
