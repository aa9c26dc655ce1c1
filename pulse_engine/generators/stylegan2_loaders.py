"""Load StyleGAN2 weights from the two public formats into :class:`StyleGAN2Generator`, safely.

- **rosinality/stylegan2-pytorch** ``.pt``: read by :func:`.checkpoint.load_torch_file` (no
  ``torch.load``: scanned pickles, tensors and containers only, ``argparse.Namespace`` for the
  ``args`` of training checkpoints); the generator is the ``g_ema`` state dict (or a bare generator
  state dict), ``latent_avg`` is kept when present (it must hold style_dim numbers). The
  architecture (size, style_dim, n_mlp, channels, blur size) is inferred from key shapes, bounded
  by :data:`LIMITS`, compared with the file on the ``meta`` device and only then built and loaded
  strictly; blur kernels as stored.
- **NVlabs stylegan2-ada-pytorch** ``.pkl``: read with :mod:`.safe_pickle` (no code from the file is
  run, its embedded module source is never executed), ``G_ema``'s tensors flattened, its
  ``init_kwargs`` checked and bounded, and the parameters renamed onto rosinality's layout by
  :func:`nvlabs_name_table`. Every NVlabs tensor maps onto exactly one of ours by a reshape only:
  both implementations store weights unscaled and apply the same run-time gains (mapping
  lr_multiplier 0.01 with gain 0.01/√fan_in, affine/modulation gain 1/√w_dim with bias init 1,
  ToRGB gain 1/√in_channels), ``noise_strength`` is the NoiseInjection weight, ``noise_const`` the
  stored noise. The stored resample filters the original uses (each upsampling conv's and each
  block's image upsampling filter) become our blur kernels as stored, times the gain 4 NVlabs
  applies at run time; the ones it never reads (b4's, the non-upsampling convs') are ignored as
  it ignores them; ``mapping.w_avg`` must have shape (w_dim,). Demodulation follows NVlabs
  (epsilon on the unscaled sum), mapping networks with ``layer_features`` ≠ ``w_dim`` are built
  with that hidden width, ``conv_clamp`` is honoured, and blocks NVlabs runs in fp16 run in fp32
  here (NVlabs ``force_fp32=True``). Refused with one line before anything is built: StyleGAN3
  pickles, ``z_dim`` ≠ ``w_dim`` (our mapping takes z of size w_dim), conditional generators,
  other activations or architectures, non-integer layer counts.

The format is recognised from the file's first bytes (zip or legacy torch magic → rosinality;
other pickle → NVlabs). Weights holding NaN or infinities are refused. After loading, PULSE's
Gaussian fit of W is read from (or computed into) ``<weights stem>.gaussian_fit.pt`` beside the
weights, checked as :func:`.gaussian_fit.load_or_compute_fit` says.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError, short_repr
from .base import GeneratorCard
from .checkpoint import build_and_load, load_torch_file, require_file, sha256_file, tensor_state
from .gaussian_fit import load_or_compute_fit, resolve_fit_samples
from .pickle_scan import DEFAULT_BUDGET
from .safe_pickle import ForbiddenGlobal, PersistentObject, child, flatten_module_state, restricted_load
from .stylegan2 import StyleGAN2Generator, config_f_channels
from .torch_file import LEGACY_MAGIC_PICKLE, is_torch_file

WHAT = "StyleGAN2 weights (rosinality .pt with g_ema, or NVlabs stylegan2-ada-pytorch .pkl)"

#: Upper bounds on hyper-parameters read from a file, checked before anything is built.
LIMITS = {"size": 4096, "style_dim": 4096, "n_mlp": 32, "channels": 8192, "blur_taps": 16}


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
        head = handle.read(len(LEGACY_MAGIC_PICKLE))
    if not head:
        raise WeightsError(f"{path} is empty (expected {WHAT})")
    if is_torch_file(head):
        return "torch"
    if head[:1] == b"\x80":
        return "pickle"
    raise WeightsError(f"{path} is neither a torch checkpoint nor a pickle (expected {WHAT})")


# --- rosinality ------------------------------------------------------------------------------

def _check_limits(path: Path, **values: int) -> None:
    for name, value in values.items():
        limit = LIMITS["channels" if name.startswith("channels") else name]
        if not 1 <= value <= limit:
            raise WeightsError(f"{path}: {name} {value} is outside 1…{limit}; refusing to build such a generator")


def infer_rosinality_config(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Size, style_dim, n_mlp, channels and blur size of a rosinality generator state dict, from
    key shapes, each bounded by :data:`LIMITS` (the shapes are then compared on the meta device)."""
    def shape(key: str, dims: int) -> tuple[int, ...]:
        value = state.get(key)
        if not isinstance(value, torch.Tensor) or value.dim() != dims:
            raise WeightsError(f"{path} is not a rosinality StyleGAN2 generator: no {dims}-d tensor {key!r}")
        return tuple(value.shape)

    style_dim = shape("style.1.weight", 2)[1]
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state and n_mlp <= LIMITS["n_mlp"]:
        n_mlp += 1
    n_blocks = 0
    while f"to_rgbs.{n_blocks}.conv.weight" in state and 4 * 2**n_blocks <= LIMITS["size"]:
        n_blocks += 1
    size = 4 * 2**n_blocks
    _check_limits(path, style_dim=style_dim, n_mlp=n_mlp, size=size)
    channels = {4: shape("input.input", 4)[1]}
    for k in range(n_blocks):
        channels[8 * 2**k] = shape(f"convs.{2 * k}.conv.weight", 5)[1]
    _check_limits(path, **{f"channels at {res} px": c for res, c in channels.items()})
    config: dict[str, Any] = dict(size=size, style_dim=style_dim, n_mlp=n_mlp)
    if n_blocks:  # the blur kernels' sides are architecture; their values are loaded as stored
        taps, rgb_taps = shape("convs.0.conv.blur.kernel", 2)[0], shape("to_rgbs.0.upsample.kernel", 2)[0]
        _check_limits(path, blur_taps=taps)
        _check_limits(path, blur_taps=rgb_taps)
        config.update(blur_kernel=(1,) * taps, rgb_blur_kernel=(1,) * rgb_taps)
    for multiplier in (2, 1, 4):
        if config_f_channels(size, multiplier) == channels:
            return {**config, "channel_multiplier": multiplier}
    return {**config, "channels": channels}


def read_rosinality_checkpoint(path: Path) -> StyleGAN2Generator:
    """A rosinality ``.pt`` (``{"g_ema": …}`` or a bare generator state dict) as our module, on CPU."""
    path = require_file(path, "rosinality StyleGAN2 checkpoint (.pt)")
    blob = load_torch_file(path, "rosinality StyleGAN2 checkpoint")
    latent_avg = None
    if isinstance(blob, Mapping) and "g_ema" in blob:
        state, latent_avg = blob["g_ema"], blob.get("latent_avg")
    elif isinstance(blob, Mapping) and "style.1.weight" in blob and "input.input" in blob:
        state = blob
    else:
        found = ", ".join(map(short_repr, list(blob)[:6])) if isinstance(blob, Mapping) else type(blob).__name__
        raise WeightsError(f"{path} has no 'g_ema' entry (found {found[:300]}); expected a rosinality StyleGAN2 "
                           "checkpoint")
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: 'g_ema' is a {type(state).__name__}, not a state dict")
    config = infer_rosinality_config(state, path)
    if latent_avg is not None and (not isinstance(latent_avg, torch.Tensor)
                                   or latent_avg.numel() != config["style_dim"]):
        found = tuple(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
        raise WeightsError(f"{path}: latent_avg is {short_repr(found, 60)}, expected {config['style_dim']} numbers "
                           "(style_dim); refusing a checkpoint whose parts disagree")
    described = _describe_config(config)
    model = build_and_load(lambda: StyleGAN2Generator(**config), state, path,
                           f"rosinality StyleGAN2 generator ({described})")
    if latent_avg is not None:
        model.latent_avg.copy_(tensor_state({"latent_avg": latent_avg}, path, "latent_avg")["latent_avg"]
                               .reshape(-1).float())
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


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def nvlabs_config(g_ema: PersistentObject, path: Path) -> dict[str, Any]:
    """Check and bound a captured NVlabs ``Generator``'s constructor arguments; return our constructor's."""
    kwargs = dict(zip(_G_POSITIONAL, g_ema.init_args)) | g_ema.init_kwargs
    for key in ("z_dim", "w_dim", "img_resolution"):
        if not _is_int(kwargs.get(key)):
            raise WeightsError(f"{path}: G_ema has no integer {key} in its init_kwargs (expected NVlabs StyleGAN2)")
    z_dim, w_dim, size = kwargs["z_dim"], kwargs["w_dim"], kwargs["img_resolution"]
    _check_limits(path, style_dim=w_dim, size=size)
    problems = []
    if kwargs.get("c_dim", 0):
        problems.append(f"conditional generator (c_dim={short_repr(kwargs['c_dim'])})")
    if kwargs.get("img_channels", 3) != 3:
        problems.append(f"img_channels={short_repr(kwargs['img_channels'])}")
    if z_dim != w_dim:
        problems.append(f"z_dim={z_dim} differs from w_dim={w_dim} (this engine's mapping takes z of size w_dim)")
    if size < 4 or size & (size - 1):
        problems.append(f"img_resolution={size} is not a power of two")
    options = {}
    for group, defaults in (("mapping_kwargs", _MAPPING_DEFAULTS), ("synthesis_kwargs", _SYNTHESIS_DEFAULTS)):
        given = kwargs.get(group) or {}
        if not isinstance(given, Mapping):
            raise WeightsError(f"{path}: G_ema {group} is a {type(given).__name__}, not a dict")
        for key in sorted(set(given) - set(defaults) - _IGNORED_OPTIONS, key=str)[:3]:
            name = key if isinstance(key, str) and len(key) <= 40 and key.isidentifier() else short_repr(key, 40)
            problems.append(f"unknown option {group}.{name}={short_repr(given[key], 40)}")
        options[group] = {key: given.get(key, default) for key, default in defaults.items()}
    mapping, synthesis = options["mapping_kwargs"], options["synthesis_kwargs"]
    for group, key, wanted in (("mapping", "activation", "lrelu"), ("synthesis", "activation", "lrelu"),
                               ("synthesis", "architecture", "skip"), ("synthesis", "use_noise", True),
                               ("synthesis", "kernel_size", 3)):
        value = options[f"{group}_kwargs"][key]
        if value != wanted:
            problems.append(f"{group}_kwargs.{key}={short_repr(value, 40)} (supported: {wanted!r})")
    taps = synthesis["resample_filter"]
    if not (isinstance(taps, (list, tuple)) and 1 <= len(taps) <= LIMITS["blur_taps"] and all(map(_is_number, taps))):
        problems.append(f"resample_filter={short_repr(taps, 40)} (expected 1 to {LIMITS['blur_taps']} numbers)")
    layer_features = mapping["layer_features"]
    if layer_features is not None and not (_is_int(layer_features) and 1 <= layer_features <= LIMITS["style_dim"]):
        problems.append(f"mapping layer_features={short_repr(layer_features, 40)}")
    if not _is_int(mapping["num_layers"]):
        problems.append(f"mapping_kwargs.num_layers={short_repr(mapping['num_layers'], 40)} (not an integer)")
    if not _is_number(mapping["lr_multiplier"]):
        problems.append(f"mapping_kwargs.lr_multiplier={short_repr(mapping['lr_multiplier'], 40)}")
    for key in ("channel_base", "channel_max"):
        if not _is_int(synthesis[key]) or synthesis[key] < 1:
            problems.append(f"synthesis_kwargs.{key}={short_repr(synthesis[key], 40)}")
    clamp = synthesis["conv_clamp"]
    if clamp is not None and not (_is_number(clamp) and clamp > 0):
        problems.append(f"conv_clamp={short_repr(clamp, 40)}")
    if problems:
        raise WeightsError(f"{path}: unsupported NVlabs StyleGAN2 generator: {'; '.join(problems)}")
    n_mlp = mapping["num_layers"]
    _check_limits(path, n_mlp=n_mlp)
    base, top = synthesis["channel_base"], synthesis["channel_max"]
    channels = {2**i: min(base // 2**i, top) for i in range(2, size.bit_length())}
    _check_limits(path, **{f"channels at {res} px": c for res, c in channels.items()})
    return dict(size=size, style_dim=w_dim, n_mlp=n_mlp, channels=channels, lr_mlp=float(mapping["lr_multiplier"]),
                conv_clamp=None if clamp is None else float(clamp), mapping_width=layer_features,
                blur_kernel=tuple(float(t) for t in taps), nvlabs_demod=True)


def nvlabs_name_table(size: int, n_mlp: int) -> list[tuple[str, str, str]]:
    """(NVlabs G_ema key, our key, reshape) for every parameter and buffer that carries weights.

    Noise maps are numbered in synthesis order: b4.conv1 → 0, then b<2^k>.conv0 → 2k − 5 and
    .conv1 → 2k − 4; convs are b<2^k>.conv0 → convs.(2k − 6), .conv1 → convs.(2k − 5); ToRGB
    b4.torgb → to_rgb1, b<2^k>.torgb → to_rgbs.(k − 3); the resample filters the original reads,
    b<2^k>.conv0.resample_filter and b<2^k>.resample_filter (the skip image's upsampling), become
    convs.(2k − 6).conv.blur.kernel and to_rgbs.(k − 3).upsample.kernel. ``reshape`` names the
    only change of layout: "same"; "lead1" (ours has an extra leading unit dim: conv weights
    (1, O, I, k, k), the constant (1, C, 4, 4)); "noise" ((r, r) → (1, 1, r, r)); "scalar"
    (() → (1,)); "rgb_bias" ((3,) → (1, 3, 1, 1)); "filter" (NVlabs stores the normalised filter,
    2-D, or 1-D and separable from 8 taps up, and applies the upsampling gain 4 at run time; ours
    stores the 2-D kernel times 4).
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
        table.append((f"{block}.conv0.resample_filter", f"convs.{2 * k - 6}.conv.blur.kernel", "filter"))
        table += layer(f"{block}.conv1", f"convs.{2 * k - 5}", 2 * k - 4)
        table += torgb(f"{block}.torgb", f"to_rgbs.{k - 3}")
        table.append((f"{block}.resample_filter", f"to_rgbs.{k - 3}.upsample.kernel", "filter"))
    return table


#: NVlabs buffers the original never reads (b4 has no upsampling; non-upsampling convs skip the filter).
_UNUSED_NVLABS = re.compile(r"synthesis\.b4\.resample_filter|synthesis\.b\d+\.conv1\.resample_filter|mapping\.w_avg")


def _nvlabs_shape(ours: tuple[int, ...], reshape: str) -> tuple[int, ...]:
    return {"same": ours, "lead1": ours[1:], "noise": ours[2:], "scalar": (), "rgb_bias": ours[1:2],
            "filter": ours}[reshape]


def _nvlabs_value(value: torch.Tensor, target: tuple[int, ...], reshape: str) -> torch.Tensor | None:
    """The NVlabs tensor in our layout, or None if its shape does not fit ``target``."""
    if reshape == "filter":
        if value.dim() == 1 and (len(value),) * 2 == target:  # separable: the outer product, as applied
            value = value[:, None] * value[None, :]
        return value.float() * 4 if tuple(value.shape) == target else None
    if tuple(value.shape) != _nvlabs_shape(target, reshape):
        return None
    return value.float().reshape(target)


def convert_nvlabs_state(flat: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], size: int, n_mlp: int,
                         path: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Rename (and reshape only) NVlabs G_ema tensors onto our keys with shapes ``expected``
    (a meta-device state dict); returns (state, w_avg).

    A missing key, a size mismatch or a tensor the original does not have is a WeightsError.
    """
    state: dict[str, torch.Tensor] = {}
    used = set()
    for nv_key, our_key, reshape in nvlabs_name_table(size, n_mlp):
        if nv_key not in flat:
            raise WeightsError(f"{path} is not a StyleGAN2 G_ema of the expected layout: no {nv_key!r}")
        target = tuple(expected[our_key])
        value = _nvlabs_value(flat[nv_key], target, reshape)
        if value is None:
            raise WeightsError(f"{path}: {nv_key} has shape {tuple(flat[nv_key].shape)}, expected "
                               f"{_nvlabs_shape(target, reshape)} (init_kwargs and tensors disagree)")
        state[our_key] = value
        used.add(nv_key)
    for key in flat:
        if key not in used and not _UNUSED_NVLABS.fullmatch(key):
            raise WeightsError(f"{path}: unexpected tensor {short_repr(key)} in G_ema "
                               "(not a StyleGAN2 skip generator?)")
    return state, flat.get("mapping.w_avg")


def _is_stylegan3(g_ema: PersistentObject) -> bool:
    synthesis = child(g_ema, "synthesis")
    if not isinstance(synthesis, PersistentObject):
        return False
    modules = synthesis.state.get("_modules") or {}
    names = {n for n in modules if isinstance(n, str)} if isinstance(modules, Mapping) else set()
    return (isinstance(child(synthesis, "input"), PersistentObject)
            or any(re.fullmatch(r"L\d+_\d+_\d+", n) for n in names))


def read_nvlabs_pickle(path: Path) -> StyleGAN2Generator:
    """An NVlabs stylegan2-ada-pytorch network pickle's ``G_ema`` as our module, on CPU."""
    path = require_file(path, "NVlabs stylegan2-ada-pytorch network pickle (.pkl)")
    if path.stat().st_size > DEFAULT_BUDGET.max_file_bytes:
        raise WeightsError(f"{path} is larger than {DEFAULT_BUDGET.max_file_bytes:,} bytes; refusing to read it")
    try:
        with open(path, "rb") as handle:
            snapshot = restricted_load(handle)
    except ForbiddenGlobal as exc:
        raise WeightsError(f"{path} contains unexpected global {short_repr(exc.name)}; refusing to load "
                           "(nothing from it was executed)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError, IndexError, KeyError,
            AttributeError, MemoryError, OverflowError) as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise WeightsError(f"{path} is truncated or not a readable NVlabs network pickle "
                           f"({type(exc).__name__}{': ' + detail if detail else ''})") from None
    g_ema = snapshot.get("G_ema") if isinstance(snapshot, dict) else None
    if not isinstance(g_ema, PersistentObject) or g_ema.class_name != "Generator":
        found = (", ".join(map(short_repr, list(snapshot)[:6])) if isinstance(snapshot, dict)
                 else type(snapshot).__name__)
        raise WeightsError(f"{path} has no NVlabs 'G_ema' generator (found {found[:300]}); expected a "
                           "stylegan2-ada-pytorch network pickle")
    if _is_stylegan3(g_ema):
        raise WeightsError(f"{path} holds a StyleGAN3 generator: StyleGAN3 not supported (use a StyleGAN2 pickle)")
    config = nvlabs_config(g_ema, path)
    try:
        flat = tensor_state(flatten_module_state(g_ema), path, "NVlabs StyleGAN2 G_ema")
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{path}: G_ema is malformed ({str(exc)[:160]})") from None
    with torch.device("meta"):
        expected = {k: v.shape for k, v in StyleGAN2Generator(**config).state_dict().items()}
    state, w_avg = convert_nvlabs_state(flat, expected, config["size"], config["n_mlp"], path)
    if w_avg is not None and tuple(w_avg.shape) != (config["style_dim"],):
        raise WeightsError(f"{path}: mapping.w_avg has shape {short_repr(tuple(w_avg.shape), 60)}, expected "
                           f"({config['style_dim']},) (init_kwargs and tensors disagree)")
    model = build_and_load(lambda: StyleGAN2Generator(**config), state, path,
                           f"StyleGAN2 generator ({_describe_config(config)})")
    if w_avg is not None:
        model.latent_avg.copy_(w_avg.float())
    model.source_format = "NVlabs stylegan2-ada-pytorch .pkl (G_ema, restricted unpickler)"
    return model


# --- entry point -----------------------------------------------------------------------------

def _describe(model: StyleGAN2Generator) -> str:
    return (f"{model.size} px, style_dim {model.style_dim}, n_mlp {model.n_mlp}, "
            f"channels {'/'.join(str(model.channels[r]) for r in sorted(model.channels))}")


def _describe_config(config: Mapping[str, Any]) -> str:
    channels = config.get("channels") or config_f_channels(config["size"], config.get("channel_multiplier", 2))
    return (f"{config['size']} px, style_dim {config['style_dim']}, n_mlp {config['n_mlp']}, "
            f"channels {'/'.join(str(channels[r]) for r in sorted(channels))}")


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
               ("licence of this file unknown; NVIDIA's published StyleGAN2 weights (and conversions of "
                "them) are non-commercial (NVIDIA Source Code License-NC / CC BY-NC)")))
    return model
