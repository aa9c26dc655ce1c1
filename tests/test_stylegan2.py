"""StyleGAN2: layout, numerical equality with the original implementations, loaders and errors.

Reference data in tests/data/stylegan2/ was produced by running the original code (never part of
this repository) with :func:`make_reference_data` at the bottom of this file (the files with
non-default filters as ``README.md`` there and the tests using them say):

- ``rosinality_{1024,256}_config_f.json``: ``model.Generator(size, 512, 8, channel_multiplier=2)``
  of rosinality/stylegan2-pytorch (bef283a) built on the meta device: state-dict keys and shapes.
- ``rosinality_tiny.npz``: two tiny rosinality generators (channel table overridden) with weights
  from :func:`seeded_rosinality_state`, run on inputs from :func:`reference_inputs`; holds the
  original's key list, mapping outputs and images (CPU ops: ``upfirdn2d_native`` and the CPU
  branch of ``fused_leaky_relu``).
- ``nvlabs_{1024,256}_keys.json``: NVlabs stylegan2-ada-pytorch (d72cc7d) ``Generator`` keys and
  shapes (FFHQ-1024 config and the 256-px "paper256"-style config), built on the meta device.
- ``nvlabs_tiny.pkl``: a real network pickle written by NVlabs' own ``persistence`` code
  (random weights, 32 px, w_dim 16, conv_clamp 1.0 so the clamp is exercised, 2 fp16 blocks),
  with each ``module_src`` replaced by a placeholder instead of NVIDIA's source text;
  ``nvlabs_tiny_expected.npz``: its z, ws, mapping output and ``G.synthesis(ws,
  noise_mode='const'|'none', force_fp32=True)`` images computed by the original code.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pulse_engine.errors import PulseAuditError, WeightsError
from pulse_engine.generators import REGISTRY
from pulse_engine.generators import gaussian_fit as gaussian_fit_module
from pulse_engine.generators.gaussian_fit import compute_fit
from pulse_engine.generators.stylegan2 import StyleGAN2Generator
from pulse_engine.generators.stylegan2_layers import ModulatedConv2d, make_blur_kernel, upfirdn2d
from pulse_engine.generators.stylegan2_loaders import (
    _nvlabs_shape,
    fit_cache_path,
    load_stylegan2,
    nvlabs_name_table,
    read_rosinality_checkpoint,
    read_stylegan2_weights,
)

DATA = Path(__file__).parent / "data" / "stylegan2"
TOL = 2e-5

TINY_ROSINALITY = {
    "a": dict(size=32, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 8}, seed=1, batch=2),
    "b": dict(size=16, style_dim=16, n_mlp=3, channels={4: 16, 8: 16, 16: 8}, seed=2, batch=2),
}


# --- helpers shared with make_reference_data ---------------------------------------------------

def seeded_rosinality_state(keys_shapes: list[tuple[str, tuple[int, ...]]], seed: int) -> dict[str, torch.Tensor]:
    """Random rosinality-layout weights, a function of (sorted key, shape) and ``seed`` only.

    Blur kernels (architecture constants) are left out. Mapping weights get rosinality's 1/lr_mul
    init scale, modulation biases sit around 1, noise weights are non-zero so noise matters.
    """
    rs = np.random.RandomState(seed)
    state = {}
    for key, shape in sorted(keys_shapes):
        if key.endswith(".kernel"):
            continue
        r = torch.from_numpy(rs.standard_normal(tuple(shape)).astype(np.float32))
        if key.startswith("style.") and key.endswith("weight"):
            r = r * 100
        elif key.startswith("style."):
            r = r * 10
        elif key.endswith("modulation.bias"):
            r = 1 + 0.2 * r
        elif key.endswith("noise.weight"):
            r = 0.3 * r
        elif key.endswith("bias"):
            r = 0.2 * r
        state[key] = r
    return state


def reference_inputs(seed: int, batch: int, size: int, style_dim: int):
    """z (B, D), W+ (B, n_latent, D) with a different vector per layer, and explicit noise maps."""
    rs = np.random.RandomState(seed + 1000)
    log_size = int(math.log2(size))
    z = torch.from_numpy(rs.standard_normal((batch, style_dim)).astype(np.float32))
    w = torch.from_numpy(rs.standard_normal((batch, 2 * log_size - 2, style_dim)).astype(np.float32))
    sides = [2 ** ((i + 5) // 2) for i in range(2 * (log_size - 2) + 1)]
    noise = [torch.from_numpy(rs.standard_normal((batch, 1, s, s)).astype(np.float32)) for s in sides]
    return z, w, noise


def tiny_model(name: str) -> StyleGAN2Generator:
    cfg = TINY_ROSINALITY[name]
    return StyleGAN2Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"], channels=cfg["channels"]).eval()


def original_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    data = np.load(DATA / "rosinality_tiny.npz")
    return [(k, tuple(s)) for k, s in json.loads(str(data[f"{name}_keys"]))]


def save_tiny_checkpoint(name: str, path: Path, **extra) -> dict[str, torch.Tensor]:
    """A rosinality-format checkpoint of tiny config ``name`` with seeded weights, as the original saves."""
    model = tiny_model(name)
    state = model.state_dict()
    state.update(seeded_rosinality_state(original_keys(name), TINY_ROSINALITY[name]["seed"]))
    torch.save({"g_ema": state, "latent_avg": torch.arange(model.style_dim, dtype=torch.float32), **extra}, path)
    return state


def max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().cpu().numpy().astype(np.float64) - b.astype(np.float64)).max())


# --- layout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1024, 256])
def test_state_dict_matches_rosinality_config_f_manifest(size):
    manifest = json.loads((DATA / f"rosinality_{size}_config_f.json").read_text())
    with torch.device("meta"):
        model = StyleGAN2Generator(size)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k, s) for k, s in manifest["keys"]]  # same keys, same shapes, same order
    log_size = int(math.log2(size))
    assert model.latent_shape == (2 * log_size - 2, 512) and len(model.noise_shapes) == 2 * (log_size - 2) + 1
    assert model.noise_shapes[0] == (1, 4, 4) and model.noise_shapes[-1] == (1, size, size)


@pytest.mark.parametrize("size", [1024, 256])
def test_nvlabs_name_table_covers_every_nvlabs_tensor(size):
    manifest = json.loads((DATA / f"nvlabs_{size}_keys.json").read_text())
    nv_shapes = {k: tuple(s) for k, s in manifest["keys"]}
    kwargs = manifest["init_kwargs"]["synthesis_kwargs"]
    channels = {2**i: min(kwargs["channel_base"] // 2**i, kwargs["channel_max"]) for i in range(2, size.bit_length())}
    with torch.device("meta"):
        model = StyleGAN2Generator(size, 512, manifest["init_kwargs"]["mapping_kwargs"]["num_layers"],
                                   channels=channels)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    table = nvlabs_name_table(size, model.n_mlp)
    assert len({nv for nv, _, _ in table}) == len(table) and len({o for _, o, _ in table}) == len(table)
    left_nv = set(nv_shapes) - {nv for nv, _, _ in table}
    # what the original never reads: b4's filter, the non-upsampling convs' filters, the W average
    unused = {k for k in nv_shapes if k.startswith("synthesis.b4.") and k.endswith("resample_filter")}
    unused |= {k for k in nv_shapes if k.endswith("conv1.resample_filter")} | {"mapping.w_avg"}
    assert left_nv == unused
    assert set(ours) == {o for _, o, _ in table}  # every tensor of ours, blur kernels included, comes from the file
    for nv, our, reshape in table:
        assert nv_shapes[nv] == _nvlabs_shape(ours[our], reshape), (nv, our)


@pytest.mark.parametrize("name", sorted(TINY_ROSINALITY))
def test_tiny_state_dict_matches_original(name):
    assert [(k, tuple(v.shape)) for k, v in tiny_model(name).state_dict().items()] == original_keys(name)


def test_upfirdn2d_basic_cases():
    x = torch.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    up = upfirdn2d(x, torch.ones(1, 1), up=2)
    assert torch.equal(up[0, 0], torch.tensor([[1.0, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]))
    box = upfirdn2d(torch.ones(1, 2, 4, 4), torch.full((2, 2), 0.25), down=2)
    assert box.shape == (1, 2, 2, 2) and torch.allclose(box, torch.ones(1, 2, 2, 2))
    cropped = upfirdn2d(x, torch.ones(1, 1), pad=(-1, 0))
    assert torch.equal(cropped[0, 0], torch.tensor([[4.0]]))


# --- numerical equality with the originals ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY_ROSINALITY))
@pytest.mark.parametrize("fused", [True, False])
def test_rosinality_checkpoint_reproduces_original(tmp_path, name, fused):
    cfg = TINY_ROSINALITY[name]
    ref = np.load(DATA / "rosinality_tiny.npz")
    save_tiny_checkpoint(name, tmp_path / "g.pt")
    model = read_stylegan2_weights(tmp_path / "g.pt").set_fused(fused)
    assert model.channels == cfg["channels"] and model.n_mlp == cfg["n_mlp"]
    z, w, noise = reference_inputs(cfg["seed"], cfg["batch"], cfg["size"], cfg["style_dim"])
    with torch.no_grad():
        assert max_diff(model.mapping(z), ref[f"{name}_mapping"]) < TOL
        image = model.synthesis(w, noise)
        assert image.abs().max() > 0.1  # not a degenerate output
        assert max_diff(image, ref[f"{name}_image"]) < TOL
        assert max_diff(model.synthesize_w(w, noise), (ref[f"{name}_image"] + 1) / 2) < TOL
        if f"{name}_image_const" in ref.files:
            assert max_diff(model.synthesis(w, model.const_noise()), ref[f"{name}_image_const"]) < TOL
    assert torch.equal(model.latent_avg, torch.arange(cfg["style_dim"], dtype=torch.float32))


@pytest.mark.parametrize("fused", [True, False])
def test_nvlabs_pickle_reproduces_original(fused):
    ref = np.load(DATA / "nvlabs_tiny_expected.npz")
    model = read_stylegan2_weights(DATA / "nvlabs_tiny.pkl").eval().set_fused(fused)
    assert (model.size, model.style_dim, model.n_mlp, model.conv_clamp) == (32, 16, 2, 1.0)
    assert model.channels == {4: 32, 8: 16, 16: 8, 32: 4}
    ws = torch.from_numpy(ref["ws"])
    with torch.no_grad():
        assert max_diff(model.mapping(torch.from_numpy(ref["z"])), ref["mapping"]) < TOL
        assert max_diff(model.synthesis(ws, model.const_noise()), ref["image_const_noise"]) < TOL
        assert max_diff(model.synthesis(ws, None), ref["image_no_noise"]) < TOL
        # the reference depends on noise and on the clamp, so a wrong mapping of either would show
        assert np.abs(ref["image_const_noise"] - ref["image_no_noise"]).max() > 0.05
        model.set_fused(True)
        for module in model.modules():
            if hasattr(module, "clamp"):
                module.clamp = None
        assert max_diff(model.synthesis(ws, model.const_noise()), ref["image_const_noise"]) > 0.05


def relative_error(ours: torch.Tensor, expected: np.ndarray) -> float:
    """max |ours − expected| / max |expected| (the 1e-5 relative tolerance of the fidelity checks)."""
    return max_diff(ours, expected) / float(np.abs(expected).max())


def test_rosinality_stored_blur_kernels_of_another_size_reproduce_original(tmp_path):
    """rosinality_blur_expected.npz: rosinality's Generator(16, 16, 2, blur_kernel=[1, 2, 1]) (bef283a,
    channels {4: 16, 8: 16, 16: 8}, CPU ops) with ``seeded_rosinality_state(keys, 3)`` and every blur
    kernel its own random asymmetric 3×3 (torch.rand seeded 11 in sorted key order, + 0.05, sum 4),
    run on ``reference_inputs(3, 2, 16, 16)``; our loader infers the 3-tap size and uses the values."""
    ref = np.load(DATA / "rosinality_blur_expected.npz")
    keys = [(k, tuple(v)) for k, v in json.loads(str(ref["keys"]))]
    state = seeded_rosinality_state(keys, 3)
    gen = torch.Generator().manual_seed(11)
    for key, shape in sorted(keys):
        if key.endswith(".kernel"):
            r = torch.rand(shape, generator=gen) + 0.05
            state[key] = r / r.sum() * 4
    torch.save({"g_ema": state}, tmp_path / "blur.pt")
    model = read_stylegan2_weights(tmp_path / "blur.pt").eval()
    assert model.blur_kernel == (1, 1, 1) and model.convs[0].conv.blur.kernel.shape == (3, 3)
    _, w, noise = reference_inputs(3, 2, 16, 16)
    with torch.no_grad():
        for fused in (True, False):
            assert relative_error(model.set_fused(fused).synthesis(w, noise), ref["image"]) < 1e-5
        model.convs[0].conv.blur.kernel.copy_(make_blur_kernel((1, 2, 1), 4))
        assert relative_error(model.synthesis(w, noise), ref["image"]) > 1e-4


def test_nvlabs_stored_filters_demodulation_and_layer_features_reproduce_original():
    """nvlabs_filters.pkl: NVlabs' own Generator (d72cc7d) with mapping layer_features 24 ≠ w_dim 16,
    resample_filter [1, 2, 1], every stored filter buffer replaced by its own random asymmetric
    values, and synthesis conv weights ×1e-3 (so the epsilon's place in demodulation shows);
    the expected outputs were computed by the original code on CPU (see tests/data/stylegan2/README.md)."""
    ref = np.load(DATA / "nvlabs_filters_expected.npz")
    model = read_stylegan2_weights(DATA / "nvlabs_filters.pkl").eval()
    assert (model.size, model.style_dim, model.mapping_width, model.n_mlp) == (16, 16, 24, 3)
    assert model.style[1].weight.shape == (24, 16) and model.style[3].weight.shape == (16, 24)
    ws = torch.from_numpy(ref["ws"])
    with torch.no_grad():
        assert relative_error(model.mapping(torch.from_numpy(ref["z"])), ref["mapping"]) < 1e-5
        for fused in (True, False):
            model.set_fused(fused)
            assert relative_error(model.synthesis(ws, model.const_noise()), ref["image_const_noise"]) < 1e-5
            assert relative_error(model.synthesis(ws, None), ref["image_no_noise"]) < 1e-5
        # each ingredient is exercised: rosinality's epsilon placement, or a default filter, misses the reference
        for module in model.modules():
            if isinstance(module, ModulatedConv2d):
                module.nvlabs_demod = False
        assert relative_error(model.synthesis(ws, model.const_noise()), ref["image_const_noise"]) > 1e-4
        for module in model.modules():
            if isinstance(module, ModulatedConv2d):
                module.nvlabs_demod = True
        model.to_rgbs[0].upsample.kernel.copy_(make_blur_kernel((1, 2, 1), 4))
        assert relative_error(model.synthesis(ws, model.const_noise()), ref["image_const_noise"]) > 1e-4


def test_random_weights_load_strictly_under_public_names(tmp_path):
    name = "a"
    state = save_tiny_checkpoint(name, tmp_path / "g.pt")
    model = read_rosinality_checkpoint(tmp_path / "g.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # a bare state dict (no g_ema wrapper) in the legacy torch format is accepted as well
    torch.save(state, tmp_path / "bare.pt", _use_new_zipfile_serialization=False)
    bare = read_stylegan2_weights(tmp_path / "bare.pt")
    assert all(torch.equal(v, state[k]) for k, v in bare.state_dict().items())


def test_rosinality_training_checkpoint_with_args_namespace(tmp_path):
    state = save_tiny_checkpoint("b", tmp_path / "ema.pt")
    blob = torch.load(tmp_path / "ema.pt", weights_only=True)
    blob.update(g=state, d={"convs.0.0.weight": torch.zeros(2, 3, 1, 1)}, g_optim={"state": {}, "param_groups": []},
                args=argparse.Namespace(size=16, batch=4, lr=0.002), ada_aug_p=0.0)
    torch.save(blob, tmp_path / "train.pt")
    assert read_stylegan2_weights(tmp_path / "train.pt").size == 16


def test_config_f_channel_multiplier_is_inferred(tmp_path):
    model = StyleGAN2Generator(64, 8, 1, channel_multiplier=1)
    torch.save({"g_ema": model.state_dict()}, tmp_path / "cm1.pt")
    loaded = read_stylegan2_weights(tmp_path / "cm1.pt")
    assert loaded.channel_multiplier == 1 and loaded.channels[64] == 256


# --- the SearchableGenerator contract and the Gaussian-fit cache ------------------------------------

def test_load_stylegan2_computes_and_caches_fit_beside_weights(tmp_path, monkeypatch):
    weights = tmp_path / "tiny.pt"
    save_tiny_checkpoint("b", weights)
    model = load_stylegan2(weights, "cpu", fit_samples=3000)
    cache = tmp_path / "tiny.gaussian_fit.pt"
    assert fit_cache_path(weights) == cache and cache.is_file()
    blob = torch.load(cache, weights_only=True)
    assert int(blob["samples"]) == 3000
    expected = compute_fit(model.mapping, model.style_dim, 3000)
    assert torch.allclose(blob["mean"], expected.mean, atol=1e-6)
    assert torch.allclose(blob["std"], expected.std, atol=1e-6)
    assert torch.equal(model.fit_mean, blob["mean"]) and model.fit_samples == 3000
    assert all(not p.requires_grad for p in model.parameters()) and not model.training
    assert model.card.weights == (weights,) and len(model.card.weights_sha256[0]) == 64

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached fit should have been reused")

    monkeypatch.setattr(gaussian_fit_module, "compute_fit", no_recompute)
    again = load_stylegan2(weights, "cpu", fit_samples=3000)
    assert torch.equal(again.fit_std, model.fit_std)
    monkeypatch.undo()
    # other weights under the same name: the cache is keyed by the file's SHA-256 and recomputed
    torch.save({"g_ema": {k: v * 1.5 if k.startswith("style.") else v for k, v in model.state_dict().items()}},
               weights)
    changed = load_stylegan2(weights, "cpu", fit_samples=3000)
    assert not torch.allclose(changed.fit_mean, model.fit_mean)
    assert torch.load(cache, weights_only=True)["source"] == changed.card.weights_sha256[0]
    monkeypatch.setenv("PULSE_AUDIT_FIT_SAMPLES", "2500")
    REGISTRY["stylegan2"].load(weights, torch.device("cpu"))
    assert int(torch.load(cache, weights_only=True)["samples"]) == 2500
    monkeypatch.setenv("PULSE_AUDIT_FIT_SAMPLES", "many")
    with pytest.raises(PulseAuditError, match="PULSE_AUDIT_FIT_SAMPLES"):
        load_stylegan2(weights, "cpu")


def test_searchable_generator_contract(tmp_path):
    weights = tmp_path / "tiny.pt"
    save_tiny_checkpoint("b", weights)
    model = load_stylegan2(weights, "cpu", fit_samples=500)
    assert model.latent_shape == (6, 16) and model.resolution == 16
    assert model.noise_shapes == ((1, 4, 4), (1, 8, 8), (1, 8, 8), (1, 16, 16), (1, 16, 16))
    assert model.default_trainable_noise == 5 and model.default_zero_noise == (4,)
    latent = model.sample_latent(torch.Generator().manual_seed(0)).requires_grad_(True)
    w = model.latent_to_w(latent)
    assert torch.allclose(w, torch.nn.functional.leaky_relu(latent * model.fit_std + model.fit_mean, 0.2))
    noise = [torch.randn(1, *s, requires_grad=True) for s in model.noise_shapes]
    image = model.synthesize(latent, noise)
    assert image.shape == (1, 3, 16, 16)
    image.square().mean().backward()
    assert latent.grad.abs().sum() > 0 and noise[0].grad.abs().sum() > 0
    with torch.no_grad():
        zeros = [torch.zeros(1, *s) for s in model.noise_shapes]
        assert torch.equal(model.synthesize_w(w, None), model.synthesize_w(w, zeros))
        assert not torch.equal(model.synthesize_w(w, None), model.synthesize_w(w, [n.detach() for n in noise]))
    with pytest.raises(ValueError, match="noise map 1"):
        model.synthesize_w(w, [zeros[0], zeros[0], *zeros[2:]])
    with pytest.raises(ValueError, match="expects latents"):
        model.latent_to_w(torch.zeros(1, 5, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = tiny_model("a")
    model.load_state_dict({**model.state_dict(), **seeded_rosinality_state(original_keys("a"), 1)})
    _, w, noise = reference_inputs(1, 2, 32, 32)
    with torch.no_grad():
        cpu = model.synthesis(w, noise)
        gpu = model.cuda().synthesis(w.cuda(), [n.cuda() for n in noise]).cpu()
    assert (cpu - gpu).abs().max() < 1e-4


# --- errors -------------------------------------------------------------------------------------

def test_missing_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match="missing StyleGAN2 weights.*nope.pt"):
        load_stylegan2(tmp_path / "nope.pt", "cpu", fit_samples=10)


@pytest.mark.parametrize("suffix", [".pt", ".pkl"])
def test_truncated_files(tmp_path, suffix):
    source = tmp_path / "full.pt"
    save_tiny_checkpoint("b", source)
    data = source.read_bytes() if suffix == ".pt" else (DATA / "nvlabs_tiny.pkl").read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"cut\.(pt|pkl) is truncated") as info:
        read_stylegan2_weights(cut)
    assert "\n" not in str(info.value)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.pt is empty"):
        read_stylegan2_weights(tmp_path / "empty.pt")


def test_wrong_architecture_errors(tmp_path):
    # a StyleGAN1 synthesis state dict (PULSE layout): no g_ema
    torch.save({"torgb.weight": torch.zeros(3, 16, 1, 1)}, tmp_path / "synthesis.pt")
    with pytest.raises(WeightsError, match="synthesis.pt has no 'g_ema' entry.*rosinality StyleGAN2"):
        read_stylegan2_weights(tmp_path / "synthesis.pt")
    # a rosinality checkpoint with a layer missing and one with a wrong shape
    state = save_tiny_checkpoint("a", tmp_path / "ok.pt")
    broken = dict(state)
    broken.pop("convs.1.noise.weight")
    torch.save({"g_ema": broken}, tmp_path / "missing.pt")
    with pytest.raises(WeightsError, match="missing.pt is not a rosinality StyleGAN2 generator.*1 missing keys"):
        read_stylegan2_weights(tmp_path / "missing.pt")
    broken = dict(state, **{"convs.1.activate.bias": torch.zeros(5)})
    torch.save({"g_ema": broken}, tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match="shape mismatches"):
        read_stylegan2_weights(tmp_path / "shape.pt")
    # a pickle that is not a network snapshot
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(WeightsError, match="list.pkl has no NVlabs 'G_ema' generator"):
        read_stylegan2_weights(tmp_path / "list.pkl")
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(WeightsError, match="neither a torch checkpoint nor a pickle"):
        read_stylegan2_weights(tmp_path / "text.pt")


def test_torch_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    state = save_tiny_checkpoint("b", tmp_path / "ok.pt")
    torch.save({"g_ema": state, "extra": io.StringIO("x")}, tmp_path / "objects.pt")
    with pytest.raises(WeightsError, match="objects.pt is not a plain rosinality StyleGAN2 checkpoint"):
        read_stylegan2_weights(tmp_path / "objects.pt")


# --- regenerating the reference data (needs the original repositories; not run by pytest) --------

def make_reference_data(rosinality_dir: Path, nvlabs_dir: Path, out: Path = DATA) -> None:  # pragma: no cover
    """Write the files described in the module docstring (except nvlabs_tiny.*, see below).

    ``rosinality_dir`` is a checkout of rosinality/stylegan2-pytorch whose ``op/*.py`` have the
    ``torch.utils.cpp_extension.load`` import replaced by a stub returning None (the CPU branches
    never use the compiled ops). ``nvlabs_dir`` is a checkout of NVlabs/stylegan2-ada-pytorch.
    The NVlabs tiny pickle and its outputs are written by :func:`make_nvlabs_tiny`.
    """
    sys.path.insert(0, str(rosinality_dir))
    import model as rosinality  # noqa: PLC0415  (the original, only when regenerating)

    for size in (1024, 256):
        with torch.device("meta"):
            g = rosinality.Generator(size, 512, 8, channel_multiplier=2)
        keys = [[k, list(v.shape)] for k, v in g.state_dict().items()]
        (out / f"rosinality_{size}_config_f.json").write_text(json.dumps(
            {"source": f"rosinality/stylegan2-pytorch bef283a model.Generator({size}, 512, 8, channel_multiplier=2)",
             "keys": keys}, separators=(",", ":")))
    arrays = {}
    for name, cfg in sorted(TINY_ROSINALITY.items()):
        class Tiny(rosinality.Generator):
            channels = property(lambda self, cfg=cfg: cfg["channels"], lambda self, value: None)

        g = Tiny(cfg["size"], cfg["style_dim"], cfg["n_mlp"]).eval()
        keys = [(k, tuple(v.shape)) for k, v in g.state_dict().items()]
        g.load_state_dict({**g.state_dict(), **seeded_rosinality_state(keys, cfg["seed"])})
        z, w, noise = reference_inputs(cfg["seed"], cfg["batch"], cfg["size"], cfg["style_dim"])
        with torch.no_grad():
            arrays[f"{name}_mapping"] = g.get_latent(z).numpy()
            arrays[f"{name}_image"] = g([w], input_is_latent=True, noise=noise)[0].numpy()
            if name == "b":
                arrays[f"{name}_image_const"] = g([w], input_is_latent=True, randomize_noise=False)[0].numpy()
        arrays[f"{name}_keys"] = np.array(json.dumps(keys))
    np.savez_compressed(out / "rosinality_tiny.npz", **arrays)

    sys.path.insert(0, str(nvlabs_dir))
    from training import networks  # noqa: PLC0415

    for size, kwargs in ((1024, dict(channel_base=32768, channel_max=512)),
                         (256, dict(channel_base=16384, channel_max=512))):
        init = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=size, img_channels=3,
                    mapping_kwargs=dict(num_layers=8), synthesis_kwargs=kwargs)
        g = networks.Generator(**init)  # NVlabs' setup_filter cannot run on the meta device
        (out / f"nvlabs_{size}_keys.json").write_text(json.dumps(
            {"source": "NVlabs/stylegan2-ada-pytorch d72cc7d training.networks.Generator", "init_kwargs": init,
             "keys": [[k, list(v.shape)] for k, v in g.state_dict().items()]}, separators=(",", ":")))


def make_nvlabs_tiny(nvlabs_dir: Path, out: Path = DATA) -> None:  # pragma: no cover
    """Write nvlabs_tiny.pkl with NVlabs' own code (module_src replaced) and its reference outputs."""
    import copy
    import types
    sys.path.insert(0, str(nvlabs_dir))
    sys.modules.setdefault("requests", types.ModuleType("requests"))  # dnnlib imports it for downloads only
    import dnnlib  # noqa: PLC0415
    from torch_utils import persistence  # noqa: PLC0415
    placeholder = ("# NVlabs module source omitted from this pulse-audit test fixture (NVIDIA licence).\n"
                   "raise RuntimeError('pulse-audit must never execute module_src')\n")
    persistence._module_to_src = lambda module: placeholder  # before training.networks is imported
    from training import networks  # noqa: PLC0415

    cfg = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
               mapping_kwargs=dnnlib.EasyDict(num_layers=2),
               synthesis_kwargs=dnnlib.EasyDict(channel_base=128, channel_max=32, num_fp16_res=2, conv_clamp=1.0,
                                                architecture="skip"))
    g = networks.Generator(**copy.deepcopy(cfg)).eval().requires_grad_(False)
    rs = np.random.RandomState(1234)
    with torch.no_grad():
        for key, tensor in sorted(g.state_dict().items()):
            if key.endswith("resample_filter"):
                continue
            r = torch.from_numpy(rs.standard_normal(tuple(tensor.shape)).astype(np.float32))
            if key.startswith("mapping.fc"):
                r = r * (100 if key.endswith("weight") else 10)
            elif key.endswith("affine.bias"):
                r = 1 + 0.2 * r
            elif key.endswith("noise_strength"):
                r = 0.3 * r
            elif key.endswith(".bias"):
                r = 0.2 * r
            tensor.copy_(r)
    rs = np.random.RandomState(99)
    z = torch.from_numpy(rs.standard_normal((2, 16)).astype(np.float32))
    ws = torch.from_numpy(rs.standard_normal((2, g.num_ws, 16)).astype(np.float32))
    with torch.no_grad():
        arrays = dict(z=z.numpy(), ws=ws.numpy(), mapping=g.mapping(z, None)[:, 0].numpy(),
                      image_const_noise=g.synthesis(ws, noise_mode="const", force_fp32=True).numpy(),
                      image_no_noise=g.synthesis(ws, noise_mode="none", force_fp32=True).numpy())
    snapshot = dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="none",
                                             resolution=32, use_labels=False, max_size=None, xflip=False),
                    G=g, D=None, G_ema=g, augment_pipe=None)
    with open(out / "nvlabs_tiny.pkl", "wb") as handle:
        pickle.dump(snapshot, handle)
    np.savez_compressed(out / "nvlabs_tiny_expected.npz", **arrays)


if __name__ == "__main__":  # pragma: no cover
    # python tests/test_stylegan2.py ROSINALITY_DIR NVLABS_DIR
    make_nvlabs_tiny(Path(sys.argv[2]))
    make_reference_data(Path(sys.argv[1]), Path(sys.argv[2]))
