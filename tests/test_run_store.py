"""The run store: schema helpers, run.json, resume bookkeeping, and atomicity under SIGKILL."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from held_child import HeldChild, python_command
from PIL import Image

from audit.core.records import AttributeSpec, Classifier, ClassifierCard, FaceItem, FaceSet
from audit.core.schema import column_order, probability_column, value_column
from audit.run import run_store
from audit.run.provenance import git_commit, package_versions, run_provenance
from audit.run.run_store import RunStore, atomic_write, concat, read_results, rows_to_table, safe_id
from audit.upsamplers import OracleUpsampler
from pulse_engine.errors import PulseAuditError
from pulse_engine.generators.checkpoint import sha256_file
from reports.run_data import load_run

REPO = Path(__file__).resolve().parents[1]


def test_rows_to_table_takes_the_union_of_keys():
    table = rows_to_table([{"item_id": "a", "sample": 0}, {"item_id": "b", "sample": 1, "extra": 2.5}])
    assert table.column_names == ["item_id", "sample", "extra"]
    assert table.column("extra").to_pylist() == [None, 2.5]


def test_concat_promotes_null_and_int_columns_and_orders_columns():
    first = rows_to_table([{"item_id": "a", "sample": 0, "out_c_face": None, "ups_seed": 3, "error": ""}])
    second = rows_to_table([{"item_id": "b", "sample": 0, "out_c_face": True, "ups_seed": 4.5, "label_race": "x",
                             "error": "", "in_c_face": False}])
    table = concat([first, second])
    assert table.column("out_c_face").to_pylist() == [None, True]
    assert table.column("ups_seed").type == pa.float64()
    assert table.column_names[:3] == ["item_id", "sample", "error"]
    assert table.column_names.index("label_race") < table.column_names.index("ups_seed") \
        < table.column_names.index("in_c_face") < table.column_names.index("out_c_face")
    assert column_order(["out_a", "label_source_x", "label_x", "run_id"]) == ["run_id", "label_x", "label_source_x",
                                                                             "out_a"]
    assert concat([]).num_rows == 0


def test_safe_id_is_a_plain_name_and_never_collides():
    assert safe_id("face_01.png") == "face_01.png"
    ids = ["a/b.png", "a_b.png", "ucpr/White × Male", "../x", "."]
    ids.append(safe_id("a b"))  # an id named like another id's folder gets a folder of its own
    safe = [safe_id(i) for i in ids]
    assert len(set(safe)) == len(ids) and safe[-1] != safe_id("a b")
    assert all("/" not in s and not s.startswith(".") and s for s in safe)


def test_classifier_column_names():
    assert probability_column("out", "age-gender", "gender", "female") == "out_age-gender_gender_p_female"
    assert value_column("in", "skin-tone", "ita") == "in_skin-tone_ita"


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_open_append_reopen_and_resume_bookkeeping(tmp_path):
    root = tmp_path / "run"
    with RunStore.open(root, {"a": 1, "b": [1, 2]}, lambda: {"extra": "x"}) as store:
        store.append([{"item_id": "i1", "sample": 0, "v": 1.0}, {"item_id": "i1", "sample": 1, "v": 2.0}])
        store.append([{"item_id": "i1", "sample": 0, "v": 9.0}])  # already stored: ignored
        store.append([{"item_id": "i2", "sample": 0, "v": 3.0, "error": ""}])
        run_id = store.run_id
    record = json.loads((root / "run.json").read_text())
    assert record["config"] == {"a": 1, "b": [1, 2]} and record["extra"] == "x" and record["run_id"] == run_id
    assert len(list((root / "parts").glob("part-*.parquet"))) == 2
    results = pq.read_table(root / "results.parquet").to_pylist()
    assert [(r["item_id"], r["sample"], r["v"]) for r in results] == [("i1", 0, 1.0), ("i1", 1, 2.0), ("i2", 0, 3.0)]
    assert {r["run_id"] for r in results} == {run_id}
    (root / "parts" / ".part-000003.parquet.123.tmp").write_bytes(b"half")
    with RunStore.open(root, {"b": (1, 2), "a": 1}, lambda: pytest.fail("provenance is for new runs only")) as store:
        assert store.done == {("i1", 0), ("i1", 1), ("i2", 0)}
        assert store.run_id == run_id and store.next_part == 3
        store.append([{"item_id": "i3", "sample": 0, "v": 4.0}])
    assert not list(root.rglob("*.tmp"))
    assert read_results(root).num_rows == 4
    record = json.loads((root / "run.json").read_text())
    assert len(record["sessions"]) == 2


def test_a_flush_writes_only_its_own_part_and_results_are_written_at_the_end(tmp_path, monkeypatch):
    written: list[tuple[str, int]] = []
    real_write = run_store.atomic_write
    monkeypatch.setattr(run_store, "atomic_write", lambda path, data: (written.append((path.name, len(data))),
                                                                       real_write(path, data)))
    root = tmp_path / "run"
    sizes = []
    with RunStore.open(root, {}) as store:
        for flush in range(60):
            written.clear()
            store.append([{"item_id": f"i{flush}", "sample": k, "v": float(k)} for k in range(4)])
            assert [name for name, _ in written] == [f"part-{flush + 1:06d}.parquet"]  # nothing else, ever
            sizes.append(written[0][1])
        assert not (root / "results.parquet").exists()
    assert max(sizes) <= 1.1 * min(sizes)  # each part holds its flush's rows only
    assert run_store.results_current(root)
    assert read_results(root).num_rows == 240 and pq.read_table(root / "results.parquet").num_rows == 240
    store = RunStore.open(root, {})
    assert len(store.done) == 240
    store.append([{"item_id": "late", "sample": 0, "v": 1.0}])
    store.release()  # as after a kill: results.parquet is now stale
    assert not run_store.results_current(root)
    assert pq.read_table(root / "results.parquet").num_rows == 240
    assert read_results(root).num_rows == 241  # from the parts
    assert pq.read_table(root / "results.parquet").num_rows == 240  # reading did not write
    assert read_results(root, save=True).num_rows == 241 and run_store.results_current(root)
    assert pq.read_table(root / "results.parquet").column("item_id").to_pylist()[-1] == "late"


def test_an_error_in_a_session_leaves_the_results_to_the_readers(tmp_path):
    root = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), RunStore.open(root, {}) as store:
        store.append([{"item_id": "a", "sample": 0}])
        raise KeyboardInterrupt
    assert not (root / "results.parquet").exists() and read_results(root).num_rows == 1
    RunStore.open(root, {}).close()  # a session that ends normally writes it
    assert run_store.results_current(root)


def test_reports_read_the_parts_of_a_run_whose_results_file_is_missing(tmp_path):
    root = tmp_path / "run"
    store = RunStore.open(root, {"group_by": ["race"]})
    store.append([{"item_id": f"f{i}", "sample": 0, "input_kind": "face", "label_race": "AB"[i % 2], "error": ""}
                  for i in range(3)])
    store.release()  # killed before the end: no results.parquet
    run = load_run(root)
    assert sorted(run.faces["item_id"]) == ["f0", "f1", "f2"] and run_store.results_current(root)
    RunStore.open(tmp_path / "empty", {}).close()
    with pytest.raises(PulseAuditError, match="no successfully processed face rows"):
        load_run(tmp_path / "empty")


def test_other_config_is_refused_and_a_busy_folder_too(tmp_path):
    root = tmp_path / "run"
    store = RunStore.open(root, {"per_group": 3, "seed": 0})
    with pytest.raises(PulseAuditError, match="in use by another running audit"):
        RunStore.open(root, {"per_group": 3, "seed": 0})
    store.close()
    with pytest.raises(PulseAuditError, match=r"per_group: run.json has 3, now 4.*new --out"):
        RunStore.open(root, {"per_group": 4, "seed": 0})
    RunStore.open(root, {"per_group": 3, "seed": 0}).close()  # the failed attempt released the lock


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    (tmp_path / ".keep.tmp").write_text("not ours")
    with pytest.raises(PulseAuditError, match="not empty and holds no run.json"):
        RunStore.open(tmp_path, {})
    assert (tmp_path / ".keep.tmp").exists() and not (tmp_path / "run.json").exists()
    RunStore.open(tmp_path / "fresh", {}).close()


def test_save_image_writes_png_under_the_safe_id(tmp_path):
    with RunStore.open(tmp_path / "run", {}) as store:
        image = torch.rand(3, 8, 8)
        relative = store.save_image("dir/face.jpg", "out_0", image)
    assert relative == f"images/{safe_id('dir/face.jpg')}/out_0.png"
    array = np.asarray(Image.open(tmp_path / "run" / relative))
    assert np.array_equal(array, (image.permute(1, 2, 0) * 255).round().byte().numpy())


class _Card(Classifier):
    name = "fake"
    attributes = {"tone": ("a", "b")}

    def __init__(self, weights: Path) -> None:
        self.card = ClassifierCard("fake", "test model", weights=(str(weights),))


def test_provenance_hashes_weights_and_the_dataset_card(tmp_path):
    weights, card = tmp_path / "w.bin", tmp_path / "card.md"
    weights.write_bytes(b"weights")
    card.write_text("# card")
    faceset = FaceSet("set", tmp_path, {"race": AttributeSpec("race", ("x", "y"), "predicted", model="m v1")},
                      [FaceItem("a.png", tmp_path / "a.png", {"race": "x"})], card=card, licence="CC0")
    record = run_provenance(faceset, OracleUpsampler(32), [_Card(weights)], {"per_group": 1}, seed=7)
    assert record["classifiers"][0]["weights"] == [{"path": str(weights), "sha256": sha256_file(weights)}]
    assert record["dataset"]["card_sha256"] == sha256_file(card)
    assert record["dataset"]["labels"]["race"] == {"values": ["x", "y"], "source": "predicted", "model": "m v1",
                                                   "notes": ""}
    assert record["seeds"]["seed"] == 7 and record["generator"] is None
    assert record["upsampler"] == {"name": "oracle", "resolution": 32}
    json.dumps(record)


def test_versions_and_git_commit(tmp_path):
    versions = package_versions()
    assert versions["torch"].startswith("2.") and "numpy" in versions and "python" in versions
    assert git_commit(tmp_path) == ""
    if (REPO / ".git").exists():
        assert len(git_commit(REPO).split("+")[0]) == 40


WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from audit.run.run_store import RunStore
    with RunStore.open(Path(sys.argv[1]), {"writer": 1}) as store:
        for i in range(int(sys.argv[2])):
            key = f"item{i:05d}"
            if (key, 0) in store.done:
                continue
            path = store.save_image(key, "out_0", torch.full((3, 16, 16), (i % 10) / 10))
            store.append([{"item_id": key, "sample": 0, "value": float(i), "path_out": path, "note": "x" * 200}])
""")


def _check_store(root: Path) -> list[str]:
    """Every part and the results file read whole; keys unique and gap-free; images decode."""
    rows = read_results(root).to_pylist()
    keys = [row["item_id"] for row in rows]
    assert keys == [f"item{i:05d}" for i in range(len(keys))]
    for row in rows:
        assert row["value"] == float(int(row["item_id"][4:]))
        Image.open(root / row["path_out"]).load()
    if (root / "results.parquet").exists():
        consolidated = pq.read_table(root / "results.parquet").column("item_id").to_pylist()
        assert consolidated == keys[:len(consolidated)]
    return keys


# (hold point, occurrence): inside the first write (run.json of a new run), after whole parts, and inside
# later writes (images, parts, run.json of a resumed session), in a fixed order
KILL_POINTS = [("write", 1), ("part", 2), ("write", 3), ("write", 4), ("write", 1), ("part", 1)]


def test_sigkill_at_known_points_loses_and_duplicates_nothing(tmp_path):
    script, root = tmp_path / "writer.py", tmp_path / "run"
    script.write_text(WRITER)
    before: list[str] = []
    for point, count in KILL_POINTS:
        child = HeldChild([*python_command(script=script), str(root), "1000"], tmp_path / "gate", point, count)
        child.wait_held()
        in_flight = [p.name for p in root.rglob(".*.tmp")]
        code, _, err = child.signal(signal.SIGKILL)
        assert code == -signal.SIGKILL, err
        keys = _check_store(root)
        assert keys[:len(before)] == before
        if point == "part":
            assert len(keys) == len(before) + count  # every part this session stored, nothing more
        else:
            assert len(in_flight) == 1  # killed inside a write: the old file (if any) is whole, the new one absent
        if (root / "run.json").exists():
            assert json.loads((root / "run.json").read_text())["config"] == {"writer": 1}
        before = keys
    child = HeldChild([*python_command(script=script), str(root), str(len(before) + 5)], tmp_path / "gate", "none", 1)
    child.release()
    _, err = child.process.communicate(timeout=600)
    assert child.process.returncode == 0, err
    assert _check_store(root) == [f"item{i:05d}" for i in range(len(before) + 5)]
    assert not list(root.rglob("*.tmp"))


def _two_part_run(root: Path) -> str:
    with RunStore.open(root, {"n": 1}) as store:
        store.append([{"item_id": "a", "sample": 0, "v": 1.0}])
        store.append([{"item_id": "b", "sample": 0, "v": 2.0}])
        return store.run_id


def _one_line_error(root: Path, match: str) -> None:
    for attempt in (lambda: RunStore.open(root, {"n": 1}), lambda: read_results(root)):
        with pytest.raises(PulseAuditError, match=match) as caught:
            attempt()
        assert "\n" not in str(caught.value)


def _each_spoiled_part_is_refused(tmp_path: Path, cases: dict) -> None:
    """For each case (name → (spoil the parts folder, expected message)): a fresh two-part run, spoiled, is refused
    in one line on open and on read, and nothing in its parts folder was moved, deleted or merged."""
    for name, (spoil, message) in cases.items():
        root = tmp_path / name.replace(" ", "-")
        _two_part_run(root)
        spoil(root / "parts")
        _one_line_error(root, message)
        assert len(list((root / "parts").iterdir())) == 3


def test_parts_are_checked_on_open_and_never_merged_silently(tmp_path):
    _two_part_run(tmp_path / "other")
    cases = {
        "copied under another number": (lambda parts: shutil.copy(parts / "part-000001.parquet",
                                                                  parts / "part-000009.parquet"),
                                        r"part-000009.parquet: item 'a' sample 0 is stored also in part-000001"),
        "from another run": (lambda parts: shutil.copy(tmp_path / "other/parts/part-000002.parquet",
                                                       parts / "part-000003.parquet"),
                             r"part-000003.parquet: rows of another run \('other-"),
        "badly named": (lambda parts: shutil.copy(parts / "part-000001.parquet", parts / "part-1.parquet"),
                        r"part-1.parquet: not a result part \(parts are files named part-NNNNNN.parquet"),
        "without item_id": (lambda parts: pq.write_table(pa.table({"sample": [0], "run_id": ["x"]}),
                                                          parts / "part-000004.parquet"),
                            r"part-000004.parquet: not a result part of this store \(no item_id column"),
        "not Parquet": (lambda parts: (parts / "part-000005.parquet").write_bytes(b"PAR1 garbage"),
                        r"part-000005.parquet: unreadable result part"),
    }
    _each_spoiled_part_is_refused(tmp_path, cases)


def test_changed_inputs_are_refused_unless_a_new_run_is_asked_for(tmp_path):
    root = tmp_path / "run"
    inputs = {"generator g weights file w.pt": "a" * 64, "face set s (sampled items, their paths and labels)": "c" * 64}
    with RunStore.open(root, {"n": 1}, inputs=inputs) as store:
        store.append([{"item_id": "a", "sample": 0}])
        first = store.run_id
    changed = {**inputs, "generator g weights file w.pt": "b" * 64}
    with pytest.raises(PulseAuditError, match=r"generator g weights file w.pt changed since this run began "
                                              r"\(SHA-256 aaaaaaaaaaaa… when the run began, bbbbbbbbbbbb… now\);"
                                              r".*--new-run") as caught:
        RunStore.open(root, {"n": 1}, inputs=changed)
    assert "\n" not in str(caught.value)
    with pytest.raises(PulseAuditError, match=r"classifier c weights file x changed .*\(not used when the run began\)"):
        RunStore.open(root, {"n": 1}, inputs={**inputs, "classifier c weights file x": "d" * 64})
    with pytest.raises(PulseAuditError, match="other settings"):
        RunStore.open(root, {"n": 2}, inputs=inputs)
    (root / "mine.txt").write_text("the user's")
    with RunStore.open(root, {"n": 2}, inputs=changed, new_run=True) as store:
        assert store.run_id != first and store.done == set() and not (root / "parts").exists()
    record = json.loads((root / "run.json").read_text())
    assert record["inputs"] == changed and record["config"] == {"n": 2} and (root / "mine.txt").exists()


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path, monkeypatch):
    root = tmp_path / "run"
    store = RunStore.open(root, {})
    store.append([{"item_id": "a", "sample": 0}])
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    for write in (lambda: store.append([{"item_id": "b", "sample": 0}]),
                  lambda: store.save_image("b", "out_0", torch.zeros(3, 4, 4)), store.close):
        with pytest.raises(PulseAuditError, match=r"cannot write .*No space left on device; everything stored "
                                                  r"before is kept") as caught:
            write()
        assert "\n" not in str(caught.value)
    store.release()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not list(root.rglob("*.tmp")) and read_results(root).column("item_id").to_pylist() == ["a"]
    with RunStore.open(root, {}) as store:
        assert store.done == {("a", 0)}
        store.append([{"item_id": "b", "sample": 0}])
    assert read_results(root).column("item_id").to_pylist() == ["a", "b"]


def test_a_part_of_another_schema_is_one_line_on_open_and_never_merged(tmp_path):
    """Every column of every part is checked on open, not only the keys: a documented column of another
    kind, a column no row holds (a list), a column twice, or a column whose kind differs from an earlier
    part's would each break the concatenation or the readers later."""
    def part(**columns):
        return lambda parts: pq.write_table(pa.table({"run_id": [_run_id(parts)], "item_id": ["z"], "sample": [0],
                                                      **columns}), parts / "part-000007.parquet")

    cases = {
        "sample as numbers": (lambda parts: pq.write_table(pa.table({"run_id": [_run_id(parts)], "item_id": ["z"],
                                                                      "sample": [0.0]}), parts / "part-000007.parquet"),
                              r"part-000007.parquet: not a result part of this store \(column 'sample' holds numbers, "
                              r"not integers\)"),
        "a flag as strings": (part(**{"out_skin-tone_face": ["yes"]}),
                              r"column 'out_skin-tone_face' holds strings, not flags"),
        "timing as strings": (part(t_upsample_s=["1 s"]), r"column 't_upsample_s' holds strings, not numbers"),
        "a list column": (part(ups_lr_l2=[[0.1, 0.2]]),
                          r"column 'ups_lr_l2' holds 'list<element: double>', not strings, numbers or flags"),
        "a column twice": (lambda parts: pq.write_table(
            pa.Table.from_arrays([pa.array([_run_id(parts)]), pa.array(["z"]), pa.array([0]), pa.array([1.0]),
                                  pa.array([2.0])], names=["run_id", "item_id", "sample", "psnr", "psnr"]),
            parts / "part-000007.parquet"), r"column 'psnr' appears twice"),
        "strings where numbers were": (part(v=["0.1"]),
                                       r"part-000007.parquet: column 'v' holds strings, but numbers in "
                                       r"part-000001.parquet; move it out"),
    }
    _each_spoiled_part_is_refused(tmp_path, cases)
    root = tmp_path / "compatible"
    _two_part_run(root)
    part(v=[3], note=[None], new_reading=[True])(root / "parts")  # an integer where numbers were: fine
    assert read_results(root).column("v").to_pylist() == [1.0, 2.0, 3.0]
    with RunStore.open(root, {"n": 1}) as store:
        assert store.done == {("a", 0), ("b", 0), ("z", 0)}


def _run_id(parts: Path) -> str:
    return json.loads((parts.parent / "run.json").read_text())["run_id"]


def test_a_run_record_of_other_json_types_is_one_line_everywhere_it_is_read(tmp_path):
    """run.json is checked key by key against the types the store writes when it is read (before: a TypeError
    or AttributeError traceback on open for ``inputs`` null-valued, a list or int-valued, ``config`` a list;
    and in the report for e.g. ``dataset`` a list or ``generator`` a string)."""
    cases = {"inputs": (["x"], r"'inputs' is an array, not an object"), "config": (["a"], r"'config' is an array"),
             "run_id": (["a"], r"'run_id' is an array, not a string"), "generator": ("x", r"'generator' is a string"),
             "dataset": (["x"], r"'dataset' is an array, not an object"),
             "table_schema": (True, r"'table_schema' is true or false, not an integer"),
             "sessions": ({}, r"'sessions' is an object, not an array")}
    for key, (value, message) in {**cases, "inputs ": ({"x" * 10_000: 5}, r"input 'x{80}' has an integer, not a "
                                                                          r"SHA-256 string")}.items():
        root = tmp_path / key.strip() / str(len(key))
        _two_part_run(root)
        record = json.loads((root / "run.json").read_text())
        (root / "run.json").write_text(json.dumps({**record, key.strip(): value}))
        _one_line_error(root, r"run.json: a damaged run record \(" + message)
        with pytest.raises(PulseAuditError, match=message):
            load_run(root)
        assert len(str(_error(lambda root=root: RunStore.open(root, {"n": 1})))) < 400


def test_an_edited_results_file_is_checked_as_a_part_is(tmp_path):
    """results.parquet is used when its metadata names the current parts; it is now checked like a part (before:
    a copy without ``item_id`` that kept the metadata reached the metrics as a KeyError traceback)."""
    root = tmp_path / "run"
    run_id = _two_part_run(root)
    read_results(root, save=True)
    table = pq.read_table(root / "results.parquet")
    pq.write_table(table.drop(["item_id"]), root / "results.parquet")  # keeps the parts digest in the metadata
    with pytest.raises(PulseAuditError, match=r"results.parquet: not a result part of this store \(no item_id"):
        read_results(root)
    foreign = table.set_column(0, "run_id", pa.array(["x" * 1_000_000] * len(table)))
    pq.write_table(foreign, root / "results.parquet")
    message = str(_error(lambda: read_results(root)))
    assert "results.parquet: rows of another run ('xxx" in message and len(message) < 400, message
    assert run_id in message


def test_documented_flags_and_numbers_of_the_upsampler_are_checked_and_messages_stay_short(tmp_path):
    """``ups_success`` as text passed the schema check and failed in the report ("could not convert string to
    float"); a 5 MB item id stored twice made a 5 MB error line."""
    root = tmp_path / "run"
    run_id = _two_part_run(root)
    pq.write_table(pa.table({"run_id": [run_id], "item_id": ["z"], "sample": [0], "ups_success": ["true"]}),
                   root / "parts/part-000007.parquet")
    _one_line_error(root, r"column 'ups_success' holds strings, not flags")
    (root / "parts/part-000007.parquet").unlink()
    huge = "i" * 5_000_000
    pq.write_table(pa.table({"run_id": [run_id] * 2, "item_id": [huge] * 2, "sample": [0, 0]}),
                   root / "parts/part-000007.parquet")
    message = str(_error(lambda: read_results(root)))
    assert "part-000007.parquet: item 'iii" in message and "is stored twice" in message and len(message) < 400


def _error(attempt) -> PulseAuditError:
    with pytest.raises(PulseAuditError) as caught:
        attempt()
    return caught.value
