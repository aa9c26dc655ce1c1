"""StyleGAN1 in PULSE's layout: key layout, equality with PULSE's original code, loading, Gaussian fit.

The reference data in tests/data/stylegan1/ was produced by running PULSE's original ``stylegan.py``
(outside this repository) on the weights ``seeded_random_state`` draws; ``manifest.json`` says how.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pulse_engine.errors import PulseAuditError, WeightsError
from pulse_engine.generators import REGISTRY
from pulse_engine.generators import gaussian_fit as gaussian_fit_module
from pulse_engine.generators.gaussian_fit import GaussianFit
from pulse_engine.generators.stylegan1 import (
    FFHQ_1024,
    TINY,
    StyleGAN1Config,
    StyleGAN1Generator,
    StyleGAN1Mapping,
    StyleGAN1Synthesis,
    load_stylegan1_ffhq,
    seeded_random_state,
)
from pulse_engine.generators.stylegan1_layers import blur_kernel_121

DATA = Path(__file__).parent / "data" / "stylegan1"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
CASES = MANIFEST["reference_cases"]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "reference_outputs.npz") as blob:
        return {key: blob[key] for key in blob.files}


def case_inputs(config: StyleGAN1Config, batch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The inputs the reference run used: seed 1 draws w, then each noise map in layer order."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(batch, config.num_ws, config.dlatent_size, generator=gen)
    return w, [torch.randn(batch, *shape, generator=gen) for shape in config.noise_shapes()]


def seeded(module: torch.nn.Module) -> torch.nn.Module:
    module.load_state_dict(seeded_random_state(module, seed=0), strict=True)
    return module.eval()


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- layout


def test_full_size_keys_and_shapes_match_the_original_manifest() -> None:
    with torch.device("meta"):
        synthesis, mapping = StyleGAN1Synthesis(FFHQ_1024), StyleGAN1Mapping(FFHQ_1024)
    assert shapes(synthesis) == MANIFEST["synthesis"]
    assert shapes(mapping) == MANIFEST["mapping"]
    assert sum(p.numel() for p in synthesis.parameters()) == MANIFEST["synthesis_parameters"] == 24_110_771
    assert sum(p.numel() for p in mapping.parameters()) == MANIFEST["mapping_parameters"] == 2_101_248
    assert torch.equal(blur_kernel_121().reshape(3, 3), torch.tensor(MANIFEST["blur_kernel"]))


def test_ffhq_generator_interface() -> None:
    with torch.device("meta"):
        fit = GaussianFit(torch.zeros(512), torch.ones(512), 10)
        gen = StyleGAN1Generator(StyleGAN1Synthesis(FFHQ_1024), fit)
    assert gen.resolution == 1024 and gen.latent_shape == (18, 512)
    sides = [2 ** (i // 2 + 2) for i in range(18)]
    assert gen.noise_shapes == tuple((1, s, s) for s in sides)
    assert gen.default_trainable_noise == 5 and gen.default_zero_noise == (17,)
    assert [FFHQ_1024.channels(s) for s in FFHQ_1024.block_sides()] == [512] * 4 + [256, 128, 64, 32, 16]
    fused = [b.conv0_up.fused for name, b in gen.synthesis.blocks.items() if name != "4x4"]
    assert fused == [False, False, False, False, True, True, True, True]


# ---------------------------------------------------------------- equality with PULSE's original code


@pytest.mark.parametrize("name", sorted(CASES))
def test_synthesis_matches_original(name: str, reference: dict[str, np.ndarray]) -> None:
    case = CASES[name]
    config = StyleGAN1Config(**case["config"])
    synthesis = seeded(StyleGAN1Synthesis(config))
    w, noise = case_inputs(config, case["batch"])
    with torch.no_grad():
        image = synthesis(w, noise)
    assert image.shape == (case["batch"], 3, config.resolution, config.resolution)
    if name == "tiny32":
        expected = torch.from_numpy(reference[f"{name}/image"])
        assert expected.std() > 0.5  # a real picture of random weights, not a constant
        torch.testing.assert_close(image, expected, rtol=0, atol=1e-5)
        with torch.no_grad():
            zero = synthesis(w, [torch.zeros_like(n) for n in noise])
        torch.testing.assert_close(zero, torch.from_numpy(reference[f"{name}/image_zero_noise"]), rtol=0, atol=1e-5)
        assert (zero - image).abs().max() > 0.1  # the noise inputs matter
        return
    r = config.resolution
    observed = {
        "pooled": F.avg_pool2d(image, case["pool"]),
        "crop_tl": image[:, :, :16, :16],  # borders: where fused and unfused upsampling differ
        "crop_c": image[:, :, r // 2 - 8:r // 2 + 8, r // 2 - 8:r // 2 + 8],
        "stats": torch.stack([image.mean((1, 2, 3)), image.std((1, 2, 3)), image.amin((1, 2, 3)),
                              image.amax((1, 2, 3))], 1),
    }
    for key, value in observed.items():
        expected = torch.from_numpy(reference[f"{name}/{key}"])
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-4, msg=lambda m, k=key: f"{name}/{k}: {m}")


BLUR_CASES = {"tiny32_blur": StyleGAN1Config(resolution=32, dlatent_size=16, fmap_base=64, fmap_max=16),
              "fused128_blur": StyleGAN1Config(resolution=128, dlatent_size=16, fmap_base=64, fmap_max=16)}


@pytest.mark.parametrize("name", sorted(BLUR_CASES))
def test_stored_blur_kernels_are_used_as_the_original_uses_them(tmp_path: Path, name: str) -> None:
    """reference_blur_as_stored.npz: PULSE's original G_synthesis (40cacb9) on CPU, loaded strictly
    with ``seeded_random_state(…, 0)`` except that every ``intermediate.kernel`` is its own random
    asymmetric 3×3 kernel (torch.rand seeded 7, + 0.05, normalised; keys in sorted order), run on
    ``case_inputs``. 32 px: full images (batch 2); 128 px (fused upsampling): 4×4-pooled image and
    the top-left 16×16 crop (batch 1). Tolerance 1e-5 relative to the largest value."""
    config = BLUR_CASES[name]
    state = seeded_random_state(StyleGAN1Synthesis(config), 0)
    gen = torch.Generator().manual_seed(7)
    for key in sorted(state):
        if key.endswith("intermediate.kernel"):
            kernel = torch.rand(1, 1, 3, 3, generator=gen) + 0.05
            state[key] = kernel / kernel.sum()
    torch.save(state, tmp_path / "synthesis.pt")
    torch.save(seeded_random_state(StyleGAN1Mapping(config), 1), tmp_path / "mapping.pt")
    generator = load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=200, config=config)
    with np.load(DATA / "reference_blur_as_stored.npz") as blob:
        expected = {key.split("/")[1]: torch.from_numpy(blob[key]) for key in blob.files if key.startswith(name)}
    w, noise = case_inputs(config, 2 if config.resolution == 32 else 1)
    with torch.no_grad():
        image = generator.synthesis(w, noise)
    observed = {"image": image} if "image" in expected else {"pooled": F.avg_pool2d(image, 4),
                                                            "crop_tl": image[:, :, :16, :16]}
    for key, value in observed.items():
        scale = float(expected[key].abs().max())
        assert scale > 0.1 and float((value - expected[key]).abs().max()) <= 1e-5 * scale, key
    # the kernels matter: with the default [1, 2, 1] blur the output is far from the reference
    with torch.no_grad():
        for module in generator.synthesis.modules():
            if hasattr(module, "kernel"):
                module.kernel.copy_(blur_kernel_121())
        default = generator.synthesis(w, noise)
    assert float((default - image).abs().max()) > 1e-3


@pytest.mark.parametrize("name", sorted(CASES))
def test_mapping_matches_original(name: str, reference: dict[str, np.ndarray]) -> None:
    config = StyleGAN1Config(**CASES[name]["config"])
    mapping = seeded(StyleGAN1Mapping(config))
    z = torch.randn(4, config.dlatent_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = mapping(z)
    expected = torch.from_numpy(reference[f"{name}/mapping"])
    assert expected.std() > 0.1
    torch.testing.assert_close(w, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the searchable generator


def tiny_generator() -> StyleGAN1Generator:
    fit = GaussianFit(torch.linspace(-0.5, 0.1, TINY.dlatent_size), torch.linspace(0.3, 0.8, TINY.dlatent_size), 2)
    return StyleGAN1Generator(seeded(StyleGAN1Synthesis(TINY)), fit).freeze()


def test_generator_maps_to_unit_range_and_defaults_to_zero_noise(reference: dict[str, np.ndarray]) -> None:
    gen = tiny_generator()
    assert gen.latent_shape == (8, 16) and len(gen.noise_shapes) == 8 and gen.default_zero_noise == (7,)
    w, noise = case_inputs(TINY, 2)
    with torch.no_grad():
        torch.testing.assert_close(gen.synthesize_w(w, None),
                                   (torch.from_numpy(reference["tiny32/image_zero_noise"]) + 1) / 2, rtol=0, atol=1e-5)
        torch.testing.assert_close(gen.synthesize_w(w, noise),
                                   (torch.from_numpy(reference["tiny32/image"]) + 1) / 2, rtol=0, atol=1e-5)
        # batch-1 noise maps broadcast over the batch
        shared = [n[:1] for n in noise]
        torch.testing.assert_close(gen.synthesize_w(w, shared), gen.synthesize_w(w, [n.expand_as(m) for n, m in
                                                                                   zip(shared, noise)]))
    latent = torch.randn(2, 8, 16)
    torch.testing.assert_close(gen.latent_to_w(latent), F.leaky_relu(latent * gen.fit_std + gen.fit_mean, 0.2))


def test_generator_rejects_wrong_shapes() -> None:
    gen = tiny_generator()
    w = torch.zeros(1, 8, 16)
    noise = [torch.zeros(1, *s) for s in gen.noise_shapes]
    with pytest.raises(ValueError, match="expects latents"):
        gen.synthesize_w(torch.zeros(1, 18, 16), None)
    with pytest.raises(ValueError, match="8 noise maps"):
        gen.synthesize_w(w, noise[:-1])
    with pytest.raises(ValueError, match="noise map 2"):
        gen.synthesize_w(w, noise[:2] + [torch.zeros(1, 1, 4, 4)] + noise[3:])
    with pytest.raises(ValueError, match="noise map 0"):
        gen.synthesize_w(w, [torch.zeros(3, 1, 4, 4)] + noise[1:])
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN1Config(resolution=48)


def test_gradients_reach_latent_and_noise_but_not_weights() -> None:
    gen = tiny_generator()
    latent = torch.randn(1, 8, 16, requires_grad=True)
    noise = [torch.randn(1, *s, requires_grad=i < 5) for i, s in enumerate(gen.noise_shapes)]
    gen.synthesize(latent, noise).square().mean().backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0
    assert all(n.grad is not None and n.grad.abs().sum() > 0 for n in noise[:5])
    assert not any(p.requires_grad for p in gen.parameters())


# ---------------------------------------------------------------- loading


def write_weights(folder: Path, config: StyleGAN1Config = TINY) -> dict[str, dict[str, torch.Tensor]]:
    """Seeded random weights saved under PULSE's key names as plain state dicts."""
    folder.mkdir(parents=True, exist_ok=True)
    states = {"synthesis": seeded_random_state(StyleGAN1Synthesis(config), 0),
              "mapping": seeded_random_state(StyleGAN1Mapping(config), 1)}
    for name, state in states.items():
        torch.save(state, folder / f"{name}.pt")
    return states


def direct_fit(mapping_state: dict[str, torch.Tensor], samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """μ, σ of LeakyReLU₅(mapping(z)) in float64 for z drawn in one go from a generator seeded 0."""
    mapping = StyleGAN1Mapping(TINY)
    mapping.load_state_dict(mapping_state)
    z = torch.randn(samples, TINY.dlatent_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = F.leaky_relu(mapping.double()(z.double()), 5.0)
    return x.mean(0), x.std(0)


def test_loader_end_to_end(tmp_path: Path) -> None:
    states = write_weights(tmp_path)
    gen = load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=3000, config=TINY)
    assert isinstance(gen, StyleGAN1Generator) and not gen.training
    for key, value in states["synthesis"].items():
        assert torch.equal(gen.synthesis.state_dict()[key], value), key
    card = gen.card
    assert card.family == "StyleGAN1" and "FFHQ" in card.training_data and "CC BY-NC 4.0" in card.licence
    assert card.weights == (tmp_path / "synthesis.pt", tmp_path / "mapping.pt")
    assert card.weights_sha256 == tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in card.weights)
    # the fit is that of the mapping file's weights, computed against a direct float64 evaluation
    mean, std = direct_fit(states["mapping"], 3000)
    assert gen.fit_samples == 3000 and std.min() > 1e-3
    torch.testing.assert_close(gen.fit_mean.double(), mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gen.fit_std.double(), std, rtol=1e-4, atol=1e-5)
    image = gen.synthesize(gen.sample_latent(torch.Generator().manual_seed(0)))
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_gaussian_fit_is_cached_and_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_weights(tmp_path)
    first = load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    cache = tmp_path / "gaussian_fit.pt"
    stamp = cache.stat().st_mtime_ns

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached Gaussian fit was recomputed")

    monkeypatch.setattr(gaussian_fit_module, "compute_fit", no_recompute)
    second = load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    assert cache.stat().st_mtime_ns == stamp
    assert torch.equal(first.fit_mean, second.fit_mean) and torch.equal(first.fit_std, second.fit_std)
    with pytest.raises(AssertionError, match="recomputed"):  # another sample count is a new fit
        load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=600, config=TINY)


def test_fit_sample_count_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_weights(tmp_path)
    monkeypatch.setenv("PULSE_AUDIT_FIT_SAMPLES", "400")
    assert load_stylegan1_ffhq(tmp_path, "cpu", config=TINY).fit_samples == 400
    assert load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=300, config=TINY).fit_samples == 300  # explicit wins
    monkeypatch.setenv("PULSE_AUDIT_FIT_SAMPLES", "lots")
    with pytest.raises(PulseAuditError, match="PULSE_AUDIT_FIT_SAMPLES"):
        load_stylegan1_ffhq(tmp_path, "cpu", config=TINY)


def test_pulse_legacy_fit_file_is_used_once_checked(tmp_path: Path) -> None:
    states = write_weights(tmp_path)
    mean, std = (t.float() for t in direct_fit(states["mapping"], 20_000))  # a fit of these weights, as in PULSE's file
    torch.save({"mean": mean, "std": std}, tmp_path / "pulse_gaussian_fit.pt", _use_new_zipfile_serialization=False)
    gen = load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    assert torch.equal(gen.fit_mean, mean) and torch.equal(gen.fit_std, std)
    assert not (tmp_path / "gaussian_fit.pt").exists()
    for planted, why in (({"mean": mean}, "std is not a float tensor"),
                         ({"mean": mean, "std": -std}, "not positive"),
                         ({"mean": mean, "std": std * float("nan")}, "NaN"),
                         ({"mean": mean + std, "std": std}, "does not describe these mapping weights"),
                         ({"mean": mean, "std": std * 1.3}, "does not describe these mapping weights")):
        torch.save(planted, tmp_path / "pulse_gaussian_fit.pt")
        with pytest.raises(WeightsError, match=why) as info:
            load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
        assert "pulse_gaussian_fit.pt" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("missing", ["synthesis.pt", "mapping.pt"])
def test_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    write_weights(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(WeightsError, match="synthesis.pt and mapping.pt") as info:
        load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    assert str(tmp_path / missing) in str(info.value) and "\n" not in str(info.value)


def test_default_folder_is_under_weights_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_AUDIT_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="missing") as info:
        load_stylegan1_ffhq(None, "cpu")
    assert str(tmp_path / "weights" / "stylegan1-ffhq" / "synthesis.pt") in str(info.value)
    entry = REGISTRY["stylegan1-ffhq"]
    module_name, func = entry.loader.split(":")
    assert getattr(importlib.import_module(module_name, "pulse_engine.generators"), func) is load_stylegan1_ffhq
    assert [p.name for p in entry.missing_files()] == ["synthesis.pt", "mapping.pt"]


@pytest.mark.parametrize("name", ["synthesis.pt", "mapping.pt"])
def test_truncated_file_is_named(tmp_path: Path, name: str) -> None:
    write_weights(tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated") as info:
        load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    assert name in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["synthesis.pt", "mapping.pt"])
def test_wrong_architecture_is_named(tmp_path: Path, name: str) -> None:
    write_weights(tmp_path)
    other = StyleGAN1Config(resolution=32, dlatent_size=8, fmap_base=64, fmap_max=16)  # w dim 8, not 16
    module = StyleGAN1Synthesis(other) if name == "synthesis.pt" else StyleGAN1Mapping(other)
    torch.save(module.state_dict(), tmp_path / name)
    with pytest.raises(WeightsError, match="shape mismatches") as info:
        load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_full_size_file_is_not_a_tiny_model_and_blur_is_used_as_stored(tmp_path: Path) -> None:
    states = write_weights(tmp_path)
    torch.save({"dense0.weight": torch.zeros(3)}, tmp_path / "mapping.pt")
    with pytest.raises(WeightsError, match="missing keys"):
        load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    write_weights(tmp_path)
    default = load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    box = torch.full((1, 1, 3, 3), 1 / 9)
    states["synthesis"]["blocks.8x8.conv0_up.intermediate.kernel"] = box
    torch.save(states["synthesis"], tmp_path / "synthesis.pt")
    boxed = load_stylegan1_ffhq(tmp_path, "cpu", fit_samples=500, config=TINY)
    assert torch.equal(boxed.synthesis.blocks["8x8"].conv0_up.intermediate.kernel, box)
    w, noise = case_inputs(TINY, 1)
    with torch.no_grad():
        assert (boxed.synthesize_w(w, noise) - default.synthesize_w(w, noise)).abs().max() > 1e-3


def test_weights_path_must_be_a_folder(tmp_path: Path) -> None:
    write_weights(tmp_path)
    with pytest.raises(WeightsError, match="expects a folder"):
        load_stylegan1_ffhq(tmp_path / "synthesis.pt", "cpu", config=TINY)


def test_seeded_random_state_is_reproducible() -> None:
    a = seeded_random_state(StyleGAN1Mapping(TINY), 0)
    b = seeded_random_state(StyleGAN1Mapping(TINY), 0)
    c = seeded_random_state(StyleGAN1Mapping(TINY), 1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["dense0.weight"], c["dense0.weight"])
    assert 50 < float(a["dense0.weight"].std()) < 200  # stored weights carry 1/lrmul = 100

