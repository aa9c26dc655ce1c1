"""The search stage in a child process: so that it overlaps the classification for real.

Some classifiers hold Python's GIL while they compute (dlib's detector and face descriptor, the
``identity`` classifier: measured, a Python thread beside it advances about 5× slower), so a search
thread in the same process would wait for them. :class:`SearchProcess` runs
:meth:`audit.run.chunk_worker.ChunkWorker.search` in a child Python (``python -c``, this interpreter, this
``sys.path``; never a re-import of the caller's main script) built from the run's
:class:`~audit.run.chunk_worker.WorkerSpec` (the upsampler only), set up by
:func:`prepare_search` with the run's torch threads (``spec.threads``, else the parent's), as ``pulse-audit run``
sets up its own process: results do not depend on which
process searched (the same batch gives the same bits), and neither should the speed of a search
(:attr:`SearchProcess.setup` says how the child was set up, so a measurement can state it). Tasks go to the
child and outputs come back over a socket pair as pickles made by this code. The child ignores SIGINT
(Ctrl-C reaches the parent, which stops it), dies with its parent (Linux ``PR_SET_PDEATHSIG``; elsewhere
it ends when the socket closes) and never touches the run store.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

import torch

from pulse_engine.allocator import keep_large_buffers
from pulse_engine.errors import PulseAuditError

from .chunk_worker import ChunkTask, ChunkWorker, Searched, WorkerSpec

PR_SET_PDEATHSIG = 1
BOOT = "import sys; sys.path[:0] = {paths!r}; from audit.run.search_process import serve; serve({fd}, {parent})"


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent ends (no-op elsewhere); exit if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def prepare_search(threads: int) -> str:
    """Set up this process for searching, as the search process, Ray actors and ``pulse-audit run`` do: ``threads``
    torch threads and glibc's large buffers kept (:func:`~pulse_engine.allocator.keep_large_buffers`); returns
    one line saying so (with the OpenMP wait policy, which decides whether idle threads spin)."""
    torch.set_num_threads(threads)
    malloc = keep_large_buffers()
    policy = os.environ.get("OMP_WAIT_POLICY") or "unset (libgomp spins a while before it sleeps)"
    return f"torch threads {torch.get_num_threads()}; {malloc}; OMP_WAIT_POLICY {policy}"


def serve(fd: int, parent: int) -> None:
    """The child: receive the spec and the thread count, set up (:func:`prepare_search`), build the upsampler,
    reply how it was set up (or the error), then search each task received until told to stop (or the
    socket closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    conn = Connection(fd)
    spec, threads = pickle.loads(conn.recv_bytes())
    setup = prepare_search(threads)
    try:
        worker = ChunkWorker.from_spec(spec, classify=False)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent in its first reply
        _reply(conn, exc)
        return
    _reply(conn, setup)
    while True:
        try:
            task = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        if task is None:
            return
        try:
            searched = worker.search(task)
            reply: Any = (searched.outputs, searched.seconds)
        except BaseException as exc:  # noqa: BLE001 - the parent raises it in the chunk's turn
            reply = exc
        _reply(conn, reply)


def _reply(conn: Connection, value: Any) -> None:
    """Send ``value``; an exception that cannot be pickled is sent as a RuntimeError with its message."""
    try:
        data = pickle.dumps(value)
    except Exception:  # noqa: BLE001
        data = pickle.dumps(RuntimeError(f"{type(value).__name__}: {value}"))
    conn.send_bytes(data)


class SearchProcess:
    """A child process that searches chunk tasks; use as a context manager (it is stopped on exit).
    :attr:`setup` is the child's :func:`prepare_search` line once it is ready (empty before :meth:`wait_ready`)."""

    def __init__(self, spec: WorkerSpec) -> None:
        mine, theirs = socket.socketpair()
        paths = [path for path in sys.path if path]
        command = [sys.executable, "-c", BOOT.format(paths=paths, fd=theirs.fileno(), parent=os.getpid())]
        try:
            self.process = subprocess.Popen(command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.conn = Connection(mine.detach())
        self.conn.send_bytes(pickle.dumps((spec, spec.threads or torch.get_num_threads())))
        self.setup = ""

    def _receive(self) -> Any:
        try:
            return pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            code = self.process.wait()
            raise PulseAuditError(f"the search process ended unexpectedly (exit code {code}); the rows stored "
                                  "so far are kept: run the same command to resume") from exc

    def wait_ready(self) -> str:
        """Wait until the child has built its upsampler (raise its error if it could not); its :attr:`setup`."""
        if not self.setup:
            reply = self._receive()
            if isinstance(reply, BaseException):
                raise reply
            self.setup = reply
        return self.setup

    def search(self, task: ChunkTask) -> Searched:
        """Search ``task`` in the child (as :meth:`ChunkWorker.search` would here)."""
        self.wait_ready()
        self.conn.send_bytes(pickle.dumps(task))
        reply = self._receive()
        if isinstance(reply, BaseException):
            raise reply
        outputs, seconds = reply
        return Searched.of(task, outputs, seconds)

    def kill(self) -> None:
        """Stop the child at once (its current search is lost); a waiting :meth:`search` then raises."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """Let the child end after its current task and wait for it."""
        with contextlib.suppress(OSError):
            self.conn.send_bytes(pickle.dumps(None))
        self.process.wait()
        self.conn.close()

    def __enter__(self) -> SearchProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.kill()
            self.conn.close()
