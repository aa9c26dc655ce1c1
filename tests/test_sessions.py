"""A run's sessions: what a row depends on beyond the options (the code's commit, the package versions, the search's
CPU threads) is recorded per session; a resume under other code or threads is refused with one line unless
``--allow-mixed``, which records how it differed; the search threads are the same on every engine and kept on
resume; the report lists the sessions and says when a run is mixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from synthetic_run import synthetic_run

from audit.core.schema import RUN_JSON
from audit.run.harness import MAX_THREADS, AuditConfig, search_threads
from audit.run.provenance import git_commit, package_versions, session_differences
from audit.run.run_store import RunStore, read_run_record
from pulse_engine.errors import PulseAuditError
from reports.analysis import Settings
from reports.report import write_report
from reports.run_data import session_summary

REPO = Path(__file__).resolve().parents[1]
ROW = {"item_id": "a", "sample": 0}


def test_session_differences_name_commit_packages_and_threads():
    before = {"git_commit": "a" * 40, "packages": {"torch": "2.13.0", "gone": "1"}, "search_threads": 1}
    now = {"git_commit": "b" * 40, "packages": {"torch": "2.14.0", "new": "2"}, "search_threads": 2}
    assert session_differences(before, now) == ["git commit aaaaaaaaaaaa → bbbbbbbbbbbb", "torch 2.13.0 → 2.14.0",
                                                "gone 1 → absent", "new absent → 2", "search threads 1 → 2"]
    assert session_differences(now, now) == []
    # keys an older run did not record are not compared; hostile values stay short and on one line
    assert session_differences({"packages": {"torch": "2.13.0"}}, {"packages": {"torch": "2.13.0"},
                                                                  "search_threads": 4, "git_commit": "c"}) == []
    [phrase] = session_differences({"packages": ["not", "a", "mapping"]}, {"packages": {"x": "y\n" * 10**6}})
    assert "\n" not in phrase and len(phrase) < 120
    for hostile in ({"search_threads": "x\n" * 10**5}, {"git_commit": "ab\ncd" * 10**5}, {"device": "y\n" * 10**5}):
        [phrase] = session_differences(hostile, {"search_threads": 2, "git_commit": "c" * 40, "device": "cpu"})
        assert "\n" not in phrase and len(phrase) < 120, phrase
    # a clean → dirty checkout stays visible; the device type is compared
    assert session_differences({"git_commit": "a" * 40}, {"git_commit": "a" * 40 + "+dirty"}) == [
        "git commit aaaaaaaaaaaa → aaaaaaaaaaaa+dirty"]
    assert session_differences({"device": "cpu"}, {"device": "cuda"}) == ["device cpu → cuda"]


def _stored_run(root: Path, **session) -> None:
    with RunStore.open(root, {"option": 1}, session={"engine": "local", "search_threads": 2, **session}) as store:
        store.append([ROW])


def _edit_sessions(root: Path, edit) -> None:
    record = read_run_record(root)
    for session in record["sessions"]:
        edit(session)
    (root / RUN_JSON).write_text(json.dumps(record))


def test_a_resume_under_other_package_versions_is_refused_unless_allowed_and_then_recorded(tmp_path):
    root = tmp_path / "run"
    _stored_run(root)
    _edit_sessions(root, lambda s: s["packages"].update(torch="0.0.1"))
    with pytest.raises(PulseAuditError) as refused:
        RunStore.open(root, {"option": 1}, session={"engine": "local", "search_threads": 2})
    message = str(refused.value)
    assert f"torch 0.0.1 → {torch.__version__}" in message and "--allow-mixed" in message and "\n" not in message
    assert len(read_run_record(root)["sessions"]) == 1  # the refused session is not recorded
    with RunStore.open(root, {"option": 1}, session={"engine": "ray", "search_threads": 2}, allow_mixed=True) as store:
        assert store.done == {("a", 0)}  # nothing stored is lost
    first, second = read_run_record(root)["sessions"]
    assert "mixed" not in first and second["mixed"] == [f"torch 0.0.1 → {torch.__version__}"]
    assert second["engine"] == "ray" and second["packages"] == package_versions()


def test_a_resume_with_other_search_threads_is_refused(tmp_path):
    root = tmp_path / "run"
    _stored_run(root, search_threads=1)
    with pytest.raises(PulseAuditError, match="search threads 1 → 2"):
        RunStore.open(root, {"option": 1}, session={"search_threads": 2})
    RunStore.open(root, {"option": 1}, session={"search_threads": 1}).close()  # the same threads resume
    if git_commit():  # only a git checkout has a commit to compare
        _edit_sessions(root, lambda s: s.update(git_commit="0" * 40))
        with pytest.raises(PulseAuditError, match="git commit 000000000000 → "):
            RunStore.open(root, {"option": 1}, session={"search_threads": 1})


def test_sessions_that_are_not_a_list_are_one_line(tmp_path):
    root = tmp_path / "run"
    _stored_run(root)
    record = read_run_record(root)
    (root / RUN_JSON).write_text(json.dumps({**record, "sessions": "hello"}))
    with pytest.raises(PulseAuditError, match=r"a damaged run record \('sessions' is a string, not an array\)"):
        RunStore.open(root, {"option": 1})


def test_search_threads_come_from_the_option_then_the_run_then_torch(tmp_path):
    out = tmp_path / "run"
    default = torch.get_num_threads()
    assert search_threads(AuditConfig(out=str(out))) == default  # no run yet
    _stored_run(out, search_threads=3)
    assert search_threads(AuditConfig(out=str(out))) == 3  # a resume keeps the run's threads
    assert search_threads(AuditConfig(out=str(out), threads=5)) == 5
    assert search_threads(AuditConfig(out=str(out), new_run=True)) == default
    for hostile in (10**9, 0, -1, "2", 2.0, True, None):
        _edit_sessions(out, lambda s, value=hostile: s.update(search_threads=value))
        assert search_threads(AuditConfig(out=str(out))) == default, hostile
    with pytest.raises(PulseAuditError, match="--threads"):
        AuditConfig(threads=MAX_THREADS + 1).validate()


CHILD_ACTOR = """
import json, torch
from audit.run.chunk_worker import WorkerSpec
from audit.run.ray_engine import ChunkActor
from pulse_engine.search import SearchConfig
spec = WorkerSpec("pulse", "dcgan-tiny", None, SearchConfig(steps=2, restarts=1), "cpu", None, 4, (), (), (), 2)
ChunkActor(spec)
print(json.dumps(torch.get_num_threads()))
"""


def test_a_ray_actor_searches_with_the_runs_threads_not_rays():
    """Ray starts a CPU actor with OMP_NUM_THREADS=1; the actor takes the run's threads instead (here 2), as the
    local engine's search process does, so that both engines store the same bits."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD_ACTOR], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == 2


def test_the_report_lists_sessions_and_says_when_a_run_is_mixed(tmp_path):
    one = {"started": "2026-11-30T05:00:00+00:00", "git_commit": "a" * 40, "engine": "local", "search_threads": 2,
           "device": "cpu", "packages": {"torch": "2.13.0"}}
    two = {**one, "started": "2026-11-30T06:00:00+00:00", "engine": "ray", "packages": {"torch": "2.14.0"}}
    summary = session_summary(SimpleNamespace(meta={"sessions": [one, two]}))
    assert [s["engine"] for s in summary["sessions"]] == ["local", "ray"]
    assert summary["sessions"][0] == {"started": one["started"], "engine": "local", "device": "cpu",
                                      "git_commit": "a" * 12, "search_threads": 2, "torch": "2.13.0"}
    damaged = {"search_threads": "<b>x</b>", "engine": "e" * 10**6}
    hostile = session_summary(SimpleNamespace(meta={"sessions": [damaged]}))
    assert hostile["sessions"][0]["search_threads"] == "" and len(hostile["sessions"][0]["engine"]) == 40
    assert summary["mixed"] == ["torch 2.13.0 → 2.14.0"]
    assert session_summary(SimpleNamespace(meta={"sessions": "junk"})) == {"sessions": [], "mixed": []}

    root = synthetic_run(tmp_path / "run", inputs=14)
    paths = write_report(root, None, Settings(n_boot=50))
    assert "Mixed run" not in paths["md"].read_text()
    assert "Sessions: " in paths["md"].read_text()
    _edit_sessions(root, lambda s: s["packages"].update(torch="0.0.1"))
    record = read_run_record(root)
    record["sessions"].append({**record["sessions"][0], "packages": package_versions()})
    (root / RUN_JSON).write_text(json.dumps(record))
    paths = write_report(root, None, Settings(n_boot=50))
    for kind in ("md", "html"):
        text = paths[kind].read_text()
        assert "Mixed run" in text and f"torch 0.0.1 → {torch.__version__}" in text, kind


def test_changes_since_run_says_what_a_resume_would_refuse(tmp_path):
    """What the demo uses to make a run of other code again instead of refusing or mixing it."""
    from audit.run.harness import changes_since_run

    config = AuditConfig(out=str(tmp_path / "run"), threads=2)
    assert changes_since_run(config) == []  # no run yet
    _stored_run(tmp_path / "run")
    assert changes_since_run(config) == []  # the same code, packages and threads
    assert changes_since_run(config.replace(threads=1)) == ["search threads 2 → 1"]
    _edit_sessions(tmp_path / "run", lambda s: s["packages"].update(numpy="0.0.1"))
    assert changes_since_run(config) == [f"numpy 0.0.1 → {package_versions()['numpy']}"]


def test_run_audit_records_its_session_and_refuses_other_threads(tmp_path):
    """End to end through the harness: the session's engine, device type and threads reach run.json; the caller's
    torch threads are restored; a resume with other threads is refused, and --allow-mixed records it."""
    from audit.run.harness import run_audit

    config = AuditConfig(dataset="demo", upsampler="bicubic", per_group=1, classifiers="none", factor=4,
                         device="cpu", out=str(tmp_path / "run"), threads=1)
    before = torch.get_num_threads()
    run_audit(config)
    assert torch.get_num_threads() == before
    [session] = read_run_record(tmp_path / "run")["sessions"]
    assert (session["engine"], session["device"], session["search_threads"]) == ("local", "cpu", 1)
    run_audit(config.replace(threads=0))  # the default keeps the run's threads: an ordinary resume
    with pytest.raises(PulseAuditError, match="search threads 1 → 2"):
        run_audit(config.replace(threads=2))
    run_audit(config.replace(threads=2, allow_mixed=True))
    sessions = read_run_record(tmp_path / "run")["sessions"]
    assert [s["search_threads"] for s in sessions] == [1, 1, 2] and sessions[-1]["mixed"] == ["search threads 1 → 2"]
