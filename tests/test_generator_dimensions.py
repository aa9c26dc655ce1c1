"""Checkpoints whose mapping and synthesis dimensions the engine does not support are refused at
load with one line, before anything is built or a Gaussian fit is written; each hostile file is a
structurally valid network (small random weights, consistent shapes) built here."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_hostile_weights import set_nvlabs_tensor
from test_safe_pickle import load_fixture_tree, write_snapshot
from test_stylegan2 import save_tiny_checkpoint

from pulse_engine.errors import PulseAuditError, WeightsError
from pulse_engine.generators import load_generator
from pulse_engine.generators.stylegan1 import (
    TINY,
    StyleGAN1Mapping,
    StyleGAN1Synthesis,
    load_stylegan1_ffhq,
    seeded_random_state,
)
from pulse_engine.generators.stylegan2_loaders import read_stylegan2_weights

REPO = Path(__file__).resolve().parents[1]
W_DIM = 16  # the NVlabs fixture's z_dim = w_dim


def nvlabs_file(path: Path, edit=None) -> Path:
    """The NVlabs tiny fixture (32 px, w_dim 16, two mapping layers), edited, as a network pickle."""
    snapshot = load_fixture_tree()
    if edit is not None:
        edit(snapshot)
    return write_snapshot(path, snapshot, "pass\n")


def kwargs_of(snapshot) -> dict:
    return snapshot["G_ema"].state["_init_kwargs"]


def z_dim_8(snapshot) -> None:
    """What NVlabs builds for ``Generator(z_dim=8, w_dim=16, …)``: fc0 takes 8 inputs (random weights)."""
    kwargs_of(snapshot)["z_dim"] = 8
    set_nvlabs_tensor(snapshot, "mapping.fc0._parameters.weight", torch.randn(W_DIM, 8, generator=torch.Generator()
                                                                                  .manual_seed(0)))


def test_the_unedited_fixture_loads(tmp_path):
    model = read_stylegan2_weights(nvlabs_file(tmp_path / "ok.pkl"))
    assert model.style_dim == W_DIM and model.latent_avg.shape == (W_DIM,)


@pytest.mark.parametrize(("name", "edit", "expect"), [
    ("z_dim_8", z_dim_8, "z_dim=8 differs from w_dim=16 (this engine's mapping takes z of size w_dim)"),
    ("z_dim_0", lambda s: kwargs_of(s).__setitem__("z_dim", 0), "z_dim=0 differs from w_dim=16"),
    ("tensors_of_z_dim_8", lambda s: set_nvlabs_tensor(s, "mapping.fc0._parameters.weight", torch.zeros(W_DIM, 8)),
     "mapping.fc0.weight has shape (16, 8), expected (16, 16) (init_kwargs and tensors disagree)"),
    ("w_avg_of_7", lambda s: set_nvlabs_tensor(s, "mapping._buffers.w_avg", torch.zeros(7)),
     "mapping.w_avg has shape (7,), expected (16,)"),
    ("w_avg_4x4", lambda s: set_nvlabs_tensor(s, "mapping._buffers.w_avg", torch.zeros(4, 4)),
     "mapping.w_avg has shape (4, 4), expected (16,)"),
    ("num_layers_2_5", lambda s: kwargs_of(s)["mapping_kwargs"].__setitem__("num_layers", 2.5),
     "mapping_kwargs.num_layers=2.5 (not an integer)"),
    ("layer_features_8", lambda s: kwargs_of(s)["mapping_kwargs"].__setitem__("layer_features", 8),
     "mapping.fc0.weight has shape (16, 16), expected (8, 16)"),
    ("img_channels_1", lambda s: kwargs_of(s).__setitem__("img_channels", 1), "img_channels=1"),
])
def test_unsupported_nvlabs_dimensions_are_refused_in_one_line(tmp_path, name, edit, expect):
    path = nvlabs_file(tmp_path / f"{name}.pkl", edit)
    with pytest.raises(WeightsError) as caught:
        load_generator(f"stylegan2:{path}")
    message = str(caught.value)
    assert expect in message and "\n" not in message and len(message) < 400, message
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # refused before a fit cache was written


def test_cli_refuses_z_dim_other_than_w_dim_at_load(tmp_path):
    path = nvlabs_file(tmp_path / "z8.pkl", z_dim_8)
    face = tmp_path / "face.png"
    Image.new("RGB", (32, 32), (120, 90, 60)).save(face)
    done = subprocess.run([sys.executable, "-m", "audit", "upsample", str(face), "--generator", f"stylegan2:{path}",
                           "--factor", "4", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # a user error (2 is a usage error)
    said = (done.stdout + done.stderr).strip()
    assert said.startswith("error:") and "z_dim=8 differs from w_dim=16" in said and "Traceback" not in said, said
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("latent_avg", "expect"), [
    (torch.zeros(7), "latent_avg is (7,), expected"),
    ("not a tensor", "latent_avg is 'str', expected"),
])
def test_rosinality_latent_avg_of_another_dimension_is_refused(tmp_path, latent_avg, expect):
    path = tmp_path / "g.pt"
    state = save_tiny_checkpoint("b", path)
    torch.save({"g_ema": state, "latent_avg": latent_avg}, path)
    with pytest.raises(WeightsError, match="expected .* numbers \\(style_dim\\)") as caught:
        read_stylegan2_weights(path)
    assert expect in str(caught.value)


def test_stylegan1_mapping_of_another_width_is_refused(tmp_path):
    other = dataclasses.replace(TINY, dlatent_size=8)
    torch.save(seeded_random_state(StyleGAN1Synthesis(TINY), 0), tmp_path / "synthesis.pt")
    torch.save(seeded_random_state(StyleGAN1Mapping(other), 1), tmp_path / "mapping.pt")
    with pytest.raises(PulseAuditError, match="not a 32 px StyleGAN1 .*w dim 16.* mapping network checkpoint: "
                                              ".*shape mismatches") as caught:
        load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=200, config=TINY)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "gaussian_fit.pt").exists()
