"""The report layer over hostile run folders (issue 12): stored images that are decompression bombs, FIFOs or
paths leading out of the run folder become placeholder tiles with a one-line reason while the report is still
written; ``run.json`` values of the wrong JSON type, at the top or nested, are a one-line error naming the field,
never a traceback; generator cards named in ``run.json`` are read bounded."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_run import synthetic_run

from audit.core.schema import ITEM, PATH_OUT, PATH_TRUTH
from pulse_engine.errors import PulseAuditError
from reports.analysis import Settings
from reports.gallery import load_tile
from reports.instrument import scope_section
from reports.report import write_report
from reports.run_data import (
    Run,
    audit_specs,
    classifier_cards,
    label_provenance,
    load_run,
    run_summary,
    sample_rows,
    shift_specs,
)
from reports.study import composition_dose, generator_card, shift_dose, study_run

SIDE = 24


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


BOMB = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))
"""A 20000×20000 PNG header in 100 bytes: Pillow's own limit raises DecompressionBombError (not an OSError)."""


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("hostile") / "run", inputs=28)


@pytest.fixture()
def run_copy(base_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and 0 < len(text) < 400, text
    return text


def test_report_over_bombs_and_fifos_is_written_with_their_reasons(run_copy: Path) -> None:
    """Every truth.png replaced by a decompression-bomb header or a FIFO (the first by item id a bomb, which the
    skin-tone validation reads first): the report is still written, the gallery and the validation name why."""
    truths = sorted(run_copy.glob("images/*/truth.png"))
    assert len(truths) == 28
    for k, truth in enumerate(truths):
        truth.unlink()
        if k % 2:
            os.mkfifo(truth)
        else:
            truth.write_bytes(BOMB)
    paths = write_report(run_copy, settings=Settings(n_boot=20))
    html = paths["html"].read_text()
    assert "is a FIFO (named pipe), not an image file" in html
    assert "pixel budget" in html
    assert "missing or unreadable (grey tiles)" in html
    report = json.loads(paths["json"].read_text())
    validation = report["instrument_validation"]
    assert validation["faces"]["total"] == 8  # the outputs only: every truth image was refused
    assert len(validation["unreadable"]) == 8 and all("truth.png" in p for p in validation["unreadable"])


@pytest.mark.parametrize("relative, reason", [
    ("/etc/passwd", "is not images/<id>/<name>.png"),
    ("images/../run.json", "is not images/<id>/<name>.png"),
    ("../outside/images/a/truth.png", "is not images/<id>/<name>.png"),
    ("images/a/../../run.json", "is not images/<id>/<name>.png"),
    ("images/x/truth.png\n<b>", "is not images/<id>/<name>.png"),
    ("images/" + "a" * 5000 + "/truth.png", "is not images/<id>/<name>.png"),
    ("images/planted/outside.png", "a link out of the run folder"),
    ("images/planted/loop.png", "cannot be resolved"),
    ("images/planted/absent.png", "no such file"),
    ("images/planted/text.png", "not a readable image"),
    ("images/planted/folder.png", "is a folder"),
    ("images/planted/wide.png", "not square"),
])
def test_a_stored_image_that_cannot_be_read_is_a_placeholder_with_one_line(run_copy: Path, relative: str,
                                                                            reason: str) -> None:
    planted = run_copy / "images" / "planted"
    planted.mkdir()
    outside = run_copy.parent / "outside.png"
    Image.new("RGB", (8, 8), "red").save(outside)
    (planted / "outside.png").symlink_to(outside)
    (planted / "loop.png").symlink_to(planted / "loop.png")
    (planted / "text.png").write_text("not a png")
    (planted / "folder.png").mkdir()
    Image.new("RGB", (16, 8), "red").save(planted / "wide.png")
    run = load_run(run_copy)
    tile, problem = load_tile(run, relative, SIDE)
    assert reason in _one_line(problem) and len(problem) < 400
    assert tile is not None and tile.shape == (3, SIDE, SIDE)
    assert float(tile.std()) > 0  # the placeholder is marked, not a blank cell
    with pytest.raises(PulseAuditError):
        run.read_image(relative)


def test_stored_images_and_empty_cells(run_copy: Path) -> None:
    """A regular stored image is read and scaled to the tile; a row without an image has no tile and no reason."""
    run = load_run(run_copy)
    relative = str(run.faces.sort_values(ITEM)[PATH_TRUTH].iloc[0])
    tile, problem = load_tile(run, relative, SIDE)
    stored = torch.from_numpy(np.array(Image.open(run_copy / relative).convert("RGB")))
    assert problem == "" and tile.shape == (3, SIDE, SIDE)
    assert torch.allclose(tile[:, 0, 0] * 255, stored[0, 0].float())
    for empty in ("", None, float("nan"), 3):
        assert load_tile(run, empty, SIDE) == (None, "")
    faces = run.faces.copy()
    faces[PATH_OUT] = faces[PATH_OUT].where(faces[ITEM] != faces[ITEM].min(), None)  # an output not stored
    run.faces = faces
    samples = sample_rows(run, [], per_group=2)
    assert samples[0]["items"][0]["outs"] == [""] and samples[0]["items"][1]["outs"][0].endswith(".png")


def _readers(run: Run) -> None:
    """Every reader of run.json the report, card, comparison and study paths call."""
    run_summary(run)
    label_provenance(run)
    classifier_cards(run)
    audit_specs(run)
    shift_specs(run)
    scope_section(run)
    study_run(run)


def _set(record: dict, path: tuple, value: object) -> dict:
    record = copy.deepcopy(record)
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return record


HOSTILE_KEY = "race<script>\n" + "x" * 5000
CASES = [  # (path in run.json, wrong value, the field the error must name)
    (("dataset",), ["x"], "dataset"),
    (("generator",), "x", "generator"),
    (("classifiers",), {"a": 1}, "classifiers"),
    (("sampling",), ["x"], "sampling"),
    (("upsampler",), ["x"], "upsampler"),
    (("config",), ["x"], "config"),
    (("created",), ["x"], "created"),
    (("dataset", "labels"), "race", "dataset.labels is a string"),
    (("dataset", "labels", "race"), ["White"], "dataset.labels.race is an array"),
    (("dataset", "labels", "race", "values"), "White", "dataset.labels.race.values is a string"),
    (("dataset", "labels", "race", "values", 0), 7, "dataset.labels.race.values[0] is an integer"),
    (("dataset", "labels", "race", "notes"), {"a": 1}, "dataset.labels.race.notes is an object"),
    (("dataset", "labels", HOSTILE_KEY), 5, "dataset.labels['race<script>"),
    (("dataset", "name"), ["x"], "dataset.name is an array"),
    (("sampling", "summary"), "one line", "sampling.summary is a string"),
    (("sampling", "summary", 0), None, "sampling.summary[0] is null"),
    (("classifiers", 0), "fairface", "classifiers[0] is a string"),
    (("classifiers", 0, "name"), 3, "classifiers[0].name is an integer"),
    (("classifiers", 0, "attributes"), ["race"], "classifiers[0].attributes is an array"),
    (("classifiers", 0, "attributes", "race"), "White", "classifiers[0].attributes.race is a string"),
    (("classifiers", 1, "limits"), ["a"], "classifiers[1].limits is an array"),
    (("classifiers", 2, "weights"), 5, "classifiers[2].weights is an integer"),
    (("classifiers", 2, "weights"), [{"path": 5, "sha256": ""}], "classifiers[2].weights[0].path is an integer"),
    (("generator", "name"), ["x"], "generator.name is an array"),
    (("generator", "notes"), "abc", "generator.notes is a string"),
    (("generator", "weights"), ["x"], "generator.weights[0] is a string"),
    (("upsampler", "resolution"), "64", "upsampler.resolution is a string"),
    (("upsampler", "resolution"), True, "upsampler.resolution is true or false"),
    (("config", "group_by"), "race", "config.group_by is a string"),
    (("config", "factor"), 4.5, "config.factor is a number, expected an integer"),
]


@pytest.mark.parametrize("path, value, named", CASES,
                         ids=[f"{'.'.join(map(str, c[0]))[:20]}-{type(c[1]).__name__}".replace("\n", "_")
                              for c in CASES])
def test_a_run_json_value_of_another_type_is_one_line_naming_it(base_run: Path, path: tuple, value: object,
                                                                 named: str) -> None:
    run = load_run(base_run)
    with pytest.raises(PulseAuditError) as caught:  # top-level keys are refused when the Run is made
        _readers(Run(run.root, _set(run.meta, path, value), run.table))
    assert named in _one_line(caught.value)


@pytest.mark.parametrize("key, value", [("sessions", "x"), ("packages", ["x"])])
def test_top_level_session_fields_of_another_type(base_run: Path, key: str, value: object) -> None:
    """Read (sessions left out) or refused in one line naming the key, as record_value decides."""
    run = load_run(base_run)
    try:
        _readers(Run(run.root, _set(run.meta, (key,), value), run.table))
    except PulseAuditError as exc:
        assert key in _one_line(exc)


def test_session_entries_of_another_type_are_shown_as_not_recorded(base_run: Path) -> None:
    run = load_run(base_run)
    hostile = Run(run.root, _set(run.meta, ("sessions",), [5, "x", {"packages": 3, "started": ["x"] * 1000}]),
                  run.table)
    _readers(hostile)
    sessions = run_summary(hostile)["sessions"]
    assert len(sessions) == 1 and sessions[0]["torch"] == "" and len(sessions[0]["started"]) <= 40


def test_write_report_refuses_a_nested_wrong_type_in_one_line(run_copy: Path) -> None:
    record = json.loads((run_copy / "run.json").read_text())
    (run_copy / "run.json").write_text(json.dumps(_set(record, ("dataset", "labels", "race", "values"), "White")))
    with pytest.raises(PulseAuditError, match=r"dataset\.labels\.race\.values is a string, expected an array"):
        write_report(run_copy, settings=Settings(n_boot=20))
    assert not (run_copy / "report").exists()


def test_generator_cards_named_in_run_json_are_read_bounded(base_run: Path, tmp_path: Path) -> None:
    """A FIFO, a folder or a 2 MB file named card.json is left out (no hang, no memory use); wrong-typed card
    fields give no dose instead of a traceback."""
    run = load_run(base_run)
    fifo, big, folder, card = (tmp_path / n / "card.json" for n in ("fifo", "big", "folder", "card"))
    for path in (fifo, big, folder, card):
        path.parent.mkdir()
    os.mkfifo(fifo)
    big.write_bytes(b" " * (2 << 20) + b"{}")
    folder.mkdir()
    card.write_text(json.dumps({"alpha": "2", "training_data": ["light"]}))
    weights = [{"path": str(p), "sha256": ""} for p in (fifo, big, folder, card)]
    hostile = Run(run.root, _set(run.meta, ("generator", "weights"), weights), run.table)
    assert generator_card(hostile) == {"alpha": "2", "training_data": ["light"]}
    assert math.isnan(study_run(hostile).dose)  # no dose in the card
    assert shift_dose({"alpha": 10 ** 400}) is None and shift_dose({"alpha": 0.5}) == 0.5
    assert composition_dose({"training_data": {"counts": {"light": "3", "dark": 1}}})[1] == ""
    assert composition_dose({"training_data": {"counts": {"light": 0, "dark": 0}}})[1] == ""
    assert composition_dose({"training_data": {"counts": {"light": 3, "dark": 1}}}) == (0.75, "light 75% · dark 25%")


def test_a_generator_cards_prior_fields_of_other_types_are_no_prior():
    from audit.metrics.study import card_prior_ita

    for card in ({"samples_skin_tone": [1]}, {"samples_skin_tone": {"ita_mean_deg": 10**400}},
                 {"samples_skin_tone": {"ita_mean_deg": True}}, {"samples_skin_tone": {"ita_mean_deg": "1"}},
                 {"samples_skin_tone": {"ita_mean_deg": float("nan")}}, ["x"], None):
        assert set(card_prior_ita(card).values()) == {None}, card
    assert card_prior_ita({"samples_skin_tone": {"ita_mean_deg": -12}})["detector"] == -12.0


def test_a_run_record_too_deep_or_too_large_is_one_line(tmp_path):
    from audit.run.run_store import RUN_RECORD_MAX_BYTES, read_run_record

    for name, text in {"deep": "[" * 200_000, "large": '{"x": "' + "y" * RUN_RECORD_MAX_BYTES + '"}',
                       "not an object": "[1]", "not JSON": "{"}.items():
        root = tmp_path / name.replace(" ", "-")
        root.mkdir()
        (root / "run.json").write_text(text)
        with pytest.raises(PulseAuditError) as caught:
            read_run_record(root)
        message = str(caught.value)
        assert "run.json is not a usable run record" in message and "\n" not in message and len(message) < 300
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "run.json")
    with pytest.raises(PulseAuditError, match="not a regular file"):
        read_run_record(tmp_path / "fifo")


def test_a_report_of_a_run_whose_classifier_found_no_face_is_written(tmp_path, monkeypatch):
    """A classifier that read no original (no face found on any: tiny or odd faces) left nothing to compare its
    outputs with; the report raised "no rows to summarise" as a traceback. Now that attribute is not compared."""
    from test_harness import FakeTone, config

    import audit.run.harness as harness
    from audit.core.records import Prediction
    from audit.run.harness import run_audit

    class Blind(FakeTone):
        def predict(self, images):
            return [Prediction(False) for _ in images]

    monkeypatch.setattr(harness, "build_classifier", lambda spec, device: Blind())
    root = run_audit(config(tmp_path, upsampler="bicubic", classifiers="skin-tone", batch_size=4))
    written = write_report(root, settings=Settings(n_boot=20))
    assert written and all(Path(path).is_file() for path in written.values())
