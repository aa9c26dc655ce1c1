"""`pulse-audit run --engine ray` on a local Ray cluster (2 CPUs): the rows and PNGs of `--engine local`, a
killed worker re-run by Ray, a killed driver resumed by the same command, one-line errors.

Each run starts its own local cluster with Ray's files under the test's temporary folder ($RAY_TMPDIR)
and must leave nothing in ~/.ray and no process behind. Kill tests stop processes at known points
(tests/held_child.py) instead of racing timers.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from held_child import HeldChild, python_command
from test_harness import make_faceset

from audit.commands.cli import USER_ERROR
from audit.run.chunk_worker import WorkerSpec
from audit.run.harness import AuditConfig, run_audit
from audit.run.ray_engine import AUTH_VARIABLES, RayOptions, check_reachable, ray_engine
from pulse_engine.errors import PulseAuditError
from pulse_engine.search import SearchConfig

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'pulse-audit[ray]')")

REPO = Path(__file__).resolve().parents[1]
VARYING = ("run_id", "t_upsample_s", "t_classify_s", "ups_batch_seconds")
"""Columns that differ between any two runs (ids, wall times)."""
TINY = ["--generator", "dcgan-tiny", "--classifiers", "skin-tone", "--per-group", "0", "--factor", "4",
        "--samples", "2", "--steps", "5", "--restarts", "1", "--batch-size", "4", "--device", "cpu"]
"""8 faces, 2 per chunk: 4 chunks, two per actor with --workers 2."""


@pytest.fixture()
def ray_tmp(tmp_path_factory, monkeypatch):
    """$RAY_TMPDIR for the runs of one test (short: Ray's socket paths below it must fit in 107 bytes);
    afterwards no token file in ~/.ray and no process of the cluster left."""
    folder = tmp_path_factory.mktemp("ray")
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    yield folder
    assert had_token or not token.exists(), "the run wrote a Ray token into the home folder"
    wait_for(lambda: not cluster_processes(folder), "the local Ray cluster outlived its driver")


def cluster_processes(folder: Path) -> list[int]:
    """Pids of the processes started with ``RAY_TMPDIR=folder`` (the drivers and their cluster)."""
    marker = f"RAY_TMPDIR={folder}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
    return pids


def holders(fifo: Path) -> list[int]:
    """Pids of the other processes that have ``fifo`` open (the actors waiting at the hold point)."""
    pids = []
    for fds in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if int(fds.parent.name) != os.getpid() and any(os.readlink(fd) == str(fifo) for fd in fds.iterdir()):
                pids.append(int(fds.parent.name))
    return pids


def wait_for(condition, message: str, timeout: float = 120) -> None:
    """Poll ``condition`` until it holds (progress, not a timer: no outcome depends on the poll interval)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", "run", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


def rows(out: Path) -> dict[tuple[str, int], dict]:
    table = pq.read_table(out / "results.parquet").to_pylist()
    keyed = {(row["item_id"], row["sample"]): row for row in table}
    assert len(keyed) == len(table), "a row was stored twice"
    return keyed


def same(a: dict, b: dict) -> bool:
    """Equal rows, timing columns aside (NaN equals NaN)."""
    keys = set(a) - set(VARYING)
    return keys == set(b) - set(VARYING) and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in keys)


def pngs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "images").rglob("*.png"))}


def parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "parts").glob("part-*.parquet"))}


def test_ray_workers_store_the_rows_and_images_of_the_local_engine(tmp_path, ray_tmp):
    options = dict(dataset="demo", generator="dcgan-digiface", classifiers="skin-tone,age-gender", per_group=1,
                   factor=4, samples=2, steps=10, restarts=2, eps=0.02, batch_size=4, device="cpu", threads=2)
    local = run_audit(AuditConfig.from_mapping({**options, "out": str(tmp_path / "local")}))
    done = cli(*[f"--{k.replace('_', '-')}={v}" for k, v in options.items()], "--engine", "ray", "--workers", "2",
               "--out", tmp_path / "ray")
    assert done.returncode == 0, done.stderr
    expected, got = rows(local), rows(tmp_path / "ray")
    assert len(expected) >= 8 and expected.keys() == got.keys()
    assert all(same(expected[key], got[key]) for key in expected)
    assert any(row["ups_success"] for row in expected.values()) and any(
        not row["ups_success"] for row in expected.values())  # both outcomes of the search are compared
    items = {item for item, _ in expected}
    assert pngs(local) == pngs(tmp_path / "ray")
    assert len(pngs(local)) == len(expected) + 2 * len(items)  # one output per row, LR and truth per item
    assert len(parts(local)) == len(parts(tmp_path / "ray"))


def test_a_killed_worker_is_restarted_and_its_chunk_computed_again(tmp_path, ray_tmp):
    dataset = make_faceset(tmp_path / "set", count=8, broken=False)
    out = tmp_path / "run"
    command = [*python_command("audit"), "run", "--dataset", f"folder:{dataset}", *TINY, "--engine", "ray",
               "--workers", "2", "--out", str(out)]
    child = HeldChild(command, tmp_path / "gate", "task", 2)  # each actor stops as its second chunk starts
    child.wait_held()
    wait_for(lambda: len(holders(child.fifo)) == 2, "both actors should reach their second chunk")
    victim = holders(child.fifo)[0]
    assert Path(f"/proc/{victim}/cmdline").read_bytes().startswith(b"ray::ChunkActor")
    os.kill(victim, signal.SIGKILL)  # mid-run: its chunk started, never returned
    child.release()
    out_, err = child.process.communicate(timeout=600)
    assert child.process.returncode == 0, err
    stored = rows(out)
    assert set(stored) == {(f"img/face{i:02d}.png", k) for i in range(8) for k in range(2)}
    assert all(not row["error"] for row in stored.values())
    assert len(parts(out)) == 4


def test_a_killed_driver_resumes_with_nothing_lost_or_doubled(tmp_path, ray_tmp):
    dataset = make_faceset(tmp_path / "set", count=8, broken=False)
    out = tmp_path / "run"
    command = [*python_command("audit"), "run", "--dataset", f"folder:{dataset}", *TINY, "--engine", "ray",
               "--workers", "2", "--out", str(out)]
    child = HeldChild(command, tmp_path / "gate", "part", 2)  # the driver stops after storing two chunks
    child.wait_held()
    code, _, _ = child.signal(signal.SIGKILL)
    assert code == -signal.SIGKILL
    before = parts(out)
    assert len(before) == 2 and len(rows_of_parts(out)) == 2 * 2 * 2
    wait_for(lambda: not cluster_processes(ray_tmp), "the local Ray cluster outlived its killed driver")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    stored = rows(out)
    assert set(stored) == {(f"img/face{i:02d}.png", k) for i in range(8) for k in range(2)}
    after = parts(out)
    assert len(after) == 4 and all(after[name] == data for name, data in before.items())


def rows_of_parts(out: Path) -> list[dict]:
    return [row for part in sorted((out / "parts").glob("part-*.parquet")) for row in pq.read_table(part).to_pylist()]


def test_missing_ray_and_unreachable_address_are_one_line(tmp_path, ray_tmp):
    dataset = make_faceset(tmp_path / "set", count=2, broken=False)
    run = ["run", "--dataset", f"folder:{dataset}", *TINY, "--out", str(tmp_path / "run")]
    without_ray = ("import sys; sys.modules['ray'] = None; sys.argv = ['pulse-audit', *sys.argv[1:]]; "
                   "import audit.commands.cli; assert 'ray' not in sys.modules or sys.modules['ray'] is None; "
                   "audit.commands.cli.main()")
    done = subprocess.run([sys.executable, "-c", without_ray, *run, "--engine", "ray"], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == USER_ERROR and len(lines) == 1, done.stderr
    assert "pip install 'pulse-audit[ray]'" in lines[0]
    assert not (tmp_path / "run").exists()
    with socket.socket() as closed:  # a bound port that does not listen: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        done = cli(*run[1:], "--engine", "ray", "--ray-address", address, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == USER_ERROR and len(lines) == 1, done.stderr
    assert f"no Ray cluster reachable at {address}" in lines[0]
    with pytest.raises(PulseAuditError, match="need --engine ray"):
        AuditConfig(workers=2).validate()


def test_a_worker_that_cannot_start_is_one_line(tmp_path, ray_tmp):
    """E.g. weights missing on a node: the driver has them (it loaded them), an actor does not. This process is
    the driver here; the token the engine and Ray put in its environment is removed afterwards."""
    saved = {name: os.environ.get(name) for name in AUTH_VARIABLES}
    spec = WorkerSpec("pulse", f"dcgan-file:{tmp_path / 'absent'}", None, SearchConfig(steps=1), "cpu", None, 4,
                      ("skin-tone",), (), ())
    try:
        engine = ray_engine(RayOptions(workers=1), spec)
        with pytest.raises(PulseAuditError, match=r"^a Ray worker could not start: \S*WeightsError: missing") as error:
            engine([], lambda result: None)
        assert "\n" not in str(error.value)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_an_address_where_no_ray_answers_fails_within_the_bound():
    with socket.socket() as silent:  # accepts connections, never speaks Ray
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(PulseAuditError, match=f"no Ray cluster answered at {address} within 3 s"):
            check_reachable(address, timeout=3)
    with pytest.raises(PulseAuditError, match="expected HOST:PORT"):
        check_reachable("head-node")
