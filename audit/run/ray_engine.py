"""Scale-out on Ray (``--engine ray``): Ray actors compute a run's chunks, the driver alone stores them.

Each actor builds one :class:`~audit.run.chunk_worker.ChunkWorker` from the run's
:class:`~audit.run.chunk_worker.WorkerSpec`, so it loads the generator and the classifiers once (one actor per
GPU with ``gpus_per_worker`` 1, CPU actors otherwise), and turns :class:`~audit.run.chunk_worker.ChunkTask` s
into :class:`~audit.run.chunk_worker.ChunkResult` s: rows and encoded PNG bytes, never a file. The driver gives
chunk *i* of the session to actor *i* mod N, keeps at most :data:`DEPTH` chunks per actor in flight, and
hands the results to the harness's ``write`` in chunk order, in its own thread: it stays the run store's
only writer, so resume and the store's guarantees are unchanged, and since every engine searches the same
fixed chunks (:mod:`audit.run.harness`) the rows are those of ``--engine local``.

Faults: an actor whose process dies is started again (up to :data:`RESTARTS` times) and the chunks it had
not returned are computed again; a chunk's result depends only on the chunk, so nothing is lost or stored
twice. An actor that cannot start (e.g. missing weights on a node) or that keeps dying is one line; the
rows stored so far are kept and the same command resumes.

Cluster: without an address, a private local cluster of this machine's CPUs (and GPUs) that ends with the
run, without dashboard; Ray's token for it lives in its processes' environment, never in ``~/.ray``, and
its session files go to ``$RAY_TMPDIR/ray`` (default ``/tmp/ray``). With an address (``HOST:PORT``,
``ray://HOST:PORT`` or ``auto``), the run joins that cluster, whose nodes need pulse-audit and the weights
installed; no Ray answering there within :data:`CONNECT_TIMEOUT_S` is one line (Ray's own connect retries
for minutes). A missing Ray is one line; Ray is imported only here, only for this engine.

Test hook: an actor passes :func:`audit.run.run_store.hold_point` ``("task")`` as each chunk starts, so a test
can stop actors mid-run and kill one (:data:`audit.run.run_store.HOLD_VARIABLE`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

from pulse_engine.errors import PulseAuditError

from .chunk_worker import ChunkResult, ChunkTask, ChunkWorker, WorkerSpec
from .pipeline import Engine, Write
from .run_store import hold_point
from .search_process import prepare_search

RESTARTS = 3
"""Times an actor whose process died is started again (and its unfinished chunks re-run)."""
DEPTH = 2
"""Chunks in flight per actor: one computing, one waiting, so an actor never waits for the driver."""
CONNECT_TIMEOUT_S = 30.0
"""Bound on each check that a Ray cluster answers at ``--ray-address`` (:func:`check_reachable`)."""
PROBE = ("import logging, sys, ray; ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False); "
         "ray.shutdown()")
INSTALL_HINT = "pip install 'pulse-audit[ray]'"
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@dataclass(frozen=True)
class RayOptions:
    """``address``: the cluster to join ('' = a private local one); ``workers``: actors (0 = one per GPU
    with ``gpus_per_worker``, else one per CPU of the cluster); ``gpus_per_worker``: GPUs per actor
    (fractions share a GPU; 0 = CPU actors)."""

    address: str = ""
    workers: int = 0
    gpus_per_worker: float = 0.0


class ChunkActor:
    """The body of one Ray actor: a chunk worker built once, then one chunk per call."""

    def __init__(self, spec: WorkerSpec) -> None:
        if spec.threads:
            prepare_search(spec.threads)  # the driver's threads, not Ray's OMP_NUM_THREADS=1: the same rows
        self.worker = ChunkWorker.from_spec(spec)

    def run(self, task: ChunkTask) -> ChunkResult:
        hold_point("task")
        return self.worker.run(task)

    def pid(self) -> int:
        return os.getpid()


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise PulseAuditError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """One-line error unless a Ray cluster answers at ``address`` within ``timeout`` seconds: first a TCP
    connection to its port (refused or unrouted fails at once; ``auto`` has none), then Ray's own connect in
    a child process killed at the bound (in this process it would retry for minutes)."""
    if address != "auto":
        host, _, port = address.split("://", 1)[-1].rpartition(":")
        if not host or not port.isdigit():
            raise PulseAuditError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as exc:
            reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise PulseAuditError(f"no Ray cluster reachable at {address} ({reason}); start one with "
                                  "`ray start --head` or fix --ray-address") from None
    try:
        probe = subprocess.run([sys.executable, "-c", PROBE, address], capture_output=True, text=True,
                               timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PulseAuditError(f"no Ray cluster answered at {address} within {timeout:g} s (is it a Ray head "
                              "node's GCS port, e.g. 6379, or a Ray client address ray://HOST:10001?)") from None
    if probe.returncode:
        raise PulseAuditError(f"cannot join the Ray cluster at {address}: {last_line(probe.stderr)}")


def check_ray(address: str) -> None:
    """One line unless Ray is installed and, with an ``address``, a cluster answers there."""
    import_ray()
    if address:
        check_reachable(address)


def ray_engine(options: RayOptions, spec: WorkerSpec) -> Engine:
    """The engine (see :mod:`audit.run.pipeline`) that runs chunks on Ray actors built from ``spec``."""
    ray = import_ray()
    device = "cuda" if options.gpus_per_worker else "cpu"
    if spec.device not in ("auto", device) and not spec.device.startswith(device):
        raise PulseAuditError(f"--device {spec.device} with --engine ray: the actors use "
                              f"{'GPUs' if options.gpus_per_worker else 'CPUs'} (set --gpus-per-worker)")
    spec = replace(spec, device=device)

    def engine(tasks: Iterable[ChunkTask], write: Write) -> None:
        with connected(ray, options.address):
            run_chunks(ray, start_actors(ray, options, spec), tasks, write)

    return engine


@contextlib.contextmanager
def connected(ray: ModuleType, address: str) -> Iterator[None]:
    """Join the cluster at ``address``, or start a private local one, for the duration of the block."""
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if not address and not any(os.environ.get(name) for name in AUTH_VARIABLES):
        # Ray's token auth without writing ~/.ray/auth_token: one token for this process and its children
        # (Ray caches the first token it reads, so later local clusters of this process reuse it)
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(address="local", include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, OSError, ValueError) as exc:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray cluster"
        raise PulseAuditError(f"cannot {where}: {first_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def start_actors(ray: ModuleType, options: RayOptions, spec: WorkerSpec) -> list[Any]:
    """Start the actors the cluster can hold and wait until each has loaded its models: ``options.workers``, else
    one per GPU (``gpus_per_worker``), else one per ``spec.threads`` CPUs of the cluster."""
    resources = ray.cluster_resources()
    cpus, gpus, per_gpu = int(resources.get("CPU", 0)), resources.get("GPU", 0.0), options.gpus_per_worker
    threads = max(1, spec.threads)
    workers = options.workers or (int(gpus // per_gpu) if per_gpu else max(1, cpus // threads))
    if per_gpu and workers * per_gpu > gpus:
        raise PulseAuditError(f"the Ray cluster has {gpus:g} GPUs; {max(workers, 1)} workers × {per_gpu:g} GPUs "
                              "do not fit (lower --workers or --gpus-per-worker)")
    if workers > cpus or not workers:
        raise PulseAuditError(f"the Ray cluster has {cpus} CPUs; each worker needs one (lower --workers)")
    # one CPU reserved per actor (always schedulable while workers ≤ CPUs), whatever its threads: the default count
    # of CPU actors leaves a CPU per thread, an explicit --workers may ask for more threads than CPUs
    actor_class = ray.remote(ChunkActor).options(num_cpus=1, num_gpus=per_gpu, max_restarts=RESTARTS,
                                                 max_task_retries=RESTARTS)
    actors = [actor_class.remote(spec) for _ in range(workers)]
    for actor in actors:
        result(ray, actor.pid.remote())
    return actors


def run_chunks(ray: ModuleType, actors: list[Any], tasks: Iterable[ChunkTask], write: Write) -> None:
    """Chunk i to actor i mod N, at most :data:`DEPTH` per actor in flight; ``write`` in chunk order."""
    in_flight: deque = deque()
    for i, task in enumerate(tasks):
        in_flight.append(actors[i % len(actors)].run.remote(task))
        if len(in_flight) >= DEPTH * len(actors):
            write(result(ray, in_flight.popleft()))
    while in_flight:
        write(result(ray, in_flight.popleft()))


def result(ray: ModuleType, ref: Any) -> Any:
    """``ray.get(ref)``; a user error raised in an actor stays one line, and so does an actor that died for
    good (its stored rows are kept)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, PulseAuditError):
            raise PulseAuditError(str(exc.cause)) from None
        raise
    except ray.exceptions.RayActorError as exc:
        if exc.actor_init_failed:  # e.g. weights missing on a node: the last line is the actor's exception
            raise PulseAuditError(f"a Ray worker could not start: {last_line(str(exc))}") from None
        raise PulseAuditError(f"a Ray worker stopped for good ({first_line(exc)}); the rows stored so far are "
                              "kept: run the same command to resume") from None


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (a child's error), or a placeholder."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no message")
