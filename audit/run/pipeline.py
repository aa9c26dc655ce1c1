"""Local engines: run a run's chunk tasks in this machine, the driver writing every result.

An engine takes the tasks (in chunk order) and ``write``, and calls ``write(result)`` in the calling
thread for every task's :class:`~audit.run.chunk_worker.ChunkResult`; the caller (the harness) is the only
writer of the run store. The engines here hand results over in task order, so what is stored, and in
which parts, never depends on thread timing.

- :func:`run_sequential` (``--engine sequential``): search, then classify and encode, then write, one
  chunk after the other, all in this thread.
- :func:`run_pipelined`: a search thread and a finishing thread (classification and PNG encoding), so
  that chunk c is searched while chunk c−1 is finished and written, and chunk c+1 planned. A task is
  taken from ``tasks`` only when fewer than :data:`DEPTH` chunks are unwritten, so memory stays bounded.
- :func:`run_local` (``--engine local``, the default): :func:`run_pipelined` with the search in a child
  process (:mod:`audit.run.search_process`), because some classifiers (dlib's) hold the GIL while they
  compute and would stall a search thread; in threads only when there is no search worth a process.
  The caller starts that process early, so that it loads while the run's other models load.

Errors: an exception while computing chunk c reaches the caller when chunk c's turn comes, after every
earlier chunk was written (as in the sequential engine); an exception while planning (from ``tasks``) is
raised once the chunks already handed over are written. The stages are then stopped: a search process
at once; the threads after the chunk they are working on (so nothing else uses the worker afterwards),
also on a KeyboardInterrupt: a thread left inside native code while the interpreter shuts down aborts the
process. A Ctrl-C therefore waits for the chunk being finished, and, when the search runs in a thread
(no search process), for the chunk being searched.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .chunk_worker import ChunkResult, ChunkTask, ChunkWorker, Searched, WorkerSpec
from .search_process import SearchProcess

Write = Callable[[ChunkResult], None]
Engine = Callable[[Iterable[ChunkTask], Write], None]
"""Runs every task and calls ``write`` with each result, in the caller's thread."""
DEPTH = 2
"""Chunks handed to the pipelined stages and not yet written (one searched, one finished)."""
SEARCHING = ("pulse",)
"""Upsamplers whose work is a search worth a process of its own (the others interpolate or read files)."""
_END = object()


def run_sequential(worker: ChunkWorker, tasks: Iterable[ChunkTask], write: Write) -> None:
    """Each task in turn: search, classify and encode, write."""
    for task in tasks:
        write(worker.run(task))


class _Stage:
    """A daemon thread applying ``step`` to what arrives in its inbox, in order, into ``outbox``; an
    exception becomes the item (passed on untouched by later stages)."""

    def __init__(self, step: Callable[[Any], Any], outbox: queue.Queue, stop: threading.Event, name: str) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.step, self.outbox, self.stop = step, outbox, stop
        self.thread = threading.Thread(target=self.loop, name=name, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while True:
            item = self.inbox.get()
            if item is _END:
                self.outbox.put(_END)
                return
            if self.stop.is_set():
                continue
            if not isinstance(item, BaseException):
                try:
                    item = self.step(item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller in the chunk's turn
                    item = exc
            self.outbox.put(item)


def run_local(worker: ChunkWorker, searcher: SearchProcess | None, tasks: Iterable[ChunkTask], write: Write) -> None:
    """``--engine local``: :func:`run_pipelined`, searching in ``searcher`` (a child process started by the
    caller, see :func:`search_process_pays`) when given, else in a thread."""
    if searcher is None:
        run_pipelined(worker, tasks, write)
    else:
        run_pipelined(worker, tasks, write, search=searcher.search, cancel=searcher.kill)


def search_process_pays(spec: WorkerSpec, chunks: int) -> bool:
    """Whether a search process is worth starting: a :data:`SEARCHING` upsampler and at least two chunks
    to compute (else starting a Python costs more than the overlap saves)."""
    return spec.upsampler in SEARCHING and chunks >= 2


def run_pipelined(worker: ChunkWorker, tasks: Iterable[ChunkTask], write: Write, depth: int = DEPTH,
                  search: Callable[[ChunkTask], Searched] | None = None, cancel: Callable[[], None] = lambda: None
                  ) -> None:
    """Search, finishing and writing overlap (see the module docstring); results are written in task order.
    ``search`` replaces ``worker.search`` (e.g. :meth:`SearchProcess.search`); ``cancel`` stops it at once
    when the run stops early (e.g. :meth:`SearchProcess.kill`)."""
    results: queue.Queue = queue.Queue()
    stop = threading.Event()
    finishing = _Stage(worker.finish, results, stop, "audit-finish")
    searching = _Stage(search or worker.search, finishing.inbox, stop, "audit-search")
    in_flight = 0

    def write_next() -> None:
        nonlocal in_flight
        result = results.get()
        in_flight -= 1
        if isinstance(result, BaseException):
            raise result
        write(result)

    try:
        planned = iter(tasks)
        while True:
            while in_flight >= depth:
                write_next()
            try:
                task = next(planned)
            except StopIteration:
                break
            except Exception:
                while in_flight:
                    write_next()
                raise
            searching.inbox.put(task)
            in_flight += 1
        while in_flight:
            write_next()
    except BaseException:
        cancel()
        _stop(searching, finishing, stop)
        raise
    _stop(searching, finishing, stop)


def _stop(searching: _Stage, finishing: _Stage, stop: threading.Event) -> None:
    """End both threads and return once they have: work not started is dropped. Also on a KeyboardInterrupt:
    a thread left inside native code (dlib, torch) while the interpreter shuts down aborts the process
    ("terminate called without an active exception", exit −6 instead of 130; seen once in a fresh-clone
    ``make test``)."""
    stop.set()
    searching.inbox.put(_END)
    searching.thread.join()
    finishing.thread.join()
