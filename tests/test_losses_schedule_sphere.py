"""GEOCROSS, data terms, the loss parser, LR schedules and sphere projection."""

import math

import numpy as np
import pytest
import torch

from pulse_engine.losses import LossSpec, geocross, l1_term, l2_term
from pulse_engine.schedule import lr_multiplier
from pulse_engine.sphere import group_norm, project_, sphere_radius


def geocross_direct(w):
    """Loop form of PULSE's cross loss in float64."""
    out = []
    for vectors in w:
        n, d = vectors.shape
        total = 0.0
        for j in range(n):
            for k in range(n):
                diff = math.sqrt(np.sum((vectors[j] - vectors[k]) ** 2) + 1e-9)
                summ = math.sqrt(np.sum((vectors[j] + vectors[k]) ** 2) + 1e-9)
                total += d * (2 * math.atan2(diff, summ)) ** 2
        out.append(total / (n * n) / 8)
    return np.array(out)


def test_geocross_matches_direct_formula():
    w = np.random.default_rng(0).normal(size=(3, 6, 16))
    got = geocross(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, geocross_direct(w), rtol=1e-10)
    assert got.min() > 1  # random directions are far apart


def test_geocross_of_identical_vectors_is_zero():
    w = torch.randn(2, 1, 8).expand(2, 5, 8)
    assert geocross(w).abs().max() < 1e-6


def test_l2_and_l1_clamp_at_eps_per_image():
    ref = torch.zeros(2, 3, 4, 4)
    low = torch.stack([torch.full((3, 4, 4), 0.01), torch.full((3, 4, 4), 0.5)])
    l2 = l2_term(low, ref, eps=2e-3)
    torch.testing.assert_close(l2, torch.tensor([2e-3, 0.25]))
    torch.testing.assert_close(l1_term(low, ref, eps=2e-3), torch.tensor([0.1, 5.0]))


def test_loss_string_parsing():
    spec = LossSpec.parse("100*L2+0.05*GEOCROSS")
    assert spec.terms == ((100.0, "L2"), (0.05, "GEOCROSS"))
    assert str(spec) == "100*L2+0.05*GEOCROSS"
    assert LossSpec.parse("L1").terms == ((1.0, "L1"),)
    for bad in ("100*L3", "GEOCROSS", "100*L2+", "a*L2"):
        with pytest.raises(ValueError):
            LossSpec.parse(bad)


def test_total_is_weighted_sum():
    low, ref, w = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.randn(2, 4, 8)
    values = LossSpec.parse("100*L2+0.05*GEOCROSS").evaluate(low, ref, w, 2e-3)
    torch.testing.assert_close(values["TOTAL"], 100 * values["L2"] + 0.05 * values["GEOCROSS"])


def test_linear1cycledrop_values():
    m = lr_multiplier("linear1cycledrop", 100)
    assert 0.4 * m(0) == pytest.approx(0.04)
    assert 0.4 * m(45) == pytest.approx(0.4)
    assert 0.4 * m(90) == pytest.approx(0.04)
    assert 0.4 * m(99) == pytest.approx(0.4 * (0.1 + 9 / 10 * (0.001 - 0.1)))
    assert 0.4 * m(99) == pytest.approx(0.0044, abs=1e-4)
    values = [m(x) for x in range(100)]
    assert max(values) == values[45] and min(values) == values[99]


def test_other_schedules():
    assert lr_multiplier("fixed", 10)(7) == 1.0
    m = lr_multiplier("linear1cycle", 100)
    assert (m(0), m(50)) == (pytest.approx(0.1), pytest.approx(1.0))
    with pytest.raises(ValueError):
        lr_multiplier("cosine", 10)


def test_projection_onto_sqrt_dim_sphere_keeps_direction():
    t = torch.randn(4, 18, 32, dtype=torch.float64)
    before = t / group_norm(t)
    radius = sphere_radius(t, "sqrt-dim")
    project_(t, radius)
    torch.testing.assert_close(group_norm(t), torch.full((4, 18, 1), math.sqrt(32), dtype=torch.float64))
    torch.testing.assert_close(t / group_norm(t), before)


def test_initial_radius_rule_and_noise_maps():
    noise = torch.randn(3, 1, 8, 8)
    radius = sphere_radius(noise, "initial")
    noise.mul_(5)
    project_(noise, radius)
    torch.testing.assert_close(group_norm(noise), radius)
    assert radius.shape == (3, 1, 1, 1)
