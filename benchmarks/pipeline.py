"""Time an audit run with the sequential and the pipelined local engine, in one process.

    python benchmarks/pipeline.py [--repeats 1] [--per-group 8] [--samples 2] [--out benchmarks/RESULTS.md]

Workload (issue 11): the demo face set, ×4, ``dcgan-digiface``, classifiers skin-tone + age-gender +
identity, ``--per-group 8`` (41 inputs) × ``--samples 2``, every other option at its default (100 steps, 3
restarts, batch 16). A small untimed run first loads the libraries and model files, so that neither engine
pays for that alone; then, ``--repeats`` times, the same audit with ``engine="sequential"`` and with
``engine="local"`` (pipelined), each into a fresh run folder under the system temp folder, and the two runs'
rows are checked to be equal (timing columns aside): both engines do the same work.

Per run: wall time of :func:`audit.run.harness.run_audit` (start-up, loading, sampling, the chunks, the store,
``results.parquet``), and, from the chunk results the engine hands to the driver, the summed wall time of
each stage (search, classification, PNG encoding; the driver's writes are timed around its ``write``). The
share of wall time that is not the search is ``1 − search / wall``; CPU seconds (this process and the
search process) show whether both engines did the same amount of work. In the pipelined run the search shares
the cores with the classification, so its own search time grows; the second share,
``1 − sequential search / pipelined wall``, counts that slow-down as overhead too (the honest figure on a
CPU where both stages compete for the same cores). The engine is observed by wrapping the harness's
``make_engine`` (results unchanged). The 1-minute load average is printed beside every run: the machine may
be shared. A section is appended to ``--out`` when given.

Equal conditions: the sequential engine searches in this process, the pipelined one in its search process. This
process is set up first as the search process sets itself up (:func:`audit.run.search_process.prepare_search`:
torch threads, glibc's large buffers, as ``pulse-audit run`` does), the two setups are printed and must be equal,
else the comparison is void. OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``, set before torch
loads, as ``pulse-audit`` sets it) unless the environment sets another policy (``OMP_WAIT_POLICY=ACTIVE``: they
spin); the search process inherits it.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from pulse_engine.openmp import prefer_passive_waits  # noqa: E402

prefer_passive_waits()  # as pulse-audit does, before torch loads

import torch  # noqa: E402
from instruments import append_results, machine  # noqa: E402

import audit.run.harness as harness  # noqa: E402
from audit.run.harness import AuditConfig, run_audit  # noqa: E402
from audit.run.run_store import read_results  # noqa: E402
from audit.run.search_process import prepare_search  # noqa: E402

TIMING = ("t_upsample_s", "t_classify_s", "ups_batch_seconds", "run_id")
ENGINES = ("sequential", "local")


class Observed:
    """Stage seconds of the chunks of one run, the driver's write time, and when the engine ran."""

    def __init__(self) -> None:
        self.stages = {"search": 0.0, "classify": 0.0, "encode": 0.0, "write": 0.0}
        self.chunks = 0
        self.began = self.ended = 0.0
        self.searcher = None

    def wrap(self, make_engine):
        def make(*args):
            engine = make_engine(*args)
            self.searcher = args[3] if len(args) > 3 else None

            def run(tasks, write):
                def timed_write(result):
                    began = time.perf_counter()
                    write(result)
                    self.stages["write"] += time.perf_counter() - began
                    for stage in ("search", "classify", "encode"):
                        self.stages[stage] += result.seconds[stage]
                    self.chunks += 1

                self.began = time.perf_counter()
                engine(tasks, timed_write)
                self.ended = time.perf_counter()

            return run

        return make


def audit_config(out: Path, engine: str, per_group: int, samples: int) -> AuditConfig:
    return AuditConfig(dataset="demo", generator="dcgan-digiface", factor=4, per_group=per_group, samples=samples,
                       classifiers=("skin-tone", "age-gender", "identity"), device="cpu", engine=engine, out=str(out))


def timed_run(config: AuditConfig) -> dict:
    observed = Observed()
    real = harness.make_engine
    harness.make_engine = observed.wrap(real)
    load = os.getloadavg()[0]
    cpu = cpu_seconds()
    began = time.perf_counter()
    try:
        run_audit(config)
    finally:
        harness.make_engine = real
    wall = time.perf_counter() - began
    return {"engine": config.engine, "wall": wall, "cpu": cpu_seconds() - cpu, **observed.stages,
            "chunks": observed.chunks,
            "before": observed.began - began, "after": began + wall - observed.ended, "load": load,
            "load_after": os.getloadavg()[0], "rows": read_results(Path(config.out)).to_pylist(),
            "search_setup": observed.searcher.setup if observed.searcher is not None else None}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its ended children (the search process)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def same_rows(a: list[dict], b: list[dict]) -> bool:
    def equal(x, y):
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))

    return len(a) == len(b) and all(equal(x[k], y[k]) for x, y in zip(a, b) for k in x if k not in TIMING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--per-group", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    setup = prepare_search(torch.get_num_threads())
    print(f"this process (sequential engine's search): {setup}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        warm = AuditConfig.from_mapping(dict(dataset="demo", factor=4, per_group=1, samples=1, steps=2, restarts=1,
                                             device="cpu", out=str(Path(tmp) / "warm-up")))
        run_audit(warm)
        for repeat in range(args.repeats):
            pair = {}
            for engine in ENGINES:
                pair[engine] = timed_run(audit_config(Path(tmp) / f"{engine}-{repeat}", engine, args.per_group,
                                                      args.samples))
                r = pair[engine]
                print(f"{engine:10s} wall {r['wall']:6.1f} s  cpu {r['cpu']:6.1f} s  search {r['search']:6.1f}  "
                      f"classify {r['classify']:5.1f}  encode {r['encode']:4.2f}  write {r['write']:4.2f}  "
                      f"before chunks {r['before']:4.1f}  after {r['after']:4.2f}  "
                      f"load {r['load']:.1f}→{r['load_after']:.1f}", flush=True)
            if not same_rows(pair["sequential"]["rows"], pair["local"]["rows"]):
                raise SystemExit("the two engines stored different rows: the comparison is void")
            if pair["local"]["search_setup"] != setup:
                raise SystemExit(f"the search process was set up otherwise ({pair['local']['search_setup']}): the "
                                 "comparison is void")
            runs.append(pair)
    text = report(runs, args, setup)
    print(text)
    if args.out:
        append_results(args.out, text)


def report(runs: list[dict], args: argparse.Namespace, setup: str) -> str:
    now = datetime.datetime.now(datetime.UTC)
    rows = len(runs[0]["local"]["rows"])
    lines = [f"\n## {now:%Y-%m-%d %H:%M} UTC — pipelined harness — {machine()}\n",
             f"`benchmarks/pipeline.py`: demo set, ×4, dcgan-digiface, skin-tone + age-gender + identity, "
             f"per-group {args.per_group} × {args.samples} samples ({rows} rows, {runs[0]['local']['chunks']} "
             "chunks of ≤ 16 outputs), defaults otherwise (100 steps, 3 restarts); sequential and pipelined "
             "engines in one process after an untimed warm-up run; both stored equal rows (timings aside). "
             "Stage times are sums over the chunks; non-search share = 1 − search / wall. Both searches ran "
             f"under the same process setup (this process and the search process): {setup}.\n",
             "| run | engine | load avg (1 min, before→after) | wall (s) | CPU (s) | search (s) | classify (s) "
             "| encode (s) | driver writes (s) | before first chunk (s) | non-search share "
             "| same, vs the sequential search |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, pair in enumerate(runs):
        for engine in ENGINES:
            r = pair[engine]
            vs_seq = 1 - pair["sequential"]["search"] / r["wall"]
            lines.append(f"| {i + 1} | {engine} | {r['load']:.1f}→{r['load_after']:.1f} | {r['wall']:.1f} | "
                         f"{r['cpu']:.1f} | {r['search']:.1f} | {r['classify']:.1f} | {r['encode']:.2f} | "
                         f"{r['write']:.2f} | "
                         f"{r['before']:.1f} | {1 - r['search'] / r['wall']:.1%} | {vs_seq:.1%} |")
        speedup = pair["sequential"]["wall"] / pair["local"]["wall"]
        lines.append(f"| {i + 1} | pipelined vs sequential | | {speedup:.2f}× faster | | | | | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
