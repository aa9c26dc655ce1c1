"""The chunk worker and the local engines: the worker's results are exactly what a run stores, the
pipelined engine stores what the sequential one does, resume with a partly stored chunk is exact, and
the pipeline's order, overlap, bounds and errors (checked with events, never with timers)."""

from __future__ import annotations

import math
import pickle
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_harness import config, fakes, rows_by_key  # noqa: F401 - fakes is a fixture

import audit.chunk_worker as chunk_worker
import audit.harness as harness
from audit.chunk_worker import ChunkResult, ChunkTask, ChunkWorker, Job
from audit.harness import run_audit
from audit.pipeline import DEPTH, run_pipelined, run_sequential
from audit.run_store import read_results
from pulse_engine.errors import PulseAuditError

TIMING = ("t_upsample_s", "t_classify_s", "ups_batch_seconds", "ups_seconds")
HANG_GUARD_S = 120  # only ever reached when the code under test is broken


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in (*TIMING, "run_id")}


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

    def recording(settings, spec, worker):
        specs.append(spec)
        engine = real_make_engine(settings, spec, worker)

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


def test_an_interrupt_while_writing_returns_at_once():
    """A KeyboardInterrupt in the writer (Ctrl-C) is not held up by the stages: a search that would only
    end after the interrupt is handled does not delay it."""
    release = threading.Event()
    worker = Scripted({"search 1": lambda: release.wait(HANG_GUARD_S)})

    def write(result: ChunkResult) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipelined(worker, tasks(4), write)
    assert not release.is_set()  # returned while chunk 1's search was still blocked
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith("audit-"):
            thread.join(HANG_GUARD_S)  # the stages end by themselves once released
