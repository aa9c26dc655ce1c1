"""StyleGAN2's two formulations of the modulated convolution (fused grouped conv vs shared conv).

Both are checked, in float64, against an independent per-sample computation written from the
definition (each sample's demodulated weight built explicitly and convolved on its own), for both
demodulation variants, the upsampling layer and ToRGB's 1×1 conv, values and gradients; then whole
generators and a short search are compared across the formulations. The fidelity tests against the
original implementations' outputs run both formulations as well (tests/test_stylegan2.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_stylegan2 import TINY_ROSINALITY, save_tiny_checkpoint

from pulse_engine.downsample import BicubicDownsample
from pulse_engine.generators.gaussian_fit import GaussianFit
from pulse_engine.generators.stylegan2 import StyleGAN2Generator
from pulse_engine.generators.stylegan2_layers import ModulatedConv2d, demodulation_coefficients, prefer_fused
from pulse_engine.generators.stylegan2_loaders import load_stylegan2
from pulse_engine.search import SearchConfig, pulse_search

LAYERS = {  # name: ModulatedConv2d keyword arguments besides the channels
    "conv": dict(kernel_size=3),
    "conv-up": dict(kernel_size=3, upsample=True),
    "conv-up-3-tap-blur": dict(kernel_size=3, upsample=True, blur_kernel=(1, 2, 1)),
    "to-rgb-1x1": dict(kernel_size=1, demodulate=False),
}


def reference_modulated_conv(layer: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The definition, one sample at a time: w'' = gain·w·s (demodulated over (I, k, k) with the
    epsilon where the variant puts it), then an ordinary convolution of that sample alone."""
    s = layer.modulation(style)
    outputs = []
    for b in range(x.shape[0]):
        weight = layer.weight[0] * s[b].view(1, -1, 1, 1)  # (O, I, k, k), unscaled
        if layer.demodulate and layer.nvlabs_demod:
            weight = weight / torch.sqrt(weight.square().sum((1, 2, 3), keepdim=True) + 1e-8)
        else:
            weight = weight * layer.scale
            if layer.demodulate:
                weight = weight / torch.sqrt(weight.square().sum((1, 2, 3), keepdim=True) + 1e-8)
        if layer.upsample:
            out = layer.blur(F.conv_transpose2d(x[b:b + 1], weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x[b:b + 1], weight, padding=layer.padding)
        outputs.append(out)
    return torch.cat(outputs)


def random_layer(name: str, nvlabs_demod: bool, weight_scale: float = 1.0) -> ModulatedConv2d:
    torch.manual_seed(3)
    layer = ModulatedConv2d(5, 4, style_dim=6, nvlabs_demod=nvlabs_demod, **LAYERS[name]).double()
    with torch.no_grad():
        layer.weight.mul_(weight_scale)
        layer.modulation.bias.add_(0.3 * torch.randn(5, dtype=torch.float64))  # styles not all near 1
        if layer.upsample:  # an asymmetric stored kernel, so a flipped or transposed blur would show
            kernel = torch.rand_like(layer.blur.kernel) + 0.05
            layer.blur.kernel.copy_(kernel / kernel.sum() * 4)
    return layer.requires_grad_(False)


@pytest.mark.parametrize("nvlabs_demod", [False, True])
@pytest.mark.parametrize("weight_scale", [1.0, 1e-4])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_both_formulations_match_the_definition_with_gradients(name, nvlabs_demod, weight_scale):
    layer = random_layer(name, nvlabs_demod, weight_scale)
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    style = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    probe = torch.randn_like(reference_modulated_conv(layer, x, style))
    expected = reference_modulated_conv(layer, x, style)
    expected_grads = torch.autograd.grad((expected * probe).sum(), (x, style))
    assert expected.shape == (3, 4, 12 if layer.upsample else 6, 12 if layer.upsample else 6)
    for fused in (True, False):
        layer.fused = fused
        out = layer(x, style)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12 * float(expected.detach().abs().max()))
        for got, want in zip(torch.autograd.grad((out * probe).sum(), (x, style)), expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12 * float(want.abs().max()))


def test_small_weights_make_the_epsilon_placement_visible():
    """Teeth for the test above: at weights ×1e-4 the two demodulation variants differ clearly."""
    x, style = torch.randn(2, 5, 6, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    nvlabs = random_layer("conv", True, 1e-4)
    rosinality = random_layer("conv", False, 1e-4)
    for fused in (True, False):
        nvlabs.fused = rosinality.fused = fused
        a, b = nvlabs(x, style), rosinality(x, style)
        assert (a - b).abs().max() > 0.1 * a.abs().max()


def test_demodulation_coefficients_equal_the_norm_of_each_modulated_filter():
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    styles = torch.randn(2, 5, dtype=torch.float64)
    modulated = weight[None] * styles[:, None, :, None, None]  # (B, O, I, k, k)
    expected = 1 / modulated.flatten(2).norm(dim=2).square().add(1e-8).sqrt()
    torch.testing.assert_close(demodulation_coefficients(weight, styles), expected, rtol=1e-12, atol=0)


def tiny_float64_generator(nvlabs_demod: bool) -> StyleGAN2Generator:
    torch.manual_seed(5)
    model = StyleGAN2Generator(16, style_dim=8, n_mlp=2, channels={4: 6, 8: 5, 16: 4},
                               nvlabs_demod=nvlabs_demod).double().freeze()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("noise.weight") or (name.endswith("bias") and "modulation" not in name):
                param.copy_(0.2 * torch.randn_like(param))
    fit = GaussianFit(torch.randn(8, dtype=torch.float64) * 0.1, torch.rand(8, dtype=torch.float64) + 0.5, 1)
    return model.set_fit(fit)


@pytest.mark.parametrize("nvlabs_demod", [False, True])
def test_whole_generator_agrees_across_formulations_with_gradients_wrt_the_latent(nvlabs_demod):
    model = tiny_float64_generator(nvlabs_demod)
    latent = torch.randn(3, *model.latent_shape, dtype=torch.float64, requires_grad=True)
    noise = [torch.randn(3, *shape, dtype=torch.float64, requires_grad=True) for shape in model.noise_shapes]
    probe = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    results = []
    for fused in (True, False):
        image = model.set_fused(fused).synthesize(latent, noise)
        results.append((image, torch.autograd.grad((image * probe).sum(), (latent, *noise))))
    (image_f, grads_f), (image_s, grads_s) = results
    assert image_f.std() > 0.05 and grads_f[0].abs().max() > 0  # a non-degenerate image and gradient
    torch.testing.assert_close(image_s, image_f, rtol=1e-10, atol=1e-12)
    for shared, fused in zip(grads_s, grads_f):
        torch.testing.assert_close(shared, fused, rtol=1e-10, atol=1e-12 * float(fused.abs().max()))


def test_the_default_formulation_follows_the_device():
    model = StyleGAN2Generator(8, style_dim=8, n_mlp=1, channels={4: 4, 8: 4})
    assert not prefer_fused(torch.device("cpu")) and prefer_fused(torch.device("cuda"))
    assert model.modconv_formulation(torch.device("cpu")) == "shared"
    assert model.modconv_formulation(torch.device("cuda")) == "fused"
    assert model.set_fused(True).modconv_formulation(torch.device("cpu")) == "fused"
    model.conv1.conv.fused = False
    assert model.modconv_formulation(torch.device("cpu")) == "mixed"
    assert model.set_fused(None).modconv_formulation(torch.device("cpu")) == "shared"


def test_a_search_at_batch_3_gives_the_same_result_in_either_formulation(tmp_path):
    save_tiny_checkpoint("a", tmp_path / "g.pt")
    model = load_stylegan2(tmp_path / "g.pt", "cpu", fit_samples=2000)
    size = TINY_ROSINALITY["a"]["size"]
    with torch.no_grad():
        target = model.synthesize(torch.randn(3, *model.latent_shape, generator=torch.Generator().manual_seed(9)))
    low = BicubicDownsample(4)(target.clamp(0, 1))
    config = dataclasses.replace(SearchConfig(), steps=12)
    fused = pulse_search(model.set_fused(True), low, config, batch_size=3)
    shared = pulse_search(model.set_fused(False), low, config, batch_size=3)
    assert fused[0].image.shape == (3, size, size)
    for a, b in zip(fused, shared):
        assert (a.best_step, a.success) == (b.best_step, b.success)
        torch.testing.assert_close(b.image, a.image, atol=1e-4, rtol=0)
        assert b.lr_l2 == pytest.approx(a.lr_l2, rel=1e-3, abs=1e-7)
