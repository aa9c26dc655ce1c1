"""``pulse-audit train-generator``: composition parsing and draws, the DCGAN training loop, the written folder,
and strict loading of it through the ``dcgan-file`` registry entry."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from audit.commands.train_sources import SourceSet, composition_counts, draw_training_set, parse_composition
from pulse_engine.errors import PulseAuditError, WeightsError
from pulse_engine.generators import REGISTRY, load_generator
from pulse_engine.generators.dcgan import DCGANGenerator, load_dcgan_file
from pulse_engine.training import LOSS_COLUMNS, DCGANDiscriminator, TrainConfig, train_dcgan

TINY = TrainConfig(resolution=16, nz=8, ngf=4, ndf=4, steps=6, batch_size=8, log_every=4)


def test_composition_parsing_and_counts():
    assert parse_composition("light=0.85, dark=0.15") == {"light": 0.85, "dark": 0.15}
    for bad in ("light=0.8,dark=0.1", "light", "light=x,dark=1", "=1", "light=1.5,dark=-0.5"):
        with pytest.raises(PulseAuditError):
            parse_composition(bad)
    assert composition_counts({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 100) in ({"a": 34, "b": 33, "c": 33},
                                                                           {"a": 33, "b": 34, "c": 33},
                                                                           {"a": 33, "b": 33, "c": 34})
    assert composition_counts({"light": 0.85, "dark": 0.15}, 5600) == {"light": 4760, "dark": 840}


def test_draw_is_seeded_exact_and_refuses_short_groups():
    labels = np.array(["light"] * 50 + ["middle"] * 20 + ["dark"] * 30 + [""] * 5, dtype=object)
    source = SourceSet("test", "skin_tone", np.zeros((len(labels), 8, 8, 3), np.uint8), labels,
                       {"light": "", "middle": "", "dark": ""})
    picks, counts = draw_training_set(source, {"light": 0.8, "dark": 0.2}, 40, seed=3)
    assert counts == {"light": 32, "dark": 8} and len(set(picks)) == 40
    assert (labels[picks] == "light").sum() == 32 and (labels[picks] == "dark").sum() == 8
    assert np.array_equal(picks, draw_training_set(source, {"light": 0.8, "dark": 0.2}, 40, seed=3)[0])
    with pytest.raises(PulseAuditError, match="too few"):
        draw_training_set(source, {"light": 0.15, "dark": 0.85}, 40, seed=0)
    with pytest.raises(PulseAuditError, match="not in the source"):
        draw_training_set(source, {"pale": 1.0}, 4, seed=0)


def test_discriminator_mirrors_generator_and_training_is_seeded():
    assert DCGANDiscriminator(4, 32)(torch.zeros(2, 3, 32, 32)).shape == (2,)
    images = torch.randint(0, 256, (32, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    first, second = train_dcgan(images, TINY), train_dcgan(images, TINY)
    assert [row["step"] for row in first.losses] == [4, 6] and set(first.losses[0]) == set(LOSS_COLUMNS)
    assert first.steps == 6 and not first.stopped_early and not first.generator.training
    for a, b in zip(first.generator.state_dict().values(), second.generator.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        train_dcgan(images.float(), TINY)


def make_folder_source(root, count: int = 24):
    """A folder face set with a ``tone`` attribute: light and dark smooth 20 px images."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["path,tone"]
    for i in range(count):
        base = 200 if i % 2 else 60
        pixels = np.clip(base + rng.normal(0, 20, (5, 5, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((20, 20), Image.BICUBIC).save(root / "img" / f"{i:02d}.png")
        lines.append(f"img/{i:02d}.png,{'light' if i % 2 else 'dark'}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_train_generator_cli_writes_a_loadable_folder(tmp_path):
    source, out = make_folder_source(tmp_path / "faces"), tmp_path / "gen"
    args = ["train-generator", "--out", out, "--source", f"folder:{source}", "--attribute", "tone",
            "--composition", "light=0.75,dark=0.25", "--size", "16", "--steps", "5", "--resolution", "16", "--nz", "8",
            "--ngf", "4", "--ndf", "4", "--batch-size", "8", "--evaluate", "8", "--seed", "2"]
    done = subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} >= {"weights.pt", "card.json", "README.md", "losses.csv", "samples.png"}
    card = json.loads((out / "card.json").read_text())
    assert card["training_data"]["counts"] == {"light": 12, "dark": 4}
    assert card["training"]["steps_done"] == 5 and card["training"]["seed"] == 2
    assert card["command"].startswith("pulse-audit train-generator --out") and "torch" in card["packages"]
    assert "light 12 (75%)" in (out / "README.md").read_text()
    model = load_generator(f"dcgan-file:{out}")
    assert isinstance(model, DCGANGenerator) and model.resolution == 16 and model.latent_shape == (1, 8)
    assert model.card.weights_sha256[0] == card["weights"]["sha256"]
    assert load_dcgan_file(out / "weights.pt").synthesize(torch.zeros(1, 1, 8)).shape == (1, 3, 16, 16)
    assert REGISTRY["dcgan-file"].missing_files(out) == []


def test_dcgan_file_refuses_bad_folders(tmp_path):
    with pytest.raises(WeightsError, match="needs a path"):
        load_dcgan_file(None)
    with pytest.raises(WeightsError, match="weights.pt"):
        load_dcgan_file(tmp_path)
    model = DCGANGenerator(nz=8, ngf=4, resolution=16)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(WeightsError, match="card.json"):
        load_dcgan_file(tmp_path)
    card = {"architecture": {"family": "DCGAN", "nz": 8, "ngf": 8, "resolution": 16, "channels": 3}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_dcgan_file(tmp_path)
    card["architecture"]["ngf"] = 4
    card["weights"] = {"sha256": "0" * 64}
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="does not match"):
        load_dcgan_file(tmp_path)
    del card["weights"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    assert load_dcgan_file(tmp_path).resolution == 16


@pytest.mark.parametrize("side", [0, 2, 12, 48])
def test_every_generator_refuses_a_side_that_is_not_a_power_of_two(side):
    """One check (``pulse_engine.generators.base.power_of_two_log2``) with each generator's own one-line message."""
    from pulse_engine.generators.dcgan import DCGANGenerator
    from pulse_engine.generators.stylegan1 import StyleGAN1Config
    from pulse_engine.generators.stylegan2 import StyleGAN2Generator
    from pulse_engine.training import TrainConfig

    for build, what, least in ((lambda: DCGANGenerator(resolution=side), "DCGAN resolution", 8),
                               (lambda: TrainConfig(resolution=side), "resolution", 8),
                               (lambda: StyleGAN1Config(resolution=side), "StyleGAN1 resolution", 8),
                               (lambda: StyleGAN2Generator(size=side, style_dim=8, n_mlp=1), "StyleGAN2 size", 4)):
        with pytest.raises(ValueError, match=f"^{what} must be a power of two ≥ {least}, got {side}$"):
            build()
