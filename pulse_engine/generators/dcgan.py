"""A DCGAN generator (Radford et al. 2016) in the layout of the PyTorch DCGAN tutorial, which is
the layout of the weights shipped in ``gan-face-generate`` (64×64 faces, z of dimension 100,
trained on the synthetic DigiFace-1M set).

Layout for a resolution R = 2^n (n ≥ 3), as ``main.<index>`` keys of one ``nn.Sequential``:
a 4×4 transposed conv from z (1×1) to ``ngf·2^(n−3)`` channels, then n−3 stride-2 transposed
convs halving the channels down to ``ngf``, each followed by BatchNorm and ReLU, then a stride-2
transposed conv to RGB and tanh. No conv has a bias. For R = 64 the keys are ``main.0``,
``main.1`` (BN), ``main.3``, ``main.4``, …, ``main.12`` exactly as in the shipped file.

For the search, each BatchNorm (eval mode) is folded into the preceding conv once after loading;
this is an exact re-parametrisation that saves four passes over the activations per step. The
folded weights and the activations are kept channels-last, which oneDNN's CPU kernels run about a
quarter faster than NCHW (see ``benchmarks/RESULTS.md``). On a CPU the layers run as oneDNN
operators with the ReLU fused (:class:`_InputLayer`, :class:`_HiddenLayer`; the hidden layers' weights
packed once, for the forward and for the backward pass), and the output layer (to 3 channels), which
oneDNN's transposed convolution runs at a fifth of its usual speed, as one GEMM and an overlap-add
(:class:`_OutputLayer`). Each has its backward written out as the exact adjoint; the tests hold the
values and the gradients to the plain layers' (``self.main``, the layout as loaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError, short_repr
from .base import GeneratorCard, SearchableGenerator, power_of_two_log2
from .card_file import CARD_MAX_BYTES, card_provenance, read_card
from .checkpoint import build_and_load, load_state_strict, load_torch_file, require_file, sha256_file

DIGIFACE_CARD = dict(
    family="DCGAN",
    training_data="DigiFace-1M (synthetic rendered faces, Microsoft; non-commercial research licence)",
    licence="package MIT (gan-face-generate 1.1.1); training data non-commercial research only",
)


class DCGANGenerator(SearchableGenerator):
    """DCGAN generator whose search variable is z itself on the sphere of radius √nz.

    Args:
        nz: latent dimension (100 for the shipped weights).
        ngf: feature width at the last hidden layer (64 for the shipped weights).
        resolution: output side, a power of two ≥ 8 (64 for the shipped weights).
        channels: output channels (3).
        card: provenance for reports.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, resolution: int = 64, channels: int = 3,
                 card: GeneratorCard | None = None) -> None:
        super().__init__()
        n = power_of_two_log2(resolution, 8, "DCGAN resolution")
        self.nz, self.ngf, self.channels = nz, ngf, channels
        self.resolution = resolution
        self.latent_shape = (1, nz)
        self.card = card or GeneratorCard(name=f"dcgan-{resolution}px", family="DCGAN")
        widths = [ngf * 2 ** (n - 3 - i) for i in range(n - 2)]
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self._fused_layers = 0
        self._packed: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def extra_repr(self) -> str:
        return f"nz={self.nz}, ngf={self.ngf}, resolution={self.resolution}, channels={self.channels}"

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        return {**state, "_packed": None}  # oneDNN's packed weights cannot be copied: rebuilt on first use

    @torch.no_grad()
    def fuse_batchnorm(self) -> DCGANGenerator:
        """Fold each eval-mode BatchNorm into its conv, as non-persistent buffers; returns self.

        The first layer (1×1 → 4×4, stride 1, no padding) is exactly a matrix product, so it is
        stored as a (nz, 4·4·C) matrix in (row, column, channel) order and run as one GEMM. The
        last layer's weights are doubled so that sigmoid gives (tanh + 1) / 2 directly.
        """
        convs = [m for m in self.main if isinstance(m, nn.ConvTranspose2d)]
        norms = [m for m in self.main if isinstance(m, nn.BatchNorm2d)] + [None]
        for i, (conv, norm) in enumerate(zip(convs, norms)):
            weight = conv.weight.detach().clone()
            bias = None
            if norm is not None:
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                weight = weight * scale.view(1, -1, 1, 1)
                bias = norm.bias - norm.running_mean * scale
            if i == len(convs) - 1:
                weight = 2 * weight  # (tanh(a) + 1) / 2 == sigmoid(2a): one pass instead of three
            if i == 0:
                weight = weight.permute(0, 2, 3, 1).reshape(self.nz, -1).contiguous()
                bias = bias.repeat(16)
            else:
                weight = weight.contiguous(memory_format=torch.channels_last)
            self.register_buffer(f"fused_w{i}", weight, persistent=False)
            self.register_buffer(f"fused_b{i}", bias, persistent=False)
        self.register_buffer("fused_columns", _OutputLayer.column_weight(weight), persistent=False)
        self._fused_layers = len(convs)
        self._packed = None
        return self

    def _packed_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The hidden transposed convs' weights in oneDNN's own layouts for the forward and the backward pass,
        packed once (see :class:`_HiddenLayer`)."""
        if self._packed is None:
            self._packed = [_HiddenLayer.pack(getattr(self, f"fused_w{i}")) for i in range(1, self._fused_layers - 1)]
        return self._packed

    def latent_to_w(self, latent: torch.Tensor) -> torch.Tensor:
        self.check_latent(latent)
        return latent

    def synthesize_w(self, w: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        self.check_latent(w)
        batch = w.shape[0]
        if not self._fused_layers or self.training:
            return (self.main(w.reshape(batch, self.nz, 1, 1)) + 1) / 2
        onednn = _onednn_runs(w)
        if onednn:
            x = _InputLayer.apply(w.reshape(batch, self.nz), self.fused_w0, self.fused_b0)
        else:
            x = torch.relu_(torch.addmm(self.fused_b0, w.reshape(batch, self.nz), self.fused_w0))
        x = x.view(batch, 4, 4, -1).permute(0, 3, 1, 2)  # channels-last (B, C, 4, 4)
        last = self._fused_layers - 1
        packed = self._packed_weights() if onednn else None
        for i in range(1, last):
            bias = getattr(self, f"fused_b{i}")
            if packed is None:
                x = torch.relu_(F.conv_transpose2d(x, getattr(self, f"fused_w{i}"), bias, 2, 1))
            else:
                x = _HiddenLayer.apply(x, *packed[i - 1], bias)
        return _OutputLayer.apply(x, self.fused_columns, getattr(self, f"fused_w{last}"))


#: The oneDNN operators of :class:`_InputLayer` and :class:`_HiddenLayer` (internal to torch, used by its
#: compiler on CPU): present in this torch build?
_ONEDNN_OPS = torch.backends.mkldnn.is_available() and all(
    hasattr(torch.ops.mkldnn, name)
    for name in ("_linear_pointwise", "_convolution_transpose_pointwise", "_reorder_convolution_transpose_weight",
                 "_convolution_pointwise", "_reorder_convolution_weight"))


def _onednn_runs(x: torch.Tensor) -> bool:
    """Whether :class:`_InputLayer` and :class:`_HiddenLayer` (oneDNN operators) apply to ``x``: float32
    on a CPU, torch built with oneDNN and those operators. Elsewhere the generator runs torch's plain operators."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and _ONEDNN_OPS


def _relu_mask_(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ReLU's backward in place: ``grad`` zeroed where the ReLU's output ``y`` is 0 (``threshold_backward``
    writing into ``grad``, the same values as into a new tensor, with a third less memory traffic).

    Only for a gradient that nothing else holds. Inside :meth:`DCGANGenerator.synthesize_w` the gradient
    reaching a ReLU layer is always the input gradient the next layer has just computed; the caller's
    gradient of the image goes to :class:`_OutputLayer`, which does not modify it.
    """
    return torch.ops.aten.threshold_backward(grad, y, 0, grad_input=grad)


class _InputLayer(torch.autograd.Function):
    """relu(w @ weight + bias) for the first layer's (nz, 16·C) matrix, by oneDNN's linear operator.

    oneDNN's linear with a fused ReLU takes half the time of ``torch.addmm`` (MKL) and an in-place
    ReLU for this short, wide product (64 × 100 × 8192), and the same holds for the backward
    product. The operator (``torch.ops.mkldnn``, as torch's compiler emits it on CPU) has no
    autograd formula, so the backward is written out: ReLU's mask (in place, :func:`_relu_mask_`), then
    the product with the weight's transpose.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = torch.ops.mkldnn._linear_pointwise(w, weight.t(), bias, "relu", [], "")
        ctx.save_for_backward(y, weight)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        y, weight = ctx.saved_tensors
        return torch.ops.mkldnn._linear_pointwise(_relu_mask_(grad, y), weight, None, "none", [], ""), None, None


class _HiddenLayer(torch.autograd.Function):
    """relu(conv_transpose2d(x, weight, bias, stride 2, padding 1)) in one oneDNN call on packed weights.

    ``F.conv_transpose2d`` reorders the weights into oneDNN's blocked layout on every call (8 MB
    for the first hidden layer) and ReLU takes another pass over the output; oneDNN's own
    transposed convolution with a fused ReLU on weights packed once does neither. These are the
    oneDNN operators torch's own compiler emits on CPU (``torch.ops.mkldnn``); they have no
    autograd formula, so the backward is written out: ReLU's mask (in place, :func:`_relu_mask_`),
    then the stride-2 convolution with the same weight (what autograd computes for
    ``F.conv_transpose2d``), also on weights packed once, where ``F.conv2d`` would reorder them on
    every call. Same results bit for bit in both passes (where :func:`_onednn_runs`) as
    ``relu(F.conv_transpose2d(…))`` and ``F.conv2d`` (``tests/test_dcgan_packed.py``).
    """

    @staticmethod
    def pack(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A (C_in, C_out, 4, 4) stride-2 transposed-conv weight in oneDNN's layouts (opaque tensors): for the
        transposed convolution of the forward pass and for the convolution of the backward pass."""
        return (torch.ops.mkldnn._reorder_convolution_transpose_weight(weight, [1, 1], [0, 0], [2, 2], [1, 1], 1),
                torch.ops.mkldnn._reorder_convolution_weight(weight, [1, 1], [2, 2], [1, 1], 1))

    @staticmethod
    def forward(ctx, x: torch.Tensor, packed: torch.Tensor, packed_backward: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
        y = torch.ops.mkldnn._convolution_transpose_pointwise(x, packed, bias, [1, 1], [0, 0], [2, 2], [1, 1], 1,
                                                               "relu", [], "")
        ctx.save_for_backward(y)
        ctx.packed_backward = packed_backward
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (y,) = ctx.saved_tensors
        # channels-last, as F.conv2d makes its input when the weight is (and as the grad arrives here)
        grad = _relu_mask_(grad, y).contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise(grad, ctx.packed_backward, None, [1, 1], [2, 2], [1, 1], 1,
                                                       "none", [], ""), None, None, None


class _OutputLayer(torch.autograd.Function):
    """sigmoid(conv_transpose2d(x, weight, stride 2, padding 1)) for a 4×4 kernel with few output channels.

    oneDNN runs a transposed convolution to 3 channels at about 30 GFLOP/s per core (a fifth of the
    other layers), while the same multiply-adds as a 1×1 convolution of the channels-last input to
    the 16·C (kernel row, kernel column, channel) "columns" run at ≈ 180 GFLOP/s. So the forward is
    that GEMM followed by the overlap-add of the columns onto the output grid (col2im) and the
    sigmoid; the backward is the exact adjoint, as autograd would compute it: the sigmoid's
    derivative, then a stride-2 convolution with the same weight (a fast oneDNN forward kernel).
    Same arithmetic as ``F.conv_transpose2d``, summed in another order (agreement to float32
    rounding is tested). The image is returned NCHW-contiguous, the layout the downsampler's
    matrix products read fastest.
    """

    @staticmethod
    def column_weight(weight: torch.Tensor) -> torch.Tensor:
        """(C_in, C, 4, 4) transposed-conv weight → (16·C, C_in, 1, 1) 1×1 conv weight, output channels
        ordered (kernel row, kernel column, channel), channels-last."""
        c_in = weight.shape[0]
        columns = weight.permute(0, 2, 3, 1).reshape(c_in, -1).t()
        return columns.reshape(-1, c_in, 1, 1).contiguous(memory_format=torch.channels_last)

    @staticmethod
    def forward(ctx, x: torch.Tensor, columns: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch, _, side, _ = x.shape
        channels = weight.shape[1]
        # kernel row ky = 2a + p and column kx = 2d + q: input pixel (i, j) adds to padded output row
        # 2(i + a) + p and column 2(j + d) + q (the output is the padded grid without its outer ring)
        cols = F.conv2d(x, columns).permute(0, 2, 3, 1).reshape(batch, side, side, 2, 2, 2, 2, channels)
        cols = cols.permute(0, 3, 5, 1, 4, 2, 6, 7)  # (B, a, d, i, p, j, q, C)
        grid = cols.new_empty(batch, side + 1, 2, side + 1, 2, channels)  # (B, i + a, p, j + d, q, C)
        grid[:, :side, :, :side] = cols[:, 0, 0]
        grid[:, side] = 0
        grid[:, :side, :, side] = 0
        grid[:, 1:, :, 1:] += cols[:, 1, 1]
        grid[:, 1:, :, :side] += cols[:, 1, 0]
        grid[:, :side, :, 1:] += cols[:, 0, 1]
        full = 2 * side + 2
        inner = grid.view(batch, full, full, channels)[:, 1:-1, 1:-1].permute(0, 3, 1, 2)
        image = torch.sigmoid(inner, out=x.new_empty(batch, channels, full - 2, full - 2))
        ctx.save_for_backward(image, weight)
        return image

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        image, weight = ctx.saved_tensors
        grad = torch.ops.aten.sigmoid_backward(grad, image)
        return F.conv2d(grad, weight, None, 2, 1), None, None


def digiface_weights_path() -> Path:
    """Where ``gan-face-generate`` keeps its weights; a clear error when it is not installed."""
    try:
        return Path(str(resources.files("gan_face_generate") / "weights.tar"))
    except ModuleNotFoundError as exc:
        raise WeightsError("dcgan-digiface needs the package gan-face-generate: "
                           "pip install --no-deps gan-face-generate==1.1.1") from exc


def load_dcgan_digiface(weights: Path | None = None, device: torch.device | str = "cpu") -> DCGANGenerator:
    """The shipped 64×64 DigiFace DCGAN, read with :func:`.checkpoint.load_torch_file` and loaded strictly.

    Args:
        weights: a ``weights.tar`` in gan-face-generate's format (dict with ``netG_state_dict``);
            None = the file inside the installed package.
        device: where to put the module.
    """
    path = require_file(weights or digiface_weights_path(), "gan-face-generate weights (weights.tar)",
                        "reinstall with: pip install --no-deps gan-face-generate==1.1.1")
    blob = load_torch_file(path, "gan-face-generate checkpoint")
    if not isinstance(blob, dict) or "netG_state_dict" not in blob:
        raise WeightsError(f"{path} has no 'netG_state_dict' entry (expected a gan-face-generate checkpoint)")
    card = GeneratorCard(name="dcgan-digiface", weights=(path,), weights_sha256=(sha256_file(path),),
                         **DIGIFACE_CARD)
    model = DCGANGenerator(nz=100, ngf=64, resolution=64, card=card)
    load_state_strict(model, blob["netG_state_dict"], path, "64×64 DCGAN generator (nz=100, ngf=64)")
    return _fused(model, path).to(device)


def _fused(model: DCGANGenerator, path: Path) -> DCGANGenerator:
    """Freeze and fold the BatchNorms; a negative running variance (NaN after folding) is an error."""
    model.freeze().fuse_batchnorm()
    for name, buffer in model.named_buffers():
        if name.startswith("fused_") and buffer is not None and not bool(torch.isfinite(buffer).all()):
            raise WeightsError(f"{path}: BatchNorm statistics give non-finite weights ({name}; negative "
                               "running variance?); refusing them")
    return model


def tiny_dcgan(seed: int = 0, resolution: int = 32, ngf: int = 4, nz: int = 16,
               device: torch.device | str = "cpu") -> DCGANGenerator:
    """A small randomly initialised DCGAN (seeded, BN statistics randomised) for tests."""
    gen = torch.Generator().manual_seed(seed)
    card = GeneratorCard(name="dcgan-tiny", family="DCGAN", training_data="none (random weights, for tests)")
    model = DCGANGenerator(nz=nz, ngf=ngf, resolution=resolution, card=card)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(".weight") and tensor.dim() == 1:
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=gen))
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
    return model.freeze().fuse_batchnorm().to(device)


def load_tiny_dcgan(weights: Path | None = None, device: torch.device | str = "cpu") -> DCGANGenerator:
    """Registry loader for ``dcgan-tiny``: random weights, so a weights path is an error."""
    if weights is not None:
        raise WeightsError("dcgan-tiny has random weights and takes no weights file")
    return tiny_dcgan(device=device)


def load_dcgan_file(weights: Path | None = None, device: torch.device | str = "cpu") -> DCGANGenerator:
    """A DCGAN written by ``pulse-audit train-generator``: a state dict ``weights.pt`` and the
    generator card ``card.json`` beside it, whose ``architecture`` (nz, ngf, resolution, channels)
    fixes the shapes: bounded by :data:`CARD_LIMITS` and compared with the weights on the meta
    device before the network is built (:func:`.checkpoint.build_and_load`). Read with
    :func:`.checkpoint.load_torch_file` (bounded, no code); NaN/inf weights and a card whose
    recorded SHA-256 differs from the weights file are refused.

    Args:
        weights: the folder holding both files, or the weights file itself.
        device: where to put the module.
    """
    if weights is None:
        raise WeightsError("dcgan-file needs a path: --generator dcgan-file:FOLDER "
                           "(a folder with weights.pt and card.json, written by pulse-audit train-generator)")
    path = Path(weights).expanduser()
    weights_file = require_file(path / "weights.pt" if path.is_dir() else path, "DCGAN state dict (weights.pt)")
    card_path = require_file(weights_file.parent / "card.json", "generator card (card.json) beside the weights",
                             "pulse-audit train-generator writes it next to weights.pt")
    card, shape = read_dcgan_card(card_path)
    digest = sha256_file(weights_file)
    recorded = card["weights"].get("sha256") if isinstance(card.get("weights"), dict) else None
    if recorded and recorded != digest:
        raise WeightsError(f"{weights_file} does not match {card_path}: SHA-256 {digest[:12]}…, card records "
                           f"{str(recorded)[:12]}…")
    state = load_torch_file(weights_file, "DCGAN generator state dict")
    gen_card = GeneratorCard(family="DCGAN", weights=(weights_file, card_path),
                             weights_sha256=(digest, sha256_file(card_path, CARD_MAX_BYTES, "generator card")),
                             **card_provenance(card, weights_file.parent.name))
    model = build_and_load(lambda: DCGANGenerator(card=gen_card, **shape), state, weights_file,
                           f"{shape['resolution']}×{shape['resolution']} DCGAN generator (nz={shape['nz']}, "
                           f"ngf={shape['ngf']}) as its card says")
    return _fused(model, weights_file).to(device)


#: Bounds on a card's architecture, checked before anything is built (the shipped 64 px model has
#: nz 100, ngf 64; the widest layer has ngf·resolution/8 channels).
CARD_LIMITS = {"nz": 4096, "ngf": 1024, "resolution": 1024, "channels": 4, "widest": 8192}


def read_dcgan_card(card_path: Path) -> tuple[dict, dict[str, int]]:
    """A generator card (read by :func:`.card_file.read_card`: bounded size and nesting) and its bounded DCGAN
    architecture."""
    card = read_card(card_path, "DCGAN generator card")
    arch = card.get("architecture")
    keys = ("nz", "ngf", "resolution", "channels")
    if not isinstance(arch, dict) or arch.get("family") != "DCGAN" or not all(key in arch for key in keys):
        raise WeightsError(f"{card_path} is not a DCGAN generator card with an architecture entry (family DCGAN, "
                           f"nz, ngf, resolution, channels): found architecture {short_repr(arch, 100)}")
    shape = {key: arch[key] for key in keys}
    for key, value in shape.items():
        if type(value) is not int or not 1 <= value <= CARD_LIMITS[key]:
            raise WeightsError(f"{card_path}: architecture {key} {short_repr(value, 40)} is not an integer in "
                               f"1…{CARD_LIMITS[key]}")
    res = shape["resolution"]
    if res < 8 or res & (res - 1) or shape["ngf"] * res // 8 > CARD_LIMITS["widest"]:
        raise WeightsError(f"{card_path}: architecture resolution {res} with ngf {shape['ngf']} is not a DCGAN this "
                           f"loader builds (a power of two ≥ 8, at most {CARD_LIMITS['widest']} channels per layer)")
    return card, shape
