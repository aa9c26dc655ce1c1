"""A resumed run refuses, in one line, inputs that changed under its stored rows: face images (by
content, even rewritten with the same size and modification time), files of failed rows that appeared
or became readable, the ``folder`` upsampler's outputs (also one that appears where none was found),
and the ``--align`` landmark model; unchanged files resume without being read again, and copied ones
(same bytes, another inode) after one read. Runs stored with the older three-field stamps still resume."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from test_classifiers_models import random_fairface_state
from test_harness import config, fakes, rows_by_key  # noqa: F401  (fakes is a fixture)

import audit.run.harness as harness
import audit.run.source_check as source_check
from audit.run.harness import run_audit
from audit.run.inputs import FFHQAligner, load_aligner
from audit.run.run_store import RunStore, part_files, read_results
from audit.vision.images import MISSING, FileStamp
from pulse_engine.errors import PulseAuditError, WeightsError


def interrupted(monkeypatch, settings, parts: int = 2) -> set[str]:
    """Run ``settings`` until ``parts`` parts are stored, then stop it as a Ctrl-C would; the stored item ids."""
    real, stored = RunStore.append, []

    def append(self, rows):
        if len(stored) == parts:
            raise KeyboardInterrupt
        stored.append(len(rows))
        real(self, rows)

    with monkeypatch.context() as patch:
        patch.setattr(RunStore, "append", append)
        with pytest.raises(KeyboardInterrupt):
            run_audit(settings)
    return {row["item_id"] for row in read_results(Path(settings.out)).to_pylist()}


def repaint(path: Path, colour=(250, 10, 10)) -> None:
    Image.new("RGB", (40, 40), colour).save(path)


def refusal(settings) -> str:
    with pytest.raises(PulseAuditError) as caught:
        run_audit(settings)
    message = str(caught.value)
    assert "\n" not in message and "--new-run" in message, message
    return message


def counting_hashes(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = source_check.file_sha256
    monkeypatch.setattr(source_check, "file_sha256", lambda path: calls.append(path) or real(path))
    return calls


def test_rows_carry_the_sha256_of_the_bytes_read(tmp_path, fakes):  # noqa: F811
    outs = tmp_path / "outs"
    outs.mkdir()
    repaint(outs / "face00.png", (90, 60, 30))
    root = run_audit(config(tmp_path, upsampler="folder", folder=str(outs)))
    row = rows_by_key(root)[("img/face00.png", 0)]
    image = tmp_path / "set" / "img" / "face00.png"
    info = image.stat()
    assert row["source_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert [row[f"source_{name}"] for name in ("bytes", "mtime_ns", "ctime_ns", "inode", "device")] == [
        info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]
    output = outs / "face00.png"
    assert row["ups_file_sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert (row["ups_file_bytes"], row["ups_file_inode"]) == (output.stat().st_size, output.stat().st_ino)
    # a file read but not decodable: the SHA-256 of its bytes; no output found: the stamp of no file
    broken = rows_by_key(root)[("img/broken.png", 0)]
    path = tmp_path / "set" / "img" / "broken.png"
    assert broken["error"] and broken["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    missing = rows_by_key(root)[("img/face01.png", 0)]
    assert missing["error"].startswith("no output for 'img/face01.png'") and missing["ups_file"] == ""
    assert FileStamp.from_columns(missing, "ups_file_") == MISSING


def test_a_changed_face_image_is_refused_and_unchanged_ones_are_not_read_again(tmp_path, fakes, monkeypatch):  # noqa: F811
    settings = config(tmp_path, upsampler="bicubic", batch_size=2)
    stored = interrupted(monkeypatch, settings)
    assert "img/face00.png" in stored and "img/face07.png" not in stored
    images = tmp_path / "set" / "img"
    before = (images / "face00.png").read_bytes()
    repaint(images / "face00.png")
    message = refusal(settings)
    assert f"input image {images / 'face00.png'} changed since its rows were stored (SHA-256 " in message
    # restored bytes with another modification time (a copy): read once, found equal, resumed
    (images / "face00.png").write_bytes(before)
    os.utime(images / "face00.png", ns=(10**18, 10**18))
    repaint(images / "face07.png")  # not stored yet: no stored row depends on it
    hashed = counting_hashes(monkeypatch)
    root = run_audit(settings)
    assert hashed == [images / "face00.png"]
    rows = rows_by_key(root)
    assert len(rows) == 9 and rows[("img/face07.png", 0)]["source_sha256"] == hashlib.sha256(
        (images / "face07.png").read_bytes()).hexdigest()
    # resumed again: every stored file stat'ed; only the one whose stat differs from its stamp is read
    hashed.clear()
    run_audit(settings)
    assert hashed == [images / "face00.png"]
    # a stored image deleted, or replaced by a FIFO (never opened for reading: no hang)
    (images / "face02.png").unlink()
    assert "face02.png changed since its rows were stored (no longer exists)" in refusal(settings)
    os.mkfifo(images / "face02.png")
    assert "face02.png changed since its rows were stored (is a FIFO (named pipe), not an image file)" in (
        refusal(settings))
    (images / "face02.png").unlink()
    root = run_audit(settings.replace(new_run=True))
    assert "no such file" in rows_by_key(root)[("img/face02.png", 0)]["error"]


def test_changed_outputs_of_the_folder_upsampler_are_refused(tmp_path, fakes, monkeypatch):  # noqa: F811
    outs = tmp_path / "outs"
    outs.mkdir()
    for i in range(8):
        repaint(outs / f"face{i:02d}.png", (30 * i, 60, 30))
    settings = config(tmp_path, upsampler="folder", folder=str(outs), batch_size=2)
    interrupted(monkeypatch, settings)
    repaint(outs / "face01.png", (1, 2, 3))
    repaint(outs / "face02.png", (1, 2, 3))
    message = refusal(settings)
    assert f"upsampler output {outs / 'face01.png'} changed since its rows were stored" in message
    assert "(and 1 more)" in message
    repaint(outs / "face01.png", (30, 60, 30))
    repaint(outs / "face02.png", (60, 60, 30))  # the same pixels written again: same PNG bytes
    root = run_audit(settings)
    assert len(rows_by_key(root)) == 9


def test_a_changed_aligner_landmark_model_is_refused(tmp_path, fakes, monkeypatch):  # noqa: F811
    landmarks = tmp_path / "shape_predictor_68_face_landmarks.dat"
    landmarks.write_bytes(b"landmark model v1")

    def align_face(image: np.ndarray, size: int) -> np.ndarray:  # a stand-in: a resize, no landmarks
        return np.asarray(Image.fromarray(image).resize((size, size)))

    monkeypatch.setattr(harness, "load_aligner", lambda: FFHQAligner(align_face, (landmarks,)))
    settings = config(tmp_path, upsampler="bicubic", align=True, batch_size=2)
    interrupted(monkeypatch, settings)
    landmarks.write_bytes(b"landmark model v2")
    message = refusal(settings)
    assert "aligner model file shape_predictor_68_face_landmarks.dat changed since this run began" in message
    landmarks.write_bytes(b"landmark model v1")
    assert len(rows_by_key(run_audit(settings))) == 9
    assert "aligner model file shape_predictor_68_face_landmarks.dat" in (Path(settings.out) / "run.json").read_text()


def test_load_aligner_names_its_landmark_model():
    try:
        aligner = load_aligner()
    except (PulseAuditError, WeightsError) as exc:
        pytest.skip(f"no dlib aligner here: {exc}")
    assert [p.name for p in aligner.weights] == ["shape_predictor_68_face_landmarks.dat"]
    assert all(p.is_file() for p in aligner.weights)


def test_a_rewrite_with_the_same_size_and_mtime_is_refused(tmp_path, fakes, monkeypatch):  # noqa: F811
    settings = config(tmp_path, upsampler="bicubic", batch_size=2)
    interrupted(monkeypatch, settings)
    face = tmp_path / "set" / "img" / "face00.png"
    before = face.stat()
    data = bytearray(face.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped in place: same size, same inode
    face.write_bytes(bytes(data))
    os.utime(face, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (face.stat().st_size, face.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    message = refusal(settings)
    assert f"input image {face} changed since its rows were stored (SHA-256 " in message


def test_a_copied_face_set_resumes_after_one_read_of_each_stored_image(tmp_path, fakes, monkeypatch):  # noqa: F811
    settings = config(tmp_path, upsampler="bicubic", batch_size=2)
    stored = interrupted(monkeypatch, settings)
    images = tmp_path / "set" / "img"
    shutil.copytree(tmp_path / "set", tmp_path / "copy")  # copy2: same bytes and modification times
    (tmp_path / "set").rename(tmp_path / "original")
    (tmp_path / "copy").rename(tmp_path / "set")
    hashed = counting_hashes(monkeypatch)
    root = run_audit(settings)
    assert sorted(hashed) == sorted(images.parent / item for item in stored)  # each stored image, once
    assert len(rows_by_key(root)) == 9


def test_failed_rows_notice_a_file_that_appeared_or_became_readable(tmp_path, fakes):  # noqa: F811
    images = tmp_path / "set" / "img"
    settings = config(tmp_path, upsampler="bicubic")
    manifest = tmp_path / "set" / "manifest.csv"
    with manifest.open("a") as handle:
        handle.write("img/late.png,A,f\nimg/pipe.png,B,m\n")
    os.mkfifo(images / "pipe.png")
    rows = rows_by_key(run_audit(settings))
    assert "no such file" in rows[("img/late.png", 0)]["error"]
    assert "is a FIFO" in rows[("img/pipe.png", 0)]["error"] and rows[("img/pipe.png", 0)]["source_sha256"] == ""
    assert len(rows) == 11
    run_audit(settings)  # nothing changed: resumes

    good = (images / "face00.png").read_bytes()
    broken = (images / "broken.png").read_bytes()
    (images / "broken.png").write_bytes(good)  # read then, not decodable; readable now
    assert f"input image {images / 'broken.png'} changed since its rows were stored (SHA-256 " in refusal(settings)
    (images / "broken.png").write_bytes(broken)
    (images / "late.png").write_bytes(good)  # no file then
    assert (f"input image {images / 'late.png'} changed since its rows were stored (there was no such file then)"
            in refusal(settings))
    (images / "late.png").unlink()
    (images / "pipe.png").unlink()
    (images / "pipe.png").write_bytes(good)  # not a regular file then (never read)
    assert (f"input image {images / 'pipe.png'} changed since its rows were stored (it could not be read then, "
            "and its size, times or inode changed since)" in refusal(settings))
    rows = rows_by_key(run_audit(settings.replace(new_run=True)))
    assert not rows[("img/pipe.png", 0)]["error"] and "no such file" in rows[("img/late.png", 0)]["error"]


def test_a_folder_output_that_appears_or_is_replaced_is_refused(tmp_path, fakes):  # noqa: F811
    outs = tmp_path / "outs"
    outs.mkdir()
    for i in range(4):
        repaint(outs / f"face{i:02d}.png", (30 * i, 60, 30))
    repaint(outs / "face04.jpg", (200, 60, 30))
    (outs / "face05.png").write_bytes(b"not an image")
    settings = config(tmp_path, upsampler="folder", folder=str(outs))
    rows = rows_by_key(run_audit(settings))
    assert rows[("img/face05.png", 0)]["ups_file"] == "face05.png" and rows[("img/face05.png", 0)]["error"]
    assert rows[("img/face06.png", 0)]["ups_file"] == "" and rows[("img/face06.png", 0)]["error"]
    repaint(outs / "face06.png")
    assert (f"upsampler output {outs / 'face06.png'} changed since its rows were stored (no output for "
            "'img/face06.png' sample 0 was found then)") in refusal(settings)
    (outs / "face06.png").unlink()
    repaint(outs / "face05.png")  # unreadable then, readable now
    assert f"upsampler output {outs / 'face05.png'} changed since its rows were stored (SHA-256 " in refusal(settings)
    (outs / "face05.png").write_bytes(b"not an image")
    repaint(outs / "face04.png")  # read before face04.jpg by a new run
    assert (f"upsampler output {outs / 'face04.jpg'} changed since its rows were stored (face04.png would be read "
            "in its place now)") in refusal(settings)
    (outs / "face04.png").unlink()
    assert len(rows_by_key(run_audit(settings))) == 9


def old_stamps(root: Path) -> None:
    """Rewrite the parts of ``root`` as a run stored before the inode change time, inode and device were."""
    for part in part_files(root / "parts"):
        table = pq.read_table(part)
        newer = [name for name in table.column_names if name.endswith(("_ctime_ns", "_inode", "_device"))]
        pq.write_table(table.drop_columns(newer), part)


def test_a_run_with_the_older_stamps_resumes_and_checks_them(tmp_path, fakes, monkeypatch):  # noqa: F811
    settings = config(tmp_path, upsampler="bicubic", batch_size=2)
    interrupted(monkeypatch, settings)
    old_stamps(Path(settings.out))
    face = tmp_path / "set" / "img" / "face00.png"
    before, data = face.stat(), face.read_bytes()
    hashed = counting_hashes(monkeypatch)
    interrupted(monkeypatch, settings, parts=1)  # stopped again after one more part, to resume a third time
    assert hashed == []  # size and modification time as stamped: nothing read
    face.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    os.utime(face, ns=(before.st_atime_ns, before.st_mtime_ns))
    run_audit(settings)  # the documented limit of the older stamps: same size and mtime pass unread
    assert hashed == []
    rows = rows_by_key(Path(settings.out))
    assert rows[("img/face00.png", 0)]["source_ctime_ns"] is None and rows[("img/face07.png", 0)]["source_inode"]
    os.utime(face, ns=(1, 1))
    assert f"input image {face} changed since its rows were stored (SHA-256 " in refusal(settings)


def test_stamps_round_trip_and_compare_only_the_fields_they_have(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    stamp = FileStamp.of(path.stat(), "sha")
    assert FileStamp.from_columns(stamp.columns("p_"), "p_") == stamp and stamp.same_stat(path.stat())
    assert FileStamp.from_columns({"p_sha256": None}, "p_") is None
    older = FileStamp("sha", 3, path.stat().st_mtime_ns, None, None, None)
    assert older.same_stat(path.stat()) and not FileStamp("sha", 3, 1, None, None, None).same_stat(path.stat())
    assert not FileStamp("sha", 3, stamp.mtime_ns, stamp.ctime_ns - 1, stamp.inode, stamp.device).same_stat(
        path.stat())
    huge = os.stat_result((0o100644, 2**64 - 1, 2**63, 1, 0, 0, 3, 0, 0, 0))  # inode, device past int64
    assert FileStamp.of(huge).inode == -1 and FileStamp.of(huge).device == -(2**63)


def test_a_changed_gaussian_fit_is_an_input_that_a_resume_refuses(tmp_path):
    """The Gaussian fit of W defines the search space but is not a weights file: another sample count
    ($PULSE_AUDIT_FIT_SAMPLES), a deleted or planted cache, or PULSE's own fit file changes every output. Its
    buffers' digest is a run input, so such a change between sessions is refused, and an unchanged reload is not."""
    from types import SimpleNamespace

    from test_stylegan1 import TINY, write_weights

    from audit.run.provenance import run_inputs, tensors_digest
    from pulse_engine.generators.stylegan1 import load_stylegan1_ffhq

    write_weights(tmp_path / "weights")
    first, again, other = (load_stylegan1_ffhq(tmp_path / "weights", "cpu", fit_samples=n, config=TINY)
                           for n in (500, 500, 600))
    digest = lambda generator: tensors_digest(generator.search_space_state())  # noqa: E731
    assert digest(first) == digest(again) != digest(other)
    faceset = SimpleNamespace(card="", attributes={}, root=tmp_path, name="none")
    before, after = (run_inputs(faceset, [], SimpleNamespace(generator=g), []) for g in (first, other))
    [key] = [k for k in before if "Gaussian fit" in k]
    assert before[key] != after[key] and {k: v for k, v in before.items() if k != key} == {
        k: v for k, v in after.items() if k != key}  # the weights files did not change
    RunStore.open(tmp_path / "run", {"option": 1}, inputs=before).close()
    with pytest.raises(PulseAuditError, match="Gaussian fit of W"):
        RunStore.open(tmp_path / "run", {"option": 1}, inputs=after)
    RunStore.open(tmp_path / "run", {"option": 1}, inputs=run_inputs(faceset, [], SimpleNamespace(generator=again),
                                                                     [])).close()


def test_swapped_classifier_weights_are_refused_end_to_end(tmp_path, monkeypatch):
    """The real FairFace classifier on random weights, through the registry and ``run_audit``: other weights
    behind the same ``fairface:PATH`` between sessions are refused; the original weights resume."""
    from audit.classifiers.fairface import WEIGHTS_FILE

    weights = tmp_path / WEIGHTS_FILE
    torch.save(random_fairface_state(seed=0), weights)
    original = weights.read_bytes()
    settings = config(tmp_path, upsampler="bicubic", classifiers=f"fairface:{weights}", batch_size=2)
    interrupted(monkeypatch, settings)
    torch.save(random_fairface_state(seed=1), weights)
    message = refusal(settings)
    assert f"classifier fairface weights file {WEIGHTS_FILE} changed since this run began" in message
    weights.write_bytes(original)
    rows = rows_by_key(run_audit(settings))
    assert len(rows) == 9 and {key for key, row in rows.items() if row["error"]} == {("img/broken.png", 0)}


def test_weights_files_that_share_a_name_are_each_an_input(tmp_path, fakes, monkeypatch):  # noqa: F811
    """A shifted member whose direction file is named like its base's weights (``weights.pt``): inputs were keyed
    by file name, so one hid the other and other base weights resumed silently into a mixed run."""
    from test_harness import _dcgan_folder

    from pulse_engine.generators.base import SHIFTED_CARD_FORMAT
    from pulse_engine.generators.checkpoint import sha256_file

    base, member = _dcgan_folder(tmp_path / "base", seed=0), tmp_path / "member"
    member.mkdir()
    torch.manual_seed(2)
    torch.save(torch.randn(1, 16), member / "weights.pt")
    (member / "card.json").write_text(json.dumps({
        "format": SHIFTED_CARD_FORMAT, "base": f"dcgan-file:{base}", "alpha": 1.0,
        "direction": {"file": "weights.pt", "sha256": sha256_file(member / "weights.pt")}}))
    settings = config(tmp_path, generator=f"shifted:{member}", steps=2, batch_size=2)
    interrupted(monkeypatch, settings)
    original = (base / "weights.pt").read_bytes()
    _dcgan_folder(base, seed=1)  # other weights of the same architecture behind the base
    assert "weights file weights.pt (1 of 2 so named) changed since this run began" in refusal(settings)
    (base / "weights.pt").write_bytes(original)
    root = run_audit(settings)
    assert len(rows_by_key(root)) == 9
    assert not any(str(tmp_path) in key for key in json.loads((root / "run.json").read_text())["inputs"])  # movable
