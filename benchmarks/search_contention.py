"""Time one chunk's search alone and beside a busy thread, with OpenMP threads spinning or sleeping while they wait.

    python benchmarks/search_contention.py [--repeats 2] [--out benchmarks/RESULTS.md]

The search: the first 8 faces of the demo set's per-group-8 sample, ×4, ``dcgan-digiface``, 2 samples each (one
chunk of ``benchmarks/pipeline.py``'s workload, 16 images), 100 steps, one attempt, batch 16, torch's default
thread count. Each condition runs in a fresh Python (the OpenMP wait policy is read once, when torch loads): one
untimed search, then ``--repeats`` timed ones, each with its wall and CPU seconds (user + system, all threads) and
involuntary context switches. Conditions: ``OMP_WAIT_POLICY`` ACTIVE (threads spin at barriers) or PASSIVE
(they sleep), the process alone or beside one busy Python thread in another process (what the classification
thread of the pipelined engine, or another job, is to the search), and ACTIVE after the three default
classifiers were built and used in the process. The 1-minute load average (all processes of the machine) is
printed beside each condition: other jobs count as well.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CONDITIONS = (("ACTIVE", False, False), ("PASSIVE", False, False), ("ACTIVE", True, False), ("PASSIVE", True, False),
              ("ACTIVE", False, True))
"""(wait policy, beside a busy thread, after the classifiers)."""
BUSY = "while True: pass"


def child(repeats: int, classifiers: bool) -> None:
    """In the fresh Python: build the search and its inputs, search once untimed, then time ``repeats`` searches."""
    import torch

    from audit.run.inputs import load_faceset, prepare_face, sample_faces
    from audit.upsamplers import build_upsampler
    from pulse_engine.search import SearchConfig

    faceset = load_faceset("demo")
    items, _ = sample_faces(faceset, faceset.grouping(()), 8, 0)
    upsampler = build_upsampler("pulse", "dcgan-digiface", None, SearchConfig(steps=100, restarts=1), "cpu", None, 16)
    inputs = [prepare_face(item, upsampler.resolution, 4) for item in items[:8]]
    outputs = upsampler.upsample(inputs, 2)
    if classifiers:
        from audit.classifiers import build_classifier

        images = [(o.image.clamp(0, 1).permute(1, 2, 0) * 255).byte().numpy() for out in outputs for o in out]
        for name in ("skin-tone", "age-gender", "identity"):
            build_classifier(name, "cpu").predict(images[:4])
    runs = []
    for _ in range(repeats):
        before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        upsampler.upsample(inputs, 2)
        after = resource.getrusage(resource.RUSAGE_SELF)
        runs.append({"wall": time.perf_counter() - began,
                     "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                     "switches": after.ru_nivcsw - before.ru_nivcsw})
    print(json.dumps({"threads": torch.get_num_threads(), "runs": runs}))


def measure(policy: str, busy: bool, classifiers: bool, repeats: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")])}
    hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    load = os.getloadavg()[0]
    try:
        done = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(repeats)]
                              + (["--classifiers"] if classifiers else []),
                              capture_output=True, text=True, env=env, check=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"policy": policy, "busy": busy, "classifiers": classifiers, "load": load,
            "load_after": os.getloadavg()[0], **result}


def report(results: list[dict], repeats: int) -> str:
    from instruments import machine

    now = datetime.datetime.now(datetime.UTC)
    lines = [f"\n## {now:%Y-%m-%d %H:%M} UTC — one chunk's search under contention — {machine()}\n",
             "`benchmarks/search_contention.py`: one chunk of the pipeline workload (8 demo faces × 2 samples, ×4, "
             "dcgan-digiface, 100 steps, one attempt, batch 16), each condition in a fresh Python, one untimed "
             f"search then {repeats} timed (median, min–max); CPU = user + system of all threads.\n",
             "| OMP_WAIT_POLICY | beside a busy thread | classifiers used first | torch threads | load avg (1 min, "
             "before→after) | wall s median (min–max) | CPU s median | involuntary switches median |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        walls = [run["wall"] for run in r["runs"]]
        lines.append(f"| {r['policy']} | {'yes' if r['busy'] else 'no'} | {'yes' if r['classifiers'] else 'no'} | "
                     f"{r['threads']} | {r['load']:.2f}→{r['load_after']:.2f} | {statistics.median(walls):.2f} "
                     f"({min(walls):.2f}–{max(walls):.2f}) | {statistics.median(run['cpu'] for run in r['runs']):.2f} "
                     f"| {statistics.median(run['switches'] for run in r['runs']):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--classifiers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.repeats, args.classifiers)
        return
    results = []
    for policy, busy, classifiers in CONDITIONS:
        results.append(measure(policy, busy, classifiers, args.repeats))
        r = results[-1]
        print(f"{policy:7s} busy={busy!s:5s} classifiers={classifiers!s:5s} walls "
              f"{[round(run['wall'], 2) for run in r['runs']]} cpu {[round(run['cpu'], 2) for run in r['runs']]} "
              f"load {r['load']:.2f}→{r['load_after']:.2f}", flush=True)
    text = report(results, args.repeats)
    print(text)
    if args.out:
        from instruments import append_results

        append_results(args.out, text)


if __name__ == "__main__":
    main()
