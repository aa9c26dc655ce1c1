"""A resumed run refuses, in one line, inputs that changed under its stored rows: face images (by
content), the ``folder`` upsampler's outputs, and the ``--align`` landmark model; unchanged files
(even touched or copied) resume without being read again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_harness import config, fakes, rows_by_key  # noqa: F401  (fakes is a fixture)

import audit.run.harness as harness
import audit.run.source_check as source_check
from audit.run.harness import run_audit
from audit.run.inputs import FFHQAligner, load_aligner
from audit.run.run_store import RunStore, read_results
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
    assert row["source_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert (row["source_bytes"], row["source_mtime_ns"]) == (image.stat().st_size, image.stat().st_mtime_ns)
    output = outs / "face00.png"
    assert row["ups_file_sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert row["ups_file_bytes"] == output.stat().st_size
    broken = rows_by_key(root)[("img/broken.png", 0)]
    assert broken["error"] and broken["source_sha256"] is None  # unreadable: no stamp


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
