"""Load StyleGAN2 weights from the two public formats into :class:`StyleGAN2Generator`, safely.

- **rosinality/stylegan2-pytorch** ``.pt``: ``torch.load(weights_only=True)``, allowing only
  ``argparse.Namespace`` (the ``args`` entry of training checkpoints); the generator is the
  ``g_ema`` state dict (or a bare generator state dict), ``latent_avg`` is kept when present. The
  architecture (size, style_dim, n_mlp, channels) is inferred from key shapes, then loaded strictly.
- **NVlabs stylegan2-ada-pytorch** ``.pkl``: read with :mod:`.safe_pickle` (no code from the file is
  run, its embedded module source is never executed), ``G_ema``'s tensors flattened, its
  ``init_kwargs`` checked, and the parameters renamed onto rosinality's layout by
  :func:`nvlabs_name_table`. Every NVlabs tensor maps onto exactly one of ours by a reshape only:
  both implementations store weights unscaled and apply the same run-time gains (mapping
  lr_multiplier 0.01 with gain 0.01/√fan_in, affine/modulation gain 1/√w_dim with bias init 1,
  ToRGB gain 1/√in_channels, conv gain cancelled by demodulation), ``noise_strength`` is the
  NoiseInjection weight, ``noise_const`` the stored noise, and the [1, 3, 3, 1] resample filters
  are architecture constants (checked, not copied). ``conv_clamp`` is honoured; blocks NVlabs runs
  in fp16 run in fp32 here (NVlabs ``force_fp32=True``). StyleGAN3 pickles are refused.

The format is recognised from the file's first bytes (zip or legacy torch magic → rosinality;
other pickle → NVlabs). After loading, PULSE's Gaussian fit of W is read from (or computed into)
``<weights stem>.gaussian_fit.pt`` beside the weights.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from .base import GeneratorCard
from .checkpoint import load_state_strict, load_torch_file, require_file, sha256_file
from .gaussian_fit import load_or_compute_fit, resolve_fit_samples
from .safe_pickle import ForbiddenGlobal, PersistentObject, child, flatten_module_state, restricted_load
from .stylegan2 import StyleGAN2Generator, config_f_channels
from .stylegan2_layers import DEFAULT_BLUR, make_blur_kernel

WHAT = "StyleGAN2 weights (rosinality .pt with g_ema, or NVlabs stylegan2-ada-pytorch .pkl)"
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled torch magic number


def default_weights_path() -> Path:
    """``weights_home()/stylegan2/stylegan2.pt``."""
    from . import weights_home
    return weights_home() / "stylegan2" / "stylegan2.pt"


def fit_cache_path(weights: Path) -> Path:
    """Where the Gaussian fit of ``weights`` is cached: ``<stem>.gaussian_fit.pt`` beside it."""
    return weights.with_name(f"{weights.stem}.gaussian_fit.pt")


def sniff_format(path: Path) -> str:
    """'torch' (zip or legacy torch.save) or 'pickle', from the first bytes; WeightsError otherwise."""
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_TORCH_MAGIC))
    if not head:
        raise WeightsError(f"{path} is empty (expected {WHAT})")
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_TORCH_MAGIC:
        return "torch"
    if head[:1] == b"\x80":
        return "pickle"
    raise WeightsError(f"{path} is neither a torch checkpoint nor a pickle (expected {WHAT})")


# --- rosinality ------------------------------------------------------------------------------

def infer_rosinality_config(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Size, style_dim, n_mlp and channels of a rosinality generator state dict, from key shapes."""
    def shape(key: str) -> tuple[int, ...]:
        value = state.get(key)
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path} is not a rosinality StyleGAN2 generator: no tensor {key!r}")
        return tuple(value.shape)

    style_dim = shape("style.1.weight")[1]
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    n_blocks = 0
    while f"to_rgbs.{n_blocks}.conv.weight" in state:
        n_blocks += 1
    size = 4 * 2**n_blocks
    channels = {4: shape("input.input")[1]}
    for k in range(n_blocks):
        channels[8 * 2**k] = shape(f"convs.{2 * k}.conv.weight")[1]
    config: dict[str, Any] = dict(size=size, style_dim=style_dim, n_mlp=n_mlp)
    for multiplier in (2, 1, 4):
        if config_f_channels(size, multiplier) == channels:
            return {**config, "channel_multiplier": multiplier}
    return {**config, "channels": channels}


def read_rosinality_checkpoint(path: Path) -> StyleGAN2Generator:
    """A rosinality ``.pt`` (``{"g_ema": …}`` or a bare generator state dict) as our module, on CPU."""
    path = require_file(path, "rosinality StyleGAN2 checkpoint (.pt)")
    blob = load_torch_file(path, "rosinality StyleGAN2 checkpoint", safe_globals=[argparse.Namespace])
    latent_avg = None
    if isinstance(blob, Mapping) and "g_ema" in blob:
        state, latent_avg = blob["g_ema"], blob.get("latent_avg")
    elif isinstance(blob, Mapping) and "style.1.weight" in blob and "input.input" in blob:
        state = blob
    else:
        found = ", ".join(map(repr, list(blob)[:6])) if isinstance(blob, Mapping) else type(blob).__name__
        raise WeightsError(f"{path} has no 'g_ema' entry (found {found}); expected a rosinality StyleGAN2 "
                           "checkpoint")
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: 'g_ema' is a {type(state).__name__}, not a state dict")
    config = infer_rosinality_config(state, path)
    model = StyleGAN2Generator(**config)
    load_state_strict(model, state, path, f"rosinality StyleGAN2 generator ({_describe(model)})")
    if isinstance(latent_avg, torch.Tensor) and latent_avg.numel() == model.style_dim:
        model.latent_avg.copy_(latent_avg.reshape(-1).float())
    model.source_format = "rosinality .pt (g_ema)"
    return model


# --- NVlabs ----------------------------------------------------------------------------------

_G_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
# Options that do not change the float32 computation (memory format, fp16 use, EMA tracking).
_IGNORED_OPTIONS = {"num_fp16_res", "fp16_channels_last", "channels_last", "w_avg_beta", "embed_features",
                    "num_ws"}
_MAPPING_DEFAULTS = {"num_layers": 8, "lr_multiplier": 0.01, "activation": "lrelu", "layer_features": None}
_SYNTHESIS_DEFAULTS = {"channel_base": 32768, "channel_max": 512, "architecture": "skip", "conv_clamp": None,
                       "resample_filter": [1, 3, 3, 1], "use_noise": True, "kernel_size": 3, "activation": "lrelu"}


def nvlabs_config(g_ema: PersistentObject, path: Path) -> dict[str, Any]:
    """Check a captured NVlabs ``Generator``'s constructor arguments; return our constructor's."""
    kwargs = dict(zip(_G_POSITIONAL, g_ema.init_args)) | g_ema.init_kwargs
    for key in ("z_dim", "w_dim", "img_resolution"):
        if not isinstance(kwargs.get(key), int):
            raise WeightsError(f"{path}: G_ema has no integer {key} in its init_kwargs (expected NVlabs StyleGAN2)")
    z_dim, w_dim, size = kwargs["z_dim"], kwargs["w_dim"], kwargs["img_resolution"]
    problems = []
    if kwargs.get("c_dim", 0):
        problems.append(f"conditional generator (c_dim={kwargs['c_dim']})")
    if kwargs.get("img_channels", 3) != 3:
        problems.append(f"img_channels={kwargs['img_channels']}")
    if z_dim != w_dim:
        problems.append(f"z_dim={z_dim} differs from w_dim={w_dim}")
    options = {}
    for group, defaults in (("mapping_kwargs", _MAPPING_DEFAULTS), ("synthesis_kwargs", _SYNTHESIS_DEFAULTS)):
        given = dict(kwargs.get(group) or {})
        for key in sorted(set(given) - set(defaults) - _IGNORED_OPTIONS):
            problems.append(f"unknown option {group}.{key}={given[key]!r}")
        options[group] = {key: given.get(key, default) for key, default in defaults.items()}
    mapping, synthesis = options["mapping_kwargs"], options["synthesis_kwargs"]
    for group, key, wanted in (("mapping", "activation", "lrelu"), ("synthesis", "activation", "lrelu"),
                               ("synthesis", "architecture", "skip"), ("synthesis", "use_noise", True),
                               ("synthesis", "kernel_size", 3)):
        value = options[f"{group}_kwargs"][key]
        if value != wanted:
            problems.append(f"{group}_kwargs.{key}={value!r} (supported: {wanted!r})")
    if list(synthesis["resample_filter"]) != list(DEFAULT_BLUR):
        problems.append(f"resample_filter={synthesis['resample_filter']!r}")
    if mapping["layer_features"] not in (None, w_dim):
        problems.append(f"mapping layer_features={mapping['layer_features']}")
    if problems:
        raise WeightsError(f"{path}: unsupported NVlabs StyleGAN2 generator: {'; '.join(problems)}")
    base, top = synthesis["channel_base"], synthesis["channel_max"]
    channels = {2**i: min(base // 2**i, top) for i in range(2, size.bit_length())}
    return dict(size=size, style_dim=w_dim, n_mlp=int(mapping["num_layers"]), channels=channels,
                lr_mlp=float(mapping["lr_multiplier"]), conv_clamp=synthesis["conv_clamp"])


def nvlabs_name_table(size: int, n_mlp: int) -> list[tuple[str, str, str]]:
    """(NVlabs G_ema key, our key, reshape) for every parameter and buffer that carries weights.

    Noise maps are numbered in synthesis order: b4.conv1 → 0, then b<2^k>.conv0 → 2k − 5 and
    .conv1 → 2k − 4; convs are b<2^k>.conv0 → convs.(2k − 6), .conv1 → convs.(2k − 5); ToRGB
    b4.torgb → to_rgb1, b<2^k>.torgb → to_rgbs.(k − 3). ``reshape`` names the only change of
    layout: "same"; "lead1" (ours has an extra leading unit dim: conv weights (1, O, I, k, k),
    the constant (1, C, 4, 4)); "noise" ((r, r) → (1, 1, r, r)); "scalar" (() → (1,)); "rgb_bias"
    ((3,) → (1, 3, 1, 1)).
    """
    table = [(f"mapping.fc{i}.{p}", f"style.{i + 1}.{p}", "same") for i in range(n_mlp) for p in ("weight", "bias")]
    table.append(("synthesis.b4.const", "input.input", "lead1"))

    def layer(nv: str, ours: str, noise: int) -> list[tuple[str, str, str]]:
        return [(f"{nv}.weight", f"{ours}.conv.weight", "lead1"),
                (f"{nv}.affine.weight", f"{ours}.conv.modulation.weight", "same"),
                (f"{nv}.affine.bias", f"{ours}.conv.modulation.bias", "same"),
                (f"{nv}.bias", f"{ours}.activate.bias", "same"),
                (f"{nv}.noise_strength", f"{ours}.noise.weight", "scalar"),
                (f"{nv}.noise_const", f"noises.noise_{noise}", "noise")]

    def torgb(nv: str, ours: str) -> list[tuple[str, str, str]]:
        return [(f"{nv}.weight", f"{ours}.conv.weight", "lead1"),
                (f"{nv}.affine.weight", f"{ours}.conv.modulation.weight", "same"),
                (f"{nv}.affine.bias", f"{ours}.conv.modulation.bias", "same"),
                (f"{nv}.bias", f"{ours}.bias", "rgb_bias")]

    table += layer("synthesis.b4.conv1", "conv1", 0) + torgb("synthesis.b4.torgb", "to_rgb1")
    for k in range(3, size.bit_length()):
        block = f"synthesis.b{2**k}"
        table += layer(f"{block}.conv0", f"convs.{2 * k - 6}", 2 * k - 5)
        table += layer(f"{block}.conv1", f"convs.{2 * k - 5}", 2 * k - 4)
        table += torgb(f"{block}.torgb", f"to_rgbs.{k - 3}")
    return table


def _nvlabs_shape(ours: tuple[int, ...], reshape: str) -> tuple[int, ...]:
    return {"same": ours, "lead1": ours[1:], "noise": ours[2:], "scalar": (), "rgb_bias": ours[1:2]}[reshape]


def convert_nvlabs_state(flat: Mapping[str, torch.Tensor], model: StyleGAN2Generator,
                         path: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Rename (and reshape only) NVlabs G_ema tensors onto ``model``'s keys; returns (state, w_avg).

    Resample filters must equal the normalised [1, 3, 3, 1] filter; any other leftover key, a
    missing key or a size mismatch is a WeightsError.
    """
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    used = set()
    for nv_key, our_key, reshape in nvlabs_name_table(model.size, model.n_mlp):
        if nv_key not in flat:
            raise WeightsError(f"{path} is not a StyleGAN2 G_ema of the expected layout: no {nv_key!r}")
        value, target = flat[nv_key], expected[our_key]
        wanted = _nvlabs_shape(tuple(target.shape), reshape)
        if tuple(value.shape) != wanted:
            raise WeightsError(f"{path}: {nv_key} has shape {tuple(value.shape)}, expected {wanted} "
                               f"(init_kwargs and tensors disagree)")
        state[our_key] = value.float().reshape(target.shape).clone()
        used.add(nv_key)
    reference = make_blur_kernel(DEFAULT_BLUR)
    for key, value in flat.items():
        if key in used or key == "mapping.w_avg":
            continue
        if key.endswith("resample_filter"):
            if value.shape != reference.shape or not torch.allclose(value.float(), reference, atol=1e-7):
                raise WeightsError(f"{path}: {key} is not the [1, 3, 3, 1] filter this implementation uses")
            continue
        raise WeightsError(f"{path}: unexpected tensor {key!r} in G_ema (not a StyleGAN2 skip generator?)")
    for our_key, buffer in expected.items():  # our blur kernels are architecture constants
        if our_key.endswith(".kernel"):
            state[our_key] = buffer
    return state, flat.get("mapping.w_avg")


def _is_stylegan3(g_ema: PersistentObject) -> bool:
    synthesis = child(g_ema, "synthesis")
    if not isinstance(synthesis, PersistentObject):
        return False
    names = set((synthesis.state.get("_modules") or {}).keys())
    return (isinstance(child(synthesis, "input"), PersistentObject)
            or any(re.fullmatch(r"L\d+_\d+_\d+", n) for n in names))


def read_nvlabs_pickle(path: Path) -> StyleGAN2Generator:
    """An NVlabs stylegan2-ada-pytorch network pickle's ``G_ema`` as our module, on CPU."""
    path = require_file(path, "NVlabs stylegan2-ada-pytorch network pickle (.pkl)")
    try:
        with open(path, "rb") as handle:
            snapshot = restricted_load(handle)
    except ForbiddenGlobal as exc:
        raise WeightsError(f"{path} contains unexpected global '{exc.name}'; refusing to load "
                           "(nothing from it was executed)") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError, IndexError, KeyError,
            AttributeError, MemoryError) as exc:
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise WeightsError(f"{path} is truncated or not a readable NVlabs network pickle "
                           f"({type(exc).__name__}{': ' + detail if detail else ''})") from exc
    g_ema = snapshot.get("G_ema") if isinstance(snapshot, dict) else None
    if not isinstance(g_ema, PersistentObject) or g_ema.class_name != "Generator":
        found = ", ".join(map(repr, list(snapshot)[:6])) if isinstance(snapshot, dict) else type(snapshot).__name__
        raise WeightsError(f"{path} has no NVlabs 'G_ema' generator (found {found}); expected a stylegan2-ada-pytorch "
                           "network pickle")
    if _is_stylegan3(g_ema):
        raise WeightsError(f"{path} holds a StyleGAN3 generator: StyleGAN3 not supported (use a StyleGAN2 pickle)")
    config = nvlabs_config(g_ema, path)
    try:
        flat = flatten_module_state(g_ema)
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{path}: G_ema is malformed ({exc})") from exc
    model = StyleGAN2Generator(**config)
    state, w_avg = convert_nvlabs_state(flat, model, path)
    load_state_strict(model, state, path, f"StyleGAN2 generator ({_describe(model)})")
    if isinstance(w_avg, torch.Tensor) and w_avg.numel() == model.style_dim:
        model.latent_avg.copy_(w_avg.reshape(-1).float())
    model.source_format = "NVlabs stylegan2-ada-pytorch .pkl (G_ema, restricted unpickler)"
    return model


# --- entry point -----------------------------------------------------------------------------

def _describe(model: StyleGAN2Generator) -> str:
    return (f"{model.size} px, style_dim {model.style_dim}, n_mlp {model.n_mlp}, "
            f"channels {'/'.join(str(model.channels[r]) for r in sorted(model.channels))}")


def read_stylegan2_weights(path: Path) -> StyleGAN2Generator:
    """Read either format (recognised from the content) into a CPU module, without the Gaussian fit."""
    path = require_file(path, WHAT)
    if sniff_format(path) == "torch":
        return read_rosinality_checkpoint(path)
    return read_nvlabs_pickle(path)


def load_stylegan2(weights: Path | None = None, device: torch.device | str = "cpu",
                   fit_samples: int | None = None) -> StyleGAN2Generator:
    """Registry loader for ``stylegan2``: weights → frozen generator on ``device`` with its Gaussian fit.

    Args:
        weights: a rosinality ``.pt`` or NVlabs ``.pkl``; None = ``weights_home()/stylegan2/stylegan2.pt``.
        device: where the module runs (the fit is computed there too).
        fit_samples: z draws for the Gaussian fit; None = ``$PULSE_AUDIT_FIT_SAMPLES`` or 1,000,000.
            The fit is cached as ``<weights stem>.gaussian_fit.pt`` beside the weights and recomputed
            when the cached sample count or the weights file's SHA-256 differs.
    """
    default = default_weights_path()
    path = require_file(weights or default, WHAT,
                        "put a rosinality .pt or NVlabs .pkl there, or pass --generator stylegan2:PATH")
    samples = resolve_fit_samples(fit_samples)
    model = read_stylegan2_weights(path)
    model = model.freeze().to(device)
    cache = fit_cache_path(path)
    digest = sha256_file(path)
    fit = load_or_compute_fit(cache, model.mapping, model.style_dim, samples, device=device, source=digest)
    model.set_fit(fit)
    model.card = GeneratorCard(
        name="stylegan2", family="StyleGAN2", weights=(path,), weights_sha256=(digest,),
        notes=(f"format: {model.source_format}", f"architecture: {_describe(model)}",
               f"W+ vectors: {model.n_latent}; noise maps: {model.num_layers}",
               f"Gaussian fit: {fit.samples} z samples (seed 0), cached at {cache}",
               "licence of this file unknown; NVIDIA's published StyleGAN2 weights (and conversions of "
               "them) are non-commercial (NVIDIA Source Code License-NC / CC BY-NC)"))
    return model
