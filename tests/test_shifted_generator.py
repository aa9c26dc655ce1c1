"""The prior-shift wrapper (``shifted:FOLDER``): exact offset of the latent, search over it, strict loading of a
family member's card, and the committed families' measured priors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pulse_engine.errors import WeightsError
from pulse_engine.generators import load_generator
from pulse_engine.generators.checkpoint import sha256_file
from pulse_engine.generators.dcgan import load_tiny_dcgan
from pulse_engine.generators.shifted import CARD_FORMAT, ShiftedGenerator
from pulse_engine.search import SearchConfig, pulse_search

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("balanced-shift", "digiface-shift")


def test_offset_is_added_to_every_latent_and_nothing_else_changes():
    base = load_tiny_dcgan()
    direction = torch.randn(base.latent_shape, generator=torch.Generator().manual_seed(1))
    z = torch.randn(3, *base.latent_shape, generator=torch.Generator().manual_seed(2))
    shifted = ShiftedGenerator(base, direction, 1.5)
    assert torch.allclose(shifted.synthesize(z), base.synthesize(z + 1.5 * direction), atol=1e-6)
    assert torch.equal(ShiftedGenerator(base, direction, 0.0).synthesize(z), base.synthesize(z))
    assert torch.equal(ShiftedGenerator(base, direction[0], 1.5).offset, shifted.offset)  # 1-D broadcasts
    assert shifted.latent_shape == base.latent_shape and shifted.resolution == base.resolution
    assert not any(p.requires_grad for p in shifted.parameters()) and not shifted.training
    with pytest.raises(ValueError, match="direction"):
        ShiftedGenerator(base, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="direction"):
        ShiftedGenerator(base, direction, float("nan"))


def test_search_explores_the_shifted_prior():
    """The search variable stays on its sphere; what it renders is offset (here: a huge shift changes the output)."""
    base = load_tiny_dcgan()
    direction = torch.ones(base.latent_shape) / base.latent_shape[1] ** 0.5
    low = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    config = SearchConfig(steps=3)
    plain = pulse_search(base, low, config)
    moved = pulse_search(ShiftedGenerator(base, direction, 0.0), low, config)
    assert all(torch.equal(a.image, b.image) for a, b in zip(plain, moved))
    far = pulse_search(ShiftedGenerator(base, direction, 30.0), low, config)
    assert all(not torch.allclose(a.image, b.image) for a, b in zip(plain, far))


def write_member(folder: Path, tensor: torch.Tensor, **changes: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(tensor, folder / "direction.pt")
    card = {"format": CARD_FORMAT, "name": "test", "base": "dcgan-tiny", "alpha": 2.0,
            "direction": {"file": "direction.pt", "sha256": sha256_file(folder / "direction.pt")}} | changes
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_registry_loads_a_member_and_refuses_bad_ones(tmp_path):
    direction = torch.randn(1, 16, generator=torch.Generator().manual_seed(3))
    good = load_generator(f"shifted:{write_member(tmp_path / 'good', direction)}")
    assert isinstance(good, ShiftedGenerator) and good.alpha == 2.0
    assert torch.allclose(good.offset, 2.0 * direction[None])
    assert good.card.name == "test" and len(good.card.weights_sha256) == len(good.card.weights)
    cases = {"tampered": {"direction": {"file": "direction.pt", "sha256": "0" * 64}},
             "wrong format": {"format": "other"}, "no alpha": {"alpha": "x"}}
    for name, change in cases.items():
        with pytest.raises(WeightsError):
            load_generator(f"shifted:{write_member(tmp_path / name.replace(' ', '_'), direction, **change)}")
    bad_shape = write_member(tmp_path / "shape", torch.zeros(7))
    with pytest.raises(WeightsError, match="does not fit"):
        load_generator(f"shifted:{bad_shape}")
    not_tensor = tmp_path / "dict"
    write_member(not_tensor, direction)
    torch.save({"d": direction}, not_tensor / "direction.pt")
    card = json.loads((not_tensor / "card.json").read_text())
    card["direction"]["sha256"] = sha256_file(not_tensor / "direction.pt")
    (not_tensor / "card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="one floating-point tensor"):
        load_generator(f"shifted:{not_tensor}")
    with pytest.raises(WeightsError, match="needs a folder"):
        load_generator("shifted")


@pytest.mark.parametrize("family", FAMILIES)
def test_committed_family_loads_and_its_measured_prior_rises_with_alpha(family):
    """The committed cards record a prior ITA that increases with alpha, with non-overlapping intervals at the ends."""
    members = json.loads((REPO / "datasets" / "generators" / family / "family.json").read_text())["members"]
    members.sort(key=lambda m: m["alpha"])
    means = [m["ita_mean_deg"] for m in members]
    assert len(members) >= 3 and means == sorted(means), means
    assert members[0]["ita_ci95_deg"][1] < members[-1]["ita_ci95_deg"][0]
    generator = load_generator(members[-1]["spec"].replace("shifted:", f"shifted:{REPO}/", 1))
    assert generator.alpha == members[-1]["alpha"]
