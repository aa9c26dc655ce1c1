"""The DCGAN's hidden layers on oneDNN weights packed once give torch's own operators' results bit for bit:
the forward pass as ``relu(F.conv_transpose2d)``, the backward pass as the ReLU mask followed by
``F.conv2d`` with the unpacked weight (the adjoint autograd would run), at several batch sizes; and the
ReLU masks applied in place never touch the caller's gradient."""

import pytest
import torch
import torch.nn.functional as F

from pulse_engine.generators import dcgan, load_generator

pytestmark = pytest.mark.skipif(not dcgan._onednn_runs(torch.zeros(1)), reason="needs torch's oneDNN operators")


@pytest.mark.parametrize("name", ["dcgan-tiny", "dcgan-digiface"])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_hidden_layers_on_packed_weights_equal_torch_operators_bit_for_bit(name, batch):
    model = load_generator(name)
    gen = torch.Generator().manual_seed(batch)
    for i, packed in enumerate(model._packed_weights(), start=1):
        weight, bias = getattr(model, f"fused_w{i}"), getattr(model, f"fused_b{i}")
        c_in, c_out = weight.shape[:2]
        side = 4 * 2 ** (i - 1)
        x = torch.randn(batch, c_in, side, side, generator=gen).contiguous(memory_format=torch.channels_last)
        upstream = torch.randn(batch, c_out, 2 * side, 2 * side, generator=gen)
        upstream = upstream.contiguous(memory_format=torch.channels_last)  # as the next layer's conv returns it
        x.requires_grad_(True)
        y = dcgan._HiddenLayer.apply(x, *packed, bias)
        y.backward(upstream.clone())  # the layer masks the gradient it receives in place
        with torch.no_grad():
            expected = torch.relu(F.conv_transpose2d(x, weight, bias, 2, 1))
            expected_grad = F.conv2d(torch.ops.aten.threshold_backward(upstream, expected, 0), weight, None, 2, 1)
        assert bool((expected == 0).any()) and bool((expected > 0).any())  # the mask has both values
        assert torch.equal(y, expected), f"layer {i}: forward differs"
        assert torch.equal(x.grad, expected_grad), f"layer {i}: input gradient differs"


def test_the_callers_gradient_of_the_image_is_left_as_it_was():
    model = load_generator("dcgan-tiny")
    latent = torch.randn(4, *model.latent_shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    image = model.synthesize_w(latent)
    upstream = torch.randn(image.shape, generator=torch.Generator().manual_seed(1))
    kept = upstream.clone()
    image.backward(upstream)
    assert torch.equal(upstream, kept) and bool(latent.grad.abs().sum() > 0)
