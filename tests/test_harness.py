"""The audit harness: upsamplers, inputs, rows, configuration, and `pulse-audit run` end to end,
including kill-and-resume of a real run."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from held_child import HeldChild, python_command
from PIL import Image

import audit.run.harness as harness
from audit.core.records import Classifier, ClassifierCard, FaceItem, Prediction, UpsampleInput
from audit.run.harness import AuditConfig, run_audit
from audit.run.inputs import average_faces, low_of, ucpr_inputs
from audit.run.rows import prediction_columns, safe_predict
from audit.run.run_store import read_results
from audit.upsamplers import (
    FolderUpsampler,
    InterpolateUpsampler,
    OracleUpsampler,
    PulseUpsampler,
    build_upsampler,
    output_error,
)
from audit.vision.images import to_tensor
from pulse_engine.errors import ConfigError, PulseAuditError
from pulse_engine.search import SearchConfig, pulse_search

REPO = Path(__file__).resolve().parents[1]
SEARCH_KEYS = {"success", "lr_l2", "best_step", "steps", "restarts_used", "seed", "batch_seconds"}


def make_faceset(root: Path, count: int = 8, broken: bool = True) -> Path:
    """A folder face set: smooth coloured 40 px images, race A/B and gender f/m in manifest.csv."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = ["path,race,gender"]
    for i in range(count):
        coarse = rng.random((5, 5, 3)) * 200 + 30
        size = (48, 40) if i == 1 else (40, 40)  # one non-square photo: centre-cropped
        image = Image.fromarray(coarse.astype(np.uint8)).resize(size, Image.BICUBIC)
        (root / "img").mkdir(exist_ok=True)
        image.save(root / "img" / f"face{i:02d}.png")
        lines.append(f"img/face{i:02d}.png,{'AB'[i % 2]},{'fm'[(i // 2) % 2]}")
    if broken:
        (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
        lines.append("img/broken.png,A,m")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


class FakeTone(Classifier):
    """Test stand-in named like the skin-tone classifier: brightness as 'tone' and as 'ita'."""

    name = "skin-tone"
    card = ClassifierCard("skin-tone", "test fake: mean brightness")
    attributes = {"tone": ("dark", "light")}
    value_names = ("ita",)

    def predict(self, images):
        out = []
        for image in images:
            level = float(image.mean()) / 255
            out.append(Prediction(True, {"tone": {"dark": 1 - level, "light": level}}, {"ita": 100 * level - 50}))
        return out


class FakeIdentity(Classifier):
    """Test stand-in named like the identity classifier: mean colour as the embedding."""

    name = "identity"
    card = ClassifierCard("identity", "test fake: mean colour")
    attributes: dict = {}

    def predict(self, images):
        return [Prediction(True, embedding=image.reshape(-1, 3).mean(0) / 255) for image in images]


@pytest.fixture()
def fakes(monkeypatch):
    registry = {"skin-tone": FakeTone, "identity": FakeIdentity}
    monkeypatch.setattr(harness, "build_classifier", lambda spec, device: registry[spec]())


def config(tmp_path: Path, **options) -> AuditConfig:
    base = dict(dataset=f"folder:{make_faceset(tmp_path / 'set')}", generator="dcgan-tiny", per_group=0,
                classifiers="skin-tone,identity", factor=4, steps=5, restarts=1, device="cpu",
                out=str(tmp_path / "run"))
    return AuditConfig.from_mapping({**base, **options})


def rows_by_key(root: Path) -> dict[tuple[str, int], dict]:
    return {(row["item_id"], row["sample"]): row for row in pq.read_table(root / "results.parquet").to_pylist()}


def png(root: Path, relative: str) -> np.ndarray:
    return np.asarray(Image.open(root / relative))


# ------------------------------------------------------------------------------------------ upsamplers

def test_interpolation_and_oracle_upsamplers():
    low, truth = torch.rand(3, 8, 8), torch.rand(3, 32, 32)
    inputs = [UpsampleInput("a", low, truth)]
    bicubic = InterpolateUpsampler("bicubic", 32).upsample(inputs, 2)[0]
    expected = F.interpolate(low[None], size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)[0]
    assert len(bicubic) == 2 and torch.equal(bicubic[0].image, expected) and torch.equal(bicubic[1].image, expected)
    nearest = InterpolateUpsampler("nearest", 32).upsample(inputs, 1)[0][0].image
    assert torch.equal(nearest, low.repeat_interleave(4, 1).repeat_interleave(4, 2))
    oracle = OracleUpsampler(32).upsample(inputs, 2)[0]
    assert all(torch.equal(out.image, truth) for out in oracle) and oracle[0].image is not truth
    consistent = UpsampleInput("b", low_of(truth, 4), truth)
    assert OracleUpsampler(32).upsample([consistent], 1)[0][0].diagnostics["lr_l2"] == pytest.approx(0, abs=1e-12)
    with pytest.raises(PulseAuditError, match="no true HR image"):
        OracleUpsampler(32).upsample([UpsampleInput("ucpr/x", low)], 1)


def test_pulse_upsampler_uses_item_sample_keys(tiny_generator):
    search = SearchConfig(steps=3, restarts=1, seed=5)
    low = torch.rand(2, 3, 8, 8)
    outputs = PulseUpsampler(tiny_generator, search).upsample([UpsampleInput("p/a.png", low[0]),
                                                               UpsampleInput("b", low[1])], 2)
    direct = pulse_search(tiny_generator, low.repeat_interleave(2, 0), search, ["p/a.png#0", "p/a.png#1", "b#0", "b#1"])
    flat = [out for per_input in outputs for out in per_input]
    assert [o.diagnostics["seed"] for o in flat] == [r.seed for r in direct]
    assert all(torch.allclose(o.image, r.image, atol=1e-5) for o, r in zip(flat, direct))
    assert set(flat[0].diagnostics) == SEARCH_KEYS and flat[0].diagnostics["seed"] != flat[1].diagnostics["seed"]


def test_folder_upsampler_matches_by_file_name(tmp_path):
    folder = tmp_path / "outs"
    folder.mkdir()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(folder / "x.png")
    Image.new("RGB", (32, 32), (40, 50, 60)).save(folder / "x_1.png")
    Image.new("RGB", (64, 64), (70, 80, 90)).save(folder / "y_0.png")
    (folder / "w.png").write_bytes(b"broken")
    low = torch.rand(3, 8, 8)
    inputs = [UpsampleInput(name, low) for name in ("sub/x.jpg", "y.png", "z.png", "w.png")]
    (x0, x1), (y0, y1), (z0, _), (w0, _) = FolderUpsampler(folder, 32).upsample(inputs, 2)
    assert x0.image[:, 0, 0].mul(255).round().tolist() == [10, 20, 30] and x0.diagnostics["file"] == "x.png"
    assert x1.image[:, 0, 0].mul(255).round().tolist() == [40, 50, 60]
    assert y0.image.shape == (3, 32, 32) and y0.diagnostics["source_px"] == 64 and "lr_l2" in y0.diagnostics
    assert "no output for 'y.png' sample 1" in output_error(y1) and "y_1.png" in output_error(y1)
    assert "expected z_0.png or z.png" in output_error(z0)
    assert "not a readable image" in output_error(w0)
    with pytest.raises(PulseAuditError, match="needs --folder"):
        build_upsampler("folder", "dcgan-tiny")
    assert build_upsampler("bicubic", "dcgan-tiny").resolution == 32


# ------------------------------------------------------------------------------------------ inputs, rows

def test_ucpr_inputs_are_group_averages_at_4px(tmp_path):
    root = make_faceset(tmp_path / "set", count=4, broken=True)
    items = [FaceItem(f"f{i}", root / "img" / f"face{i:02d}.png", {"race": "AB"[i % 2]}) for i in range(4)]
    items.append(FaceItem("bad", root / "img" / "broken.png", {"race": "A"}))
    averages = average_faces(items, ["race"], 32)
    faces = [to_tensor(Image.open(items[i].path).resize((32, 32), Image.LANCZOS)) for i in (0, 2)]
    assert torch.allclose(averages["A"], (faces[0] + faces[1]) / 2, atol=1e-6)
    inputs = ucpr_inputs(averages)
    assert [i.item_id for i in inputs] == ["ucpr/A", "ucpr/B"]
    assert inputs[0].low.shape == (3, 4, 4) and inputs[0].truth is None


def test_prediction_columns_and_failing_classifier():
    columns = prediction_columns("out", FakeTone(), Prediction(False))
    assert columns == {"out_skin-tone_face": False, "out_skin-tone_tone": "", "out_skin-tone_tone_p_dark": None,
                       "out_skin-tone_tone_p_light": None, "out_skin-tone_ita": None}

    class Flaky(FakeTone):
        def predict(self, images):
            if any(image.max() == 0 for image in images):
                raise RuntimeError("black image")
            return super().predict(images)

    images = [np.full((8, 8, 3), 200, np.uint8), np.zeros((8, 8, 3), np.uint8)]
    good, bad = safe_predict(Flaky(), images)
    assert good.face_found and not bad.face_found and "RuntimeError: black image" in bad.error


# ------------------------------------------------------------------------------------------ configuration

def test_config_from_toml_with_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('dataset = "folder:/data/faces"\nper-group = 50\ngroup_by = ["race", "gender"]\n'
                    'classifiers = "skin-tone, identity"\nalign = true\neps = 1\n')
    settings = AuditConfig.from_toml(path, per_group=7, out="runs/x")
    assert settings.per_group == 7 and settings.group_by == ("race", "gender") and settings.align is True
    assert settings.classifiers == ("skin-tone", "identity") and settings.search.eps == 1.0 and settings.out == "runs/x"
    assert settings.fingerprint()["per_group"] == 7 and "out" not in settings.fingerprint()
    assert AuditConfig(classifiers="none").classifiers == ()
    path.write_text("per_grup = 3\n")
    with pytest.raises(PulseAuditError, match="unknown option 'per_grup'"):
        AuditConfig.from_toml(path)
    path.write_text('samples = "two"\n')
    with pytest.raises(PulseAuditError, match="samples must be an integer"):
        AuditConfig.from_toml(path)
    for bad, message in [(dict(upsampler="gan"), "unknown upsampler"), (dict(upsampler="oracle", ucpr=2), "no truth"),
                         (dict(crop="left"), "--crop"), (dict(steps=0), "steps")]:
        with pytest.raises(PulseAuditError, match=message):
            AuditConfig.from_mapping(bad).validate()



def test_config_holds_one_search_config(tmp_path):
    """Search defaults come from SearchConfig (an audit retries 3 times); settings are read flat or from a [search]
    table; the fingerprint stays flat, so a run.json written before the nesting still matches."""
    defaults = AuditConfig()
    assert defaults.search == dataclasses.replace(SearchConfig(), restarts=3) and defaults.seed == 0
    path = tmp_path / "run.toml"
    path.write_text('steps = 7\n[search]\nlearning-rate = 0.1\nsteps = 9\noptimizer = "sgd"\n')
    settings = AuditConfig.from_toml(path, seed=4)
    assert (settings.search.steps, settings.search.learning_rate, settings.seed) == (7, 0.1, 4)
    before_nesting = {"dataset": "demo", "upsampler": "pulse", "generator": "dcgan-digiface", "folder": "",
                      "resolution": 0, "classifiers": ["skin-tone", "age-gender", "identity"], "per_group": 200,
                      "group_by": [], "factor": 8, "samples": 1, "seed": 0, "restarts": 3, "steps": 100, "eps": 0.002,
                      "loss": "100*L2+0.05*GEOCROSS", "learning_rate": 0.4, "sphere_radius": "sqrt-dim", "ucpr": 0,
                      "ucpr_size": 4, "align": False, "crop": "center", "batch_size": 16, "device": "auto"}
    assert json.loads(json.dumps(defaults.fingerprint())) == before_nesting
    assert settings.fingerprint()["optimizer"] == "sgd"  # a setting away from its default is part of the run
    assert defaults.replace(steps=5).search.steps == 5 and defaults.replace(steps=5).search.restarts == 3
    for bad, message in [({"search": {"stesp": 1}}, "unknown search setting 'stesp'"),
                         ({"steps": "many"}, "steps must be an integer"), ({"eps": 0}, "eps")]:
        with pytest.raises(ConfigError, match=message):
            AuditConfig.from_mapping(bad)

# ------------------------------------------------------------------------------------------ runs in process

def test_oracle_run_is_the_classifiers_noise_floor(tmp_path, fakes):
    root = run_audit(config(tmp_path, upsampler="oracle", samples=2))
    rows = rows_by_key(root)
    assert len(rows) == 18  # 8 faces + 1 broken, 2 samples each
    broken = rows[("img/broken.png", 1)]
    assert "not a readable image" in broken["error"] and broken["label_race"] == "A"
    for (item_id, _sample), row in rows.items():
        if item_id == "img/broken.png":
            continue
        assert row["error"] == "" and row["label_source_race"] == "annotated"
        assert np.array_equal(png(root, row["path_out"]), png(root, row["path_truth"]))
        assert row["identity_distance"] == 0 and row["delta_ita"] == 0
        assert row["psnr"] == 100.0 and row["ssim"] == pytest.approx(1.0)  # PSNR of equal images is capped
        assert row["in_skin-tone_tone_p_light"] == row["out_skin-tone_tone_p_light"]
        assert png(root, row["path_lr"]).shape == (8, 8, 3)
    assert rows[("img/face01.png", 0)]["label_gender"] == "f" and rows[("img/face02.png", 0)]["label_gender"] == "m"


def test_pulse_run_with_ucpr_writes_every_column(tmp_path, fakes):
    root = run_audit(config(tmp_path, samples=2, ucpr=3, per_group=2, group_by="race,gender", batch_size=4))
    table = read_results(root)
    keys = list(zip(table.column("item_id").to_pylist(), table.column("sample").to_pylist()))
    assert len(keys) == len(set(keys)) == 8 * 2 + 4 * 3
    rows = rows_by_key(root)
    face, ucpr = rows[("img/face00.png", 1)], rows[("ucpr/A × f", 2)]
    documented = ["run_id", "item_id", "sample", "input_kind", "group", "label_race", "label_source_gender",
                  "path_source", "path_truth", "path_lr", "path_out", *(f"ups_{k}" for k in SEARCH_KEYS),
                  "in_skin-tone_face", "in_skin-tone_tone", "in_skin-tone_tone_p_dark", "in_skin-tone_ita",
                  "out_skin-tone_face", "out_skin-tone_tone_p_light", "out_skin-tone_ita", "in_identity_face",
                  "out_identity_face", "identity_distance", "delta_ita", "psnr", "ssim", "t_upsample_s",
                  "t_classify_s", "error"]
    assert not [c for c in documented if c not in table.column_names]
    assert face["delta_ita"] == pytest.approx(face["out_skin-tone_ita"] - face["in_skin-tone_ita"])
    out, truth = (png(root, face[k]).astype(float) / 255 for k in ("path_out", "path_truth"))
    assert face["psnr"] == pytest.approx(10 * np.log10(1 / np.mean((out - truth) ** 2)), abs=0.05)  # PNGs are 8-bit
    assert ucpr["psnr"] is None and ucpr["ssim"] is None
    assert face["group"] == "A × f" and face["input_kind"] == "face" and face["t_upsample_s"] > 0
    assert ucpr["input_kind"] == "ucpr" and ucpr["label_race"] == "A" and ucpr["label_gender"] == "f"
    assert ucpr["path_truth"] == "" and ucpr["in_skin-tone_face"] is None and ucpr["identity_distance"] is None
    assert png(root, ucpr["path_lr"]).shape == (4, 4, 3)
    assert rows[("ucpr/A × f", 0)]["ups_seed"] != ucpr["ups_seed"]
    record = json.loads((root / "run.json").read_text())
    assert {"config", "packages", "git_commit", "seeds", "generator", "classifiers", "dataset", "sampling"} <= set(
        record)
    assert record["dataset"]["labels"]["race"]["source"] == "annotated"
    assert [g["selected"] for g in record["sampling"]["groups"]] == [2, 2, 2, 2]


def test_folder_upsampler_run_records_missing_outputs(tmp_path, fakes):
    outs = tmp_path / "outs"
    outs.mkdir()
    Image.new("RGB", (32, 32), (90, 60, 30)).save(outs / "face00.png")
    root = run_audit(config(tmp_path, upsampler="folder", folder=str(outs)))
    rows = rows_by_key(root)
    assert rows[("img/face00.png", 0)]["error"] == "" and rows[("img/face00.png", 0)]["ups_file"] == "face00.png"
    assert "no output for 'img/face03.png'" in rows[("img/face03.png", 0)]["error"]


def test_fairface_layout_runs_with_labels_from_the_csv(tmp_path, fakes):
    root = tmp_path / "fairface"
    (root / "val").mkdir(parents=True)
    races = ["White", "Black", "East Asian", "Indian", "Southeast Asian", "Latino_Hispanic"]
    lines = ["file,age,gender,race,service_test"]
    for i, race in enumerate(races):
        Image.new("RGB", (40, 40), (40 * i, 100, 200 - 30 * i)).save(root / "val" / f"{i + 1}.jpg")
        lines.append(f"val/{i + 1}.jpg,20-29,{('Male', 'Female')[i % 2]},{race},True")
    (root / "fairface_label_val.csv").write_text("\n".join(lines) + "\n")
    out = run_audit(config(tmp_path, dataset=f"fairface:{root}", upsampler="bicubic", per_group=1, group_by="race4",
                           ucpr=1))
    rows = rows_by_key(out)
    assert {key for key in rows if key[0].startswith("val/")} == {("val/1.jpg", 0), ("val/2.jpg", 0),
                                                                  ("val/3.jpg", 0), ("val/4.jpg", 0)}
    assert rows[("val/3.jpg", 0)]["label_race"] == "East Asian" and rows[("val/3.jpg", 0)]["label_race4"] == "Asian"
    assert rows[("val/2.jpg", 0)]["label_gender"] == "Female" and rows[("val/2.jpg", 0)]["label_age"] == "20-29"
    assert {key[0] for key in rows if key[0].startswith("ucpr/")} == {"ucpr/White", "ucpr/Black", "ucpr/Asian",
                                                                       "ucpr/Indian"}
    assert all(row["error"] == "" and row["ups_lr_l2"] >= 0 for row in rows.values())


# ------------------------------------------------------------------------------------------ the CLI, for real

def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_cli_run_end_to_end_with_offline_classifiers(tmp_path):
    dataset = make_faceset(tmp_path / "set")
    toml = tmp_path / "run.toml"
    toml.write_text(f'dataset = "folder:{dataset}"\ngenerator = "dcgan-tiny"\nper-group = 2\nfactor = 4\n'
                    'steps = 10\nrestarts = 1\nclassifiers = ["skin-tone", "age-gender", "identity"]\n'
                    f'device = "cpu"\nout = "{tmp_path / "ignored"}"\n')
    done = cli("run", "--config", toml, "--samples", "2", "--ucpr", "2", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert "rows (0 failed)" in done.stderr and not (tmp_path / "ignored").exists()
    table = pq.read_table(tmp_path / "run" / "results.parquet")
    assert table.num_rows == 4 * 2 + 2 * 2
    for column in ("out_age-gender_gender_p_Female", "in_skin-tone_monk_p_MST5", "identity_distance",
                   "delta_ita", "ups_lr_l2", "out_identity_face"):
        assert column in table.column_names


def test_cli_doctor_and_one_line_errors(tmp_path):
    done = cli("doctor")
    assert done.returncode == 0 and "skin-tone" in done.stdout and "dcgan-tiny" in done.stdout
    done = cli("run", "--dataset", f"folder:{make_faceset(tmp_path / 'set')}", "--generator", "dcgan-tiny",
               "--group-by", "colour", "--out", tmp_path / "run")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and "colour" in lines[0], done.stderr


def _parts(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "parts").glob("part-*.parquet"))}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and isinstance(b[k], float) and math.isnan(a[k]) and math.isnan(b[k]))
        for k in a)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_exactly(tmp_path, sig):
    dataset = make_faceset(tmp_path / "set", count=8)
    out = tmp_path / "run"
    command = [*python_command("audit"), "run", "--dataset", f"folder:{dataset}", "--generator", "dcgan-tiny",
               "--classifiers", "skin-tone", "--per-group", "0", "--factor", "4", "--samples", "2", "--steps", "10",
               "--restarts", "1", "--batch-size", "1", "--device", "cpu", "--out", str(out)]
    child = HeldChild(command, tmp_path / "gate", "part", 3)
    child.wait_held()
    code, _, stderr = child.signal(sig)
    if sig == signal.SIGINT:
        assert code == 130 and "run the same command to resume" in stderr, stderr
    else:
        assert code == -signal.SIGKILL
    parts_before = _parts(out)
    rows_before = read_results(out).to_pylist()
    assert len(parts_before) == 3 and len(rows_before) == 3 * 2  # one input × 2 samples per part
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out / "results.parquet").to_pylist()
    keys = [(row["item_id"], row["sample"]) for row in rows]
    expected = {(f"img/face{i:02d}.png", k) for i in range(8) for k in range(2)} | {("img/broken.png", 0),
                                                                                    ("img/broken.png", 1)}
    assert len(keys) == len(set(keys)) and set(keys) == expected
    after = _parts(out)
    assert all(after[name] == content for name, content in parts_before.items())
    final = {(row["item_id"], row["sample"]): row for row in rows}
    for row in rows_before:
        assert _same({k: v for k, v in final[(row["item_id"], row["sample"])].items() if k in row}, row)


def _dcgan_folder(folder: Path, seed: int) -> Path:
    """A ``dcgan-file`` generator folder (random 32 px weights of ``seed``)."""
    from pulse_engine.generators.dcgan import DCGANGenerator

    torch.manual_seed(seed)
    folder.mkdir(exist_ok=True)
    torch.save(DCGANGenerator(nz=16, ngf=4, resolution=32).state_dict(), folder / "weights.pt")
    card = {"name": "mine", "architecture": {"family": "DCGAN", "nz": 16, "ngf": 4, "resolution": 32, "channels": 3}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_resume_refuses_replaced_weights_and_edited_labels(tmp_path, fakes):
    generator = _dcgan_folder(tmp_path / "gen", seed=0)
    settings = config(tmp_path, generator=f"dcgan-file:{generator}", steps=2)
    first = run_audit(settings)
    run_id = json.loads((first / "run.json").read_text())["run_id"]
    _dcgan_folder(generator, seed=1)  # other weights behind the same path
    with pytest.raises(PulseAuditError, match=r"generator mine weights file weights.pt changed since this run began"):
        run_audit(settings)
    _dcgan_folder(generator, seed=0)
    run_audit(settings)  # the same weights again: resumes (nothing left to do)
    manifest = tmp_path / "set" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("img/face01.png,B,f", "img/face01.png,B,m"))
    with pytest.raises(PulseAuditError, match=r"face set .* \(sampled items, their paths and labels\) changed"):
        run_audit(settings)
    root = run_audit(settings.replace(new_run=True))
    rows = rows_by_key(root)
    assert rows[("img/face01.png", 0)]["label_gender"] == "m" and len(rows) == 9
    assert {row["run_id"] for row in rows.values()} == {json.loads((root / "run.json").read_text())["run_id"]} != {
        run_id}


def test_a_full_disk_stops_the_run_in_one_line_and_the_same_command_resumes(tmp_path, fakes, monkeypatch):
    settings = config(tmp_path, upsampler="bicubic", samples=2, batch_size=2)
    real_fsync, calls = os.fsync, []

    def filling(fd):
        calls.append(fd)
        if len(calls) > 12:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", filling)
    with pytest.raises(PulseAuditError, match="No space left on device; everything stored before is kept") as caught:
        run_audit(settings)
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(os, "fsync", real_fsync)
    out = Path(settings.out)
    stored = read_results(out).to_pylist()
    assert stored and not list(out.rglob("*.tmp"))
    run_audit(settings)
    rows = rows_by_key(out)
    assert len(rows) == 18 and all(_same({k: v for k, v in rows[(r["item_id"], r["sample"])].items() if k in r}, r)
                                    for r in stored)


def test_ucpr_inputs_take_a_configurable_side():
    import torch

    from audit.run.inputs import ucpr_inputs

    averages = {"light": torch.rand(3, 32, 32), "dark": torch.rand(3, 32, 32)}
    inputs = ucpr_inputs(averages, side=2)
    assert [i.item_id for i in inputs] == ["ucpr/light", "ucpr/dark"]
    assert all(i.low.shape == (3, 2, 2) and i.truth is None for i in inputs)
    assert ucpr_inputs(averages)[0].low.shape == (3, 4, 4)
    with pytest.raises(PulseAuditError, match="--ucpr-size 5"):
        ucpr_inputs(averages, side=5)


def test_demo_runs_with_default_grouping(tmp_path):
    """`pulse-audit run --dataset demo` names no --group-by: the demo set groups by its skin_tone labels
    (it has no race label), and the resolved grouping is what run.json records."""
    out = run_audit(AuditConfig(dataset="demo", upsampler="bicubic", per_group=1, classifiers="none",
                                device="cpu", out=str(tmp_path / "run")))
    table = read_results(out)
    meta = json.loads((out / "run.json").read_text())
    manifest = REPO / "datasets" / "demo" / "manifest.csv"
    demo_tones = {line.split(",")[2] for line in manifest.read_text().splitlines()[1:]}
    groups = set(table.column("group").to_pylist())
    assert groups and groups <= demo_tones and len(groups) == table.num_rows
    assert "skin_tone" in json.dumps(meta)
