"""The chunk worker and the local engines: the worker's results are exactly what a run stores, the
pipelined engine stores what the sequential one does, resume with a partly stored chunk is exact, the
pipeline's order, overlap, bounds and errors (checked with events, never with timers), and the search
process's errors and death with its run."""

from __future__ import annotations

import math
import pickle
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from held_child import HeldChild, python_command
from test_harness import config, fakes, make_faceset, rows_by_key  # noqa: F401 - fakes is a fixture

import audit.run.chunk_worker as chunk_worker
import audit.run.harness as harness
from audit.core.records import UpsampleInput
from audit.core.schema import SOURCE_STAMP, STAMP_STAT_FIELDS
from audit.run.chunk_worker import ChunkResult, ChunkTask, ChunkWorker, Job, WorkerSpec
from audit.run.harness import run_audit
from audit.run.pipeline import DEPTH, run_pipelined, run_sequential
from audit.run.run_store import read_results
from audit.run.search_process import SearchProcess
from audit.upsamplers import build_upsampler
from pulse_engine.errors import PulseAuditError
from pulse_engine.search import SearchConfig

TIMING = ("t_upsample_s", "t_classify_s", "ups_batch_seconds", "ups_seconds")
HANG_GUARD_S = 120  # only ever reached when the code under test is broken


def comparable(row: dict) -> dict:
    """The row without wall times, run id and its face file's ``stat`` fields (each run writes its own copy
    of the face set: same bytes, same ``source_sha256``, other times and inode)."""
    ignored = (*TIMING, "run_id", *(SOURCE_STAMP + field for field in STAMP_STAT_FIELDS))
    return {k: v for k, v in row.items() if k not in ignored}


def equal_rows(a: dict, b: dict) -> bool:
    a, b = comparable(a), comparable(b)
    return a.keys() == b.keys() and all(a[k] == b[k] or (isinstance(a[k], float) and isinstance(b[k], float)
                                                         and math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def images(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "images").rglob("*.png"))}


def part_keys(root: Path) -> list[list[tuple[str, int]]]:
    tables = [pq.read_table(p) for p in sorted((root / "parts").glob("part-*.parquet"))]
    return [list(zip(t.column("item_id").to_pylist(), t.column("sample").to_pylist())) for t in tables]


SETTINGS = dict(samples=2, ucpr=2, per_group=2, group_by="race,gender", batch_size=4, steps=3)


def test_a_fresh_worker_on_the_pickled_tasks_returns_what_the_run_stored(tmp_path, fakes, monkeypatch):  # noqa: F811
    """Tasks and results cross a pickle; a worker built elsewhere from the run's spec returns the stored
    rows and the stored PNG bytes."""
    captured: list[bytes] = []
    specs = []
    real_make_engine = harness.make_engine

    def recording(settings, spec, *rest):
        specs.append(spec)
        engine = real_make_engine(settings, spec, *rest)

        def run(tasks, write):
            def keep(tasks):
                for task in tasks:
                    captured.append(pickle.dumps(task))
                    yield task
            engine(keep(tasks), write)

        return run

    monkeypatch.setattr(harness, "make_engine", recording)
    root = run_audit(config(tmp_path, **SETTINGS))
    stored, files = rows_by_key(root), images(root)
    assert len(stored) == 8 * 2 + 4 * 2 and captured
    monkeypatch.setattr(chunk_worker, "build_classifier", lambda spec, device: harness.build_classifier(spec, device))
    worker = ChunkWorker.from_spec(pickle.loads(pickle.dumps(specs[0])))
    seen_rows, seen_images = 0, {}
    for blob in captured:
        task = pickle.loads(blob)
        result = pickle.loads(pickle.dumps(worker.run(task)))
        assert result.index == task.index and len(result.rows) == task.rows_wanted()
        for row in result.rows:
            kept = stored[(row["item_id"], row["sample"])]
            assert equal_rows(row, {k: kept[k] for k in row}), row["item_id"]
            assert all(kept[k] is None for k in kept.keys() - row.keys() - {"run_id"})  # other rows' columns
        seen_rows += len(result.rows)
        seen_images |= result.images
    assert seen_rows == len(stored)
    assert seen_images == files  # every stored PNG, byte for byte, and nothing else


def test_pipelined_and_sequential_engines_store_the_same_parts(tmp_path, fakes):  # noqa: F811
    runs = {engine: run_audit(config(tmp_path, out=str(tmp_path / engine), engine=engine, **SETTINGS))
            for engine in ("sequential", "local")}
    a, b = (read_results(runs[e]).to_pylist() for e in ("sequential", "local"))
    assert len(a) == len(b) == 24 and all(equal_rows(x, y) for x, y in zip(a, b))
    assert part_keys(runs["sequential"]) == part_keys(runs["local"])
    assert images(runs["sequential"]) == images(runs["local"])
    with pytest.raises(PulseAuditError, match="unknown engine 'gpu'"):
        run_audit(config(tmp_path, engine="gpu"))


def test_resume_of_a_partly_stored_chunk_searches_the_same_batch(tmp_path, fakes):  # noqa: F811
    """Chunks are fixed: with one row of a chunk missing, the resumed session searches that chunk whole
    again (the same batch, so the same bits) and stores only the missing row; a missing part is redone."""
    whole = run_audit(config(tmp_path, out=str(tmp_path / "whole"), **SETTINGS))
    cut = run_audit(config(tmp_path, out=str(tmp_path / "cut"), **SETTINGS))
    parts = sorted((cut / "parts").glob("part-*.parquet"))
    table = pq.read_table(parts[2])
    assert table.num_rows == 4  # two inputs × two samples
    pq.write_table(table.slice(0, 3), parts[2])  # one row of chunk 2 lost
    parts[4].unlink()  # a whole chunk lost
    (cut / "results.parquet").unlink()
    run_audit(config(tmp_path, out=str(tmp_path / "cut"), engine="sequential", **SETTINGS))
    final, reference = read_results(cut).to_pylist(), rows_by_key(whole)
    keys = [(row["item_id"], row["sample"]) for row in final]
    assert len(keys) == len(set(keys)) == len(reference)
    assert all(equal_rows(row, reference[(row["item_id"], row["sample"])]) for row in final)
    assert images(cut) == images(whole)
    assert [len(k) for k in part_keys(cut)[-2:]] == [1, 4]  # in chunk order: the lost row, the lost chunk


# ------------------------------------------------------------------------------------------ the pipeline


class Scripted:
    """A stand-in worker that records the order of its stages; ``hooks`` run at named stage events."""

    def __init__(self, hooks: dict | None = None) -> None:
        self.events: list[str] = []
        self.hooks = hooks or {}
        self.lock = threading.Lock()

    def mark(self, event: str) -> None:
        with self.lock:
            self.events.append(event)
        if event in self.hooks:
            self.hooks[event]()

    def search(self, task: ChunkTask):
        self.mark(f"search {task.index}")
        return task

    def finish(self, task: ChunkTask) -> ChunkResult:
        self.mark(f"finish {task.index}")
        return ChunkResult(task.index, [{"item_id": str(task.index), "sample": 0}], {}, {})

    def run(self, task: ChunkTask) -> ChunkResult:
        return self.finish(self.search(task))


def tasks(count: int, log: list[str] | None = None):
    for index in range(count):
        if log is not None:
            log.append(f"plan {index}")
        yield ChunkTask(index, 1, [Job("face", str(index), [0])])


def test_the_search_of_the_next_chunk_overlaps_the_finishing_of_the_previous():
    """finish 0 cannot end before search 1 has begun: possible only when the stages overlap."""
    searched_1, overlapped = threading.Event(), []
    worker = Scripted({"search 1": searched_1.set,
                       "finish 0": lambda: overlapped.append(searched_1.wait(HANG_GUARD_S))})
    written: list[int] = []
    run_pipelined(worker, tasks(5), lambda result: written.append(result.index))
    assert overlapped == [True] and written == [0, 1, 2, 3, 4]
    sequential = Scripted()
    run_sequential(sequential, tasks(3), lambda result: None)
    assert sequential.events == ["search 0", "finish 0", "search 1", "finish 1", "search 2", "finish 2"]


def test_results_are_written_in_task_order_with_bounded_chunks_in_flight():
    """Writes follow task order, and a task is planned only once all but DEPTH - 1 earlier ones are written."""
    log: list[str] = []
    worker = Scripted()
    written: list[int] = []

    def write(result: ChunkResult) -> None:
        log.append(f"write {result.index}")
        written.append(result.index)

    run_pipelined(worker, tasks(8, log), write)
    assert written == list(range(8))
    for index in range(8):  # chunk i is planned only once chunk i - DEPTH is written
        if index >= DEPTH:
            assert log.index(f"write {index - DEPTH}") < log.index(f"plan {index}")


def test_a_failing_chunk_stops_the_run_after_the_earlier_chunks_are_written():
    def boom() -> None:
        raise RuntimeError("search failed on chunk 2")

    worker = Scripted({"search 2": boom})
    written: list[int] = []
    with pytest.raises(RuntimeError, match="chunk 2"):
        run_pipelined(worker, tasks(6), lambda result: written.append(result.index))
    assert written == [0, 1]
    assert not any(t.name.startswith("audit-") for t in threading.enumerate())  # stages ended, none left running


def test_a_planning_error_is_raised_after_the_chunks_in_flight_are_written():
    def planned():
        yield from tasks(2)
        raise PulseAuditError("cannot average the group faces")

    written: list[int] = []
    with pytest.raises(PulseAuditError, match="average"):
        run_pipelined(Scripted(), planned(), lambda result: written.append(result.index))
    assert written == [0, 1]


def test_an_interrupt_while_writing_stops_the_stages_before_it_returns():
    """A KeyboardInterrupt in the writer (Ctrl-C) reaches the caller once the stage threads have ended: a search
    thread in the middle of a chunk finishes that chunk, no later chunk is started, and no ``audit-`` thread is
    left running (one left inside native code while the interpreter shuts down aborts the process)."""
    interrupted, searching_1 = threading.Event(), threading.Event()
    searched = []

    def search_1() -> None:
        searching_1.set()
        interrupted.wait(HANG_GUARD_S)  # still searching when the writer is interrupted
        searched.append(1)

    worker = Scripted({"search 1": search_1, "search 2": lambda: searched.append(2),
                       "search 3": lambda: searched.append(3)})

    def write(result: ChunkResult) -> None:
        searching_1.wait(HANG_GUARD_S)
        interrupted.set()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipelined(worker, tasks(4), write)
    assert interrupted.is_set() and searched == [1]  # chunk 1 was finished, chunks 2 and 3 never started
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("audit-")]


# ------------------------------------------------------------------------------------------ the search process


def test_the_search_process_reports_its_errors_in_one_line(tmp_path):
    """An error while building the child's upsampler, or in a search, is raised here in the chunk's turn;
    a child that dies is a one-line error (and the run can be resumed)."""
    spec = WorkerSpec("pulse", "no-such-generator", None, SearchConfig(steps=2, restarts=1), "cpu", None, 4, (), (),
                      ())
    with pytest.raises(PulseAuditError, match="no-such-generator"), SearchProcess(spec) as searcher:
        searcher.search(ChunkTask(0, 1, []))
    good = WorkerSpec("pulse", "dcgan-tiny", None, SearchConfig(steps=2, restarts=1), "cpu", None, 4, (), (), ())
    task = ChunkTask(0, 2, [Job("face", "x", [0, 1], input=UpsampleInput("x", torch.rand(3, 8, 8)))])
    with SearchProcess(good) as searcher:
        here = ChunkWorker(build_upsampler("pulse", "dcgan-tiny", None, good.search, "cpu", None, 4), [], {}, ())
        there = searcher.search(task)
        assert [[torch.equal(a.image, b.image) for a, b in zip(x, y)]
                for x, y in zip(there.outputs, here.search(task).outputs)] == [[True, True]]
        bad = ChunkTask(1, 1, [Job("face", "y", [0], input=UpsampleInput("y", torch.rand(3, 5, 5)))])
        with pytest.raises(Exception, match="5"):  # 32 px is not a multiple of 5: the search's own error
            searcher.search(bad)
        searcher.process.kill()
        with pytest.raises(PulseAuditError, match="search process ended unexpectedly.*resume"):
            searcher.search(task)


def _search_children(parent: int) -> list[int]:
    """Pids of the search processes started by ``parent`` (from their command lines)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "audit.run.search_process import serve" in command and f", {parent})" in command:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")
def test_the_search_process_dies_with_a_killed_run(tmp_path):
    dataset = make_faceset(tmp_path / "set", count=4, broken=False)
    command = [*python_command("audit"), "run", "--dataset", f"folder:{dataset}", "--generator", "dcgan-tiny",
               "--classifiers", "skin-tone", "--per-group", "0", "--factor", "4", "--steps", "5", "--restarts", "1",
               "--batch-size", "1", "--device", "cpu", "--out", str(tmp_path / "run")]
    child = HeldChild(command, tmp_path / "gate", "part", 2)
    child.wait_held()
    searchers = _search_children(child.process.pid)
    assert len(searchers) == 1
    child.signal(signal.SIGKILL)
    deadline = time.monotonic() + HANG_GUARD_S
    while Path(f"/proc/{searchers[0]}").exists() and not _reaped(searchers[0]):
        assert time.monotonic() < deadline, "the search process outlived its run"
        time.sleep(0.01)  # polls for progress; no outcome depends on this delay


def _reaped(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie (dead, waiting for init to reap it)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
