"""The DigiFace DCGAN: strict loading of the shipped weights, equality with the package's own
class, BN folding, the fused search path against the plain layers (values, gradients, a short
search), and one-line errors for bad files."""

import copy
import os
import pickle

import pytest
import torch

from pulse_engine.downsample import BicubicDownsample
from pulse_engine.errors import WeightsError
from pulse_engine.generators import REGISTRY, dcgan, load_generator
from pulse_engine.generators.dcgan import DCGANGenerator, digiface_weights_path, load_dcgan_digiface
from pulse_engine.search import SearchConfig, pulse_search

EXPECTED_KEYS = {  # gan-face-generate's netG_state_dict for Generator(0, 3, 100, 64)
    "main.0.weight": (100, 512, 4, 4), "main.3.weight": (512, 256, 4, 4), "main.6.weight": (256, 128, 4, 4),
    "main.9.weight": (128, 64, 4, 4), "main.12.weight": (64, 3, 4, 4),
    **{f"main.{i}.{p}": (c,) for i, c in ((1, 512), (4, 256), (7, 128), (10, 64))
       for p in ("weight", "bias", "running_mean", "running_var")},
    **{f"main.{i}.num_batches_tracked": () for i in (1, 4, 7, 10)},
}


def test_architecture_keys_match_public_layout():
    shapes = {k: tuple(v.shape) for k, v in DCGANGenerator().state_dict().items()}
    assert shapes == EXPECTED_KEYS


def test_shipped_weights_load_and_match_the_package_class():
    models = pytest.importorskip("gan_face_generate.models")
    ours = load_dcgan_digiface()
    reference = models.Generator(0, 3, 100, 64)
    blob = torch.load(digiface_weights_path(), map_location="cpu", weights_only=True)
    reference.load_state_dict(blob["netG_state_dict"])
    reference.eval()
    z = torch.randn(6, 1, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = (reference(z.view(6, 100, 1, 1)) + 1) / 2
        fused = ours.synthesize(z)
        ours.train()
        ours.eval()
        unfused = (ours.main(z.view(6, 100, 1, 1)) + 1) / 2
    torch.testing.assert_close(unfused, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)
    assert ours.card.weights_sha256[0] and not any(p.requires_grad for p in ours.parameters())


def test_missing_truncated_and_wrong_files(tmp_path):
    with pytest.raises(WeightsError, match="nothere.tar"):
        load_dcgan_digiface(tmp_path / "nothere.tar")
    good = digiface_weights_path().read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good[: len(good) // 3])
    with pytest.raises(WeightsError, match="truncated.tar.*truncated"):
        load_dcgan_digiface(truncated)
    wrong = tmp_path / "wrong.tar"
    state = DCGANGenerator(ngf=32).state_dict()
    torch.save({"netG_state_dict": state}, wrong)
    with pytest.raises(WeightsError, match="wrong.tar is not a 64×64 DCGAN.*shape mismatches"):
        load_dcgan_digiface(wrong)
    no_entry = tmp_path / "noentry.tar"
    torch.save({"G": state}, no_entry)
    with pytest.raises(WeightsError, match="netG_state_dict"):
        load_dcgan_digiface(no_entry)


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Payload.marker}",))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    Payload.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.tar"
    with open(evil, "wb") as handle:
        pickle.dump({"netG_state_dict": Payload()}, handle)
    with pytest.raises(WeightsError, match="evil.tar.*refusing"):
        load_dcgan_digiface(evil)
    assert not Payload.marker.exists()


def test_registry_lists_dcgan_weights_present():
    assert REGISTRY["dcgan-digiface"].missing_files() == []
    assert load_generator("dcgan-tiny").resolution == 32


def plain_copy(model):
    """The same weights run through ``self.main`` as loaded (NCHW, BatchNorm separate): the plain loop."""
    plain = copy.deepcopy(model)
    plain._fused_layers = 0
    return plain


@pytest.mark.parametrize("name", ["dcgan-tiny", "dcgan-digiface"])
@pytest.mark.parametrize("onednn", [True, False], ids=["packed-onednn", "torch-operators"])
def test_fused_synthesis_and_its_gradient_match_the_plain_layers(name, onednn, monkeypatch):
    fused = load_generator(name)
    fused.synthesize_w(torch.zeros(1, *fused.latent_shape))  # packs the weights where oneDNN runs
    plain = plain_copy(fused)  # the packed weights are not copied (oneDNN's cannot be)
    assert (fused._packed is not None) == dcgan._onednn_runs(torch.zeros(1)) and plain._packed is None
    monkeypatch.setattr(dcgan, "_onednn_runs", lambda x: onednn)
    z = torch.randn(5, *fused.latent_shape, generator=torch.Generator().manual_seed(1))
    weights = torch.rand(5, 3, fused.resolution, fused.resolution, generator=torch.Generator().manual_seed(2))
    grads, images = [], []
    for model in (fused, plain):
        latent = z.clone().requires_grad_(True)
        image = model.synthesize_w(latent)
        (image * weights).sum().backward()  # an arbitrary upstream gradient through every layer
        images.append(image.detach())
        grads.append(latent.grad)
    assert images[0].shape == images[1].shape == (5, 3, fused.resolution, fused.resolution)
    torch.testing.assert_close(images[0], images[1], atol=1e-5, rtol=0)
    scale = float(grads[1].abs().max())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5 * scale, rtol=0)


def test_search_on_the_fused_path_matches_the_plain_loop():
    fused = load_dcgan_digiface()
    plain = plain_copy(fused)
    with torch.no_grad():
        z = torch.randn(3, *fused.latent_shape, generator=torch.Generator().manual_seed(5))
        low = BicubicDownsample(4)(plain.synthesize_w(z))
    config = SearchConfig(steps=10, restarts=1, seed=0)
    ours, reference = (pulse_search(model, low, config, batch_size=3) for model in (fused, plain))
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a.image, b.image, atol=1e-4, rtol=0)  # the batch-composition tolerance
        assert a.lr_l2 == pytest.approx(b.lr_l2, rel=1e-3) and a.success == b.success
