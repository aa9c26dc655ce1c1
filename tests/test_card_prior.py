"""The aligned-frame prior written into generator cards (``audit.commands.card_prior``): every sample measured by the
study's output instrument, provenance recorded, the card's other fields and order kept, a bad card refused in one
line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audit.commands.card_prior import update_card, with_field_after
from audit.commands.train_cli import ALIGNED_PRIOR_FIELD, card_markdown
from pulse_engine.errors import PulseAuditError
from pulse_engine.generators.base import DCGAN_CARD_FORMAT
from pulse_engine.generators.dcgan import DCGANGenerator

GENERATORS = Path(__file__).resolve().parents[1] / "datasets" / "generators"


def test_with_field_after_keeps_every_other_key_in_order():
    card = {"a": 1, "samples_skin_tone": {}, "b": 2}
    assert list(with_field_after(card, "samples_skin_tone", "new", 3)) == ["a", "samples_skin_tone", "new", "b"]
    assert with_field_after({**card, "new": 0}, "samples_skin_tone", "new", 3) == {**card, "new": 3}
    assert list(with_field_after({"a": 1}, "samples_skin_tone", "new", 3)) == ["a", "new"]


def test_update_card_measures_every_sample_in_the_aligned_frame(tmp_path):
    torch.manual_seed(0)
    model = DCGANGenerator(nz=8, ngf=4, resolution=32)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    card = {"format": DCGAN_CARD_FORMAT, "name": "tiny",
            "architecture": {"family": "DCGAN", "nz": 8, "ngf": 4, "resolution": 32, "channels": 3},
            "samples_skin_tone": {"samples": 6, "measured": 0, "latent_seed": 1}, "licence": "test"}
    (tmp_path / "card.json").write_text(json.dumps(card))
    entry = update_card(tmp_path, 6, 1, "the command")
    written = json.loads((tmp_path / "card.json").read_text())
    assert list(written) == ["format", "name", "architecture", "samples_skin_tone", ALIGNED_PRIOR_FIELD, "licence"]
    assert {k: written[k] for k in card} == card and written[ALIGNED_PRIOR_FIELD] == entry
    assert entry["samples"] == entry["measured"] == 6  # no detector: every sample is measured
    assert entry["latent_seed"] == 1 and entry["resolution"] == 32 and entry["command"] == "the command"
    assert entry["instrument"].startswith("skin-tone-aligned") and "dcgan-digiface.json" in entry["instrument_files"]
    low, high = entry["ita_ci95_deg"]
    assert low <= entry["ita_mean_deg"] <= high and entry["measured_on"][:2] == "20"
    again = update_card(tmp_path, 6, 1)  # the same latents: the same measurement
    assert again["ita_mean_deg"] == entry["ita_mean_deg"]
    assert not (tmp_path / "README.md").exists()  # not a train-generator folder: no README to render


def test_update_card_refuses_a_card_it_cannot_load(tmp_path):
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(PulseAuditError, match="not a usable generator card"):
        update_card(tmp_path, 2, 1)
    (tmp_path / "card.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(PulseAuditError, match="not a committed generator card"):
        update_card(tmp_path, 2, 1)


def test_generator_readme_shows_the_aligned_prior_beside_the_detector_one():
    card = json.loads((GENERATORS / "balanced" / "card.json").read_text())
    entry = {"samples": 200, "measured": 200, "latent_seed": 1, "resolution": 32, "ita_mean_deg": -26.5,
             "ita_ci95_deg": [-30.0, -23.0], "ita_median_deg": -27.0, "measured_on": "2026-11-30T04:00:00+00:00"}
    text = card_markdown({**card, ALIGNED_PRIOR_FIELD: entry})
    assert text.startswith(card_markdown(card).split("## Provenance")[0])
    assert "200 of 200 samples (latent seed 1, 32 px), mean ITA -26.5° (95 % bootstrap CI -30.0 to -23.0)" in text
