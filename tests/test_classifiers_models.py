"""The model-based classifiers: deepface (real code path on stand-in ONNX weights), FairFace
(our ResNet-34 on random weights under torchvision's key names) and GEAR (our TF.js interpreter on
a synthetic graph; on the real files when they are installed)."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pulse_engine.errors import PulseAuditError, WeightsError

ROOT = Path(__file__).resolve().parents[1]
SHOWCASE = ROOT / "datasets" / "showcase"


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def showcase(name: str) -> np.ndarray:
    return np.asarray(Image.open(SHOWCASE / f"{name}.png").convert("RGB"))


@pytest.fixture()
def no_network(monkeypatch):
    """Every attempt to resolve a host, connect or download is refused and recorded; the test fails
    at teardown if any was made (deepface wraps download errors, so raising alone is not enough)."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2])[:120])
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    requests = pytest.importorskip("requests")
    monkeypatch.setattr(requests, "head", refuse)
    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


# ---------------------------------------------------------------------------------------------
# deepface


def standin_onnx(path: Path, channels: int, size: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A tiny ONNX model in deepface's layout: (N, size, size, channels) float32 NHWC → (N, classes)
    softmax of a linear map of the per-channel maxima (exact, unlike a float32 mean). Returns (W, b)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 3, (channels, classes)).astype(np.float32)
    b = rng.normal(0, 1, classes).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["input"], ["pooled"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["pooled", "W"], ["logits0"]),
         helper.make_node("Add", ["logits0", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["output"], axis=-1)],
        "standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", size, size, channels])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return w, b


@pytest.fixture()
def deepface_home(tmp_path, monkeypatch):
    """A DEEPFACE_HOME with the four stand-in models; returns (home, {action: (W, b)})."""
    from audit.classifiers import deepface_onnx

    home = tmp_path / "dfhome"
    folder = home / ".deepface" / "weights"
    folder.mkdir(parents=True)
    params = {}
    for seed, (action, classes) in enumerate((("age", 101), ("gender", 2), ("race", 6), ("emotion", 7))):
        channels, size = (1, 48) if action == "emotion" else (3, 224)
        params[action] = standin_onnx(folder / deepface_onnx.WEIGHT_FILES[action], channels, size, classes, seed)
    for name in ("DEEPFACE_HOME", "DEEPFACE_BACKEND_ENGINE", "DEEPFACE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)  # restored after the test; build() sets them
    return home, params


def test_deepface_probabilities_equal_standin_models(deepface_home, no_network):
    from audit.classifiers import deepface_onnx

    home, params = deepface_home
    clf = deepface_onnx.build(home, "cpu", detector_backend="skip")
    rgb = np.array([200, 120, 40], dtype=np.float64)
    image = np.broadcast_to(rgb.astype(np.uint8), (224, 224, 3)).copy()
    pred = clf.predict([image])[0]
    assert pred.face_found
    # deepface feeds the models BGR in [0, 1]; emotion gets OpenCV's grey (0.299 R + 0.587 G + 0.114 B)
    bgr = rgb[::-1] / 255
    expected = {a: softmax(bgr @ params[a][0] + params[a][1]) for a in ("race", "gender", "age")}
    grey = np.array([0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]]) / 255
    expected["emotion"] = softmax(grey @ params["emotion"][0] + params["emotion"][1])
    np.testing.assert_allclose(list(pred.probabilities["race"].values()), expected["race"], atol=1e-5)
    assert list(pred.probabilities["race"]) == list(deepface_onnx.RACES)
    assert pred.probabilities["gender"]["Female"] == pytest.approx(expected["gender"][0], abs=1e-5)
    assert pred.probabilities["gender"]["Male"] == pytest.approx(expected["gender"][1], abs=1e-5)
    np.testing.assert_allclose(list(pred.probabilities["emotion"].values()), expected["emotion"], atol=1e-5)
    assert list(pred.probabilities["emotion"]) == list(deepface_onnx.EMOTIONS)
    assert pred.values["age_years"] == int(expected["age"] @ np.arange(101))
    for probs in pred.probabilities.values():
        assert sum(probs.values()) == pytest.approx(1.0)
    assert len(clf.card.weights_sha256) == 4


def test_deepface_opencv_detector_offline(deepface_home, no_network):
    from audit.classifiers import deepface_onnx

    clf = deepface_onnx.build(deepface_home[0], "cpu")
    face, blank = clf.predict([showcase("obama"), np.full((160, 160, 3), 128, np.uint8)])
    assert face.face_found and face.label("gender") in ("Female", "Male")
    assert not blank.face_found and "no face" in blank.error and not blank.probabilities


def test_deepface_missing_file_is_named_before_any_download(deepface_home, no_network):
    from audit.classifiers import deepface_onnx

    home, _ = deepface_home
    folder = home / ".deepface" / "weights"
    (folder / "race_model_single_batch.onnx").unlink()
    missing = deepface_onnx.missing_assets(home)
    assert len(missing) == 1 and "race_model_single_batch.onnx" in missing[0] and str(folder) in missing[0]
    assert deepface_onnx.missing_assets(folder) == missing  # the weights folder itself is accepted too
    with pytest.raises(WeightsError, match="race_model_single_batch.onnx"):
        deepface_onnx.build(home, "cpu")
    empty = home.parent / "empty"
    assert len(deepface_onnx.missing_assets(empty)) == 4


# ---------------------------------------------------------------------------------------------
# FairFace


def test_resnet34_keys_equal_torchvision_manifest():
    from audit.classifiers.resnet34 import ResNet34, key_manifest

    manifest = json.loads((ROOT / "tests/data/fairface/resnet34_fc18_keys.json").read_text())["keys"]
    assert list(key_manifest(ResNet34(18)).items()) == list(manifest.items())


def random_fairface_state(seed: int = 0) -> dict[str, torch.Tensor]:
    from audit.classifiers.resnet34 import ResNet34

    torch.manual_seed(seed)
    model = ResNet34(18)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model.state_dict()


def test_fairface_random_weights_heads_and_prefix(tmp_path):
    from audit.classifiers import fairface
    from audit.classifiers.resnet34 import ResNet34

    state = random_fairface_state()
    path = tmp_path / fairface.WEIGHTS_FILE
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # as saved from nn.DataParallel
    clf = fairface.build(path, "cpu", align=False)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    preds = clf.predict(images)

    reference = ResNet34(18).eval()
    reference.load_state_dict(state)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    batch = np.stack([((im / 255.0 - mean) / std).transpose(2, 0, 1) for im in images]).astype(np.float32)
    with torch.no_grad():
        logits = reference(torch.from_numpy(batch)).double().numpy()
    for pred, z in zip(preds, logits):
        assert pred.face_found
        for attribute, labels, part in (("race", fairface.RACE7, z[0:7]), ("gender", fairface.GENDERS, z[7:9]),
                                        ("age", fairface.AGE_BINS, z[9:18])):
            assert list(pred.probabilities[attribute]) == list(labels)
            np.testing.assert_allclose(list(pred.probabilities[attribute].values()), softmax(part), atol=1e-5)
    assert clf.card.weights_sha256 and "7-race" in clf.card.model


def test_fairface_race4_variant_from_file_name(tmp_path):
    from audit.classifiers import fairface

    path = tmp_path / "res34_fair_align_multi_4_20190809.pt"
    torch.save(random_fairface_state(2), path)
    clf = fairface.build(path, "cpu", align=False)
    assert clf.attributes == {"race4": fairface.RACE4}
    pred = clf.predict([np.full((100, 100, 3), 90, np.uint8)])[0]
    assert list(pred.probabilities) == ["race4"] and sum(pred.probabilities["race4"].values()) == pytest.approx(1)
    assert fairface.build(path, "cpu", align=False, race_classes=7).attributes["race"] == fairface.RACE7


def test_fairface_missing_and_wrong_weights(tmp_path, monkeypatch):
    from audit.classifiers import fairface

    monkeypatch.setenv("PULSE_AUDIT_HOME", str(tmp_path / "home"))
    missing = fairface.missing_assets(None)
    expected = tmp_path / "home" / "weights" / "fairface" / fairface.WEIGHTS_FILE
    assert len(missing) == 1 and str(expected) in missing[0]
    with pytest.raises(WeightsError, match=fairface.WEIGHTS_FILE):
        fairface.build(None, "cpu")
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(1000, 512)}, wrong)
    with pytest.raises(WeightsError, match="not a FairFace ResNet-34"):
        fairface.build(wrong, "cpu")
    with pytest.raises(PulseAuditError, match="race_classes"):
        fairface.race_variant(wrong, 5)


def test_fairface_alignment_finds_face_or_reports_none(tmp_path):
    from audit.classifiers import fairface

    if any("dlib model" in m for m in fairface.missing_assets(tmp_path)):
        pytest.skip("face-recognition-models is not installed")
    chipper = fairface.FaceChipper("hog")
    chip = chipper(showcase("obama"))
    assert chip is not None and chip.shape == (300, 300, 3) and chip.dtype == np.uint8
    assert chipper(np.full((120, 200, 3), 200, np.uint8)) is None
    path = tmp_path / fairface.WEIGHTS_FILE
    torch.save(random_fairface_state(3), path)
    face, blank = fairface.build(path, "cpu").predict([showcase("biden"), np.zeros((64, 64, 3), np.uint8)])
    assert face.face_found and not blank.face_found and blank.error


# ---------------------------------------------------------------------------------------------
# GEAR and the TF.js interpreter


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tfjs_node(name: str, op: str, inputs: list[str] = (), **attr) -> dict:
    return {"name": name, "op": op, "input": list(inputs), "attr": attr}


def conv_attrs(padding: str, stride: int, fused: list[str]) -> dict:
    return {"padding": {"s": b64(padding)}, "strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}},
            "dilations": {"list": {"i": ["1", "1", "1", "1"]}}, "data_format": {"s": b64("NHWC")},
            "fused_ops": {"list": {"s": [b64(f) for f in fused]}}, "num_args": {"i": "1"}}


def write_tfjs_model(folder: Path, nodes: list[dict], weights: list[tuple[str, np.ndarray, str | None]]) -> Path:
    """Write model.json + group1-shard1of1.bin; each weight as float32/int32 or quantised
    ('float16' or 'uint8')."""
    specs, blobs = [], []
    for name, value, quant in weights:
        dtype = "int32" if value.dtype == np.int32 else "float32"
        spec = {"name": name, "shape": list(value.shape), "dtype": dtype}
        if quant == "float16":
            blobs.append(value.astype(np.float16).tobytes())
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        elif quant == "uint8":
            lo, scale = float(value.min()), float(value.max() - value.min()) / 255
            blobs.append(np.round((value - lo) / scale).astype(np.uint8).tobytes())
            spec["quantization"] = {"dtype": "uint8", "min": lo, "scale": scale, "original_dtype": "float32"}
        else:
            blobs.append(value.tobytes())
        specs.append(spec)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "group1-shard1of1.bin").write_bytes(b"".join(blobs))
    consts = [tfjs_node(name, "Const") for name, _, _ in weights]
    doc = {"format": "graph-model", "modelTopology": {"node": consts + nodes},
           "signature": {"outputs": {"probs": {"name": "Identity:0"}}},
           "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": specs}]}
    (folder / "model.json").write_text(json.dumps(doc))
    return folder / "model.json"


def np_conv(x: np.ndarray, w: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """Direct NHWC convolution with an HWIO filter and TF's VALID/SAME padding."""
    kh, kw = w.shape[:2]
    if padding == "SAME":
        pads = []
        for size, k in ((x.shape[1], kh), (x.shape[2], kw)):
            total = max((-(-size // stride) - 1) * stride + k - size, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
            out += patch @ w[i, j]
    return out


def np_maxpool(x: np.ndarray, k: int, stride: int, padding: str) -> np.ndarray:
    if padding == "SAME":
        total = max((-(-x.shape[1] // stride) - 1) * stride + k - x.shape[1], 0)
        x = np.pad(x, ((0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2), (0, 0)),
                   constant_values=-np.inf)
    o = (x.shape[1] - k) // stride + 1
    return np.max([x[:, i:i + stride * (o - 1) + 1:stride, j:j + stride * (o - 1) + 1:stride]
                   for i in range(k) for j in range(k)], axis=0)


def test_tfjs_interpreter_matches_numpy_on_every_op(tmp_path):
    from audit.classifiers.tfjs_graph import SUPPORTED_OPS, TFJSGraph

    rng = np.random.default_rng(0)
    def f16(a):  # what the file stores
        return a.astype(np.float16).astype(np.float64)
    w1, b1 = rng.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)
    w2, b2 = rng.normal(0, 0.5, (2, 2, 4, 5)).astype(np.float32), rng.normal(0, 0.1, 5).astype(np.float32)
    scale, offset = rng.uniform(0.5, 1.5, 5).astype(np.float32), rng.normal(0, 0.1, 5).astype(np.float32)
    m1, c1 = rng.normal(0, 0.5, (5, 6)).astype(np.float32), rng.normal(0, 0.1, 6).astype(np.float32)
    m2, c2 = rng.normal(0, 0.5, (6, 3)).astype(np.float32), rng.normal(0, 0.1, 3).astype(np.float32)
    axes = np.array([1, 2], dtype=np.int32)
    weights = [("w1", w1, "float16"), ("b1", b1, None), ("w2", w2, "uint8"), ("b2", b2, "float16"),
               ("scale", scale, None), ("offset", offset, "float16"), ("axes", axes, None),
               ("m1", m1, "float16"), ("c1", c1, None), ("m2", m2, None), ("c2", c2, "float16")]
    pool = {"ksize": {"list": {"i": ["1", "2", "2", "1"]}}, "strides": {"list": {"i": ["1", "2", "2", "1"]}},
            "data_format": {"s": b64("NHWC")}}
    def matmul(fused):
        return {"transpose_a": {"b": False}, "transpose_b": {"b": False},
                "fused_ops": {"list": {"s": [b64(f) for f in fused]}}, "num_args": {"i": "1"}}
    nodes = [tfjs_node("x", "Placeholder"),
             tfjs_node("conv1", "_FusedConv2D", ["x", "w1", "b1"], **conv_attrs("SAME", 2, ["BiasAdd", "Relu"])),
             tfjs_node("conv2", "_FusedConv2D", ["conv1", "w2", "b2"], **conv_attrs("VALID", 1, ["BiasAdd"])),
             tfjs_node("mul", "Mul", ["conv2", "scale"]),
             tfjs_node("add", "Add", ["mul", "offset"]),
             tfjs_node("pool", "MaxPool", ["add"], padding={"s": b64("SAME")}, **pool),
             tfjs_node("gmax", "Max", ["pool:0", "axes"], keep_dims={"b": False}),
             tfjs_node("dense", "_FusedMatMul", ["gmax", "m1", "c1"], **matmul(["BiasAdd", "Relu"])),
             tfjs_node("logits", "_FusedMatMul", ["dense", "m2", "c2", "^gmax"], **matmul(["BiasAdd"])),
             tfjs_node("softmax", "Softmax", ["logits"]),
             tfjs_node("Identity", "Identity", ["softmax"])]
    graph = TFJSGraph(write_tfjs_model(tmp_path / "synthetic", nodes, weights))
    assert {n["op"] for n in graph.nodes.values()} == set(SUPPORTED_OPS)
    x = rng.uniform(0, 1, (2, 11, 11, 3))
    probs, pooled = graph.run({"x": x}, ["probs", "pool"])

    lo2, sc2 = float(w2.min()), float(w2.max() - w2.min()) / 255
    w2q = np.round((w2 - lo2) / sc2) * sc2 + lo2
    h = np.maximum(np_conv(x, f16(w1), 2, "SAME") + b1, 0)
    h = (np_conv(h, w2q, 1, "VALID") + f16(b2)) * scale + f16(offset)
    h = np_maxpool(h, 2, 2, "SAME")
    np.testing.assert_allclose(pooled, h, atol=1e-4)
    h = np.maximum(h.max(axis=(1, 2)) @ f16(m1) + c1, 0)
    np.testing.assert_allclose(probs, softmax(h @ m2 + f16(c2)), atol=1e-5)


def test_tfjs_interpreter_refuses_unknown_ops_and_truncated_shards(tmp_path):
    from audit.classifiers.tfjs_graph import TFJSGraph

    nodes = [tfjs_node("x", "Placeholder"), tfjs_node("y", "Conv3D", ["x", "w"]),
             tfjs_node("Identity", "Identity", ["y"])]
    path = write_tfjs_model(tmp_path / "bad", nodes, [("w", np.ones((2, 2), np.float32), None)])
    with pytest.raises(WeightsError, match="unsupported TF.js ops Conv3D"):
        TFJSGraph(path)
    nodes[1]["op"] = "Add"
    path = write_tfjs_model(tmp_path / "short", nodes, [("w", np.ones((2, 2), np.float32), None)])
    (tmp_path / "short" / "group1-shard1of1.bin").write_bytes(b"\0" * 8)
    with pytest.raises(WeightsError, match="truncated"):
        TFJSGraph(path)


def test_gear_crop_and_resize_and_missing_files(tmp_path):
    from audit.classifiers import gear

    image = np.random.default_rng(0).uniform(0, 1, (9, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(gear.crop_and_resize(image, (0, 0, 1, 1), 9), image, atol=1e-6)
    np.testing.assert_allclose(gear.crop_and_resize(image, (0, 0, 0.5, 0.5), 5), image[:5, :5], atol=1e-6)
    assert not gear.crop_and_resize(image, (2, 2, 3, 3), 4).any()  # entirely outside: zeros
    missing = gear.missing_assets(tmp_path)
    assert [m.split(":")[0] for m in missing] == ["missing GEAR file gear.json", "missing GEAR file gear.bin"]
    assert all(str(tmp_path) in m and "fetch_gear.sh" in m for m in missing)
    with pytest.raises(WeightsError, match="gear.json"):
        gear.build(tmp_path, "cpu")


# tfjs-core 4.22 (cpu backend, Node 20) on the real gear.json/gear.bin for the input
# x[0, i, j, c] = ((7 i + 3 j + 11 c) mod 256) / 255; recorded when the interpreter was written.
TFJS_REFERENCE = {
    "age_output": [0.00979754, 0.007833261, 0.6943083, 0.2507105, 0.0110917, 0.02604899, 0.0002096989],
    "gender_output": [0.9950984, 0.004901574],
    "race_output": [0.5070613, 0.2149192, 0.01536843, 0.2626092, 4.189194e-05],
}


def test_gear_real_model_if_installed():
    from audit.classifiers import gear

    folder = gear.default_folder(None)
    if gear.missing_assets(None):
        pytest.skip(f"GEAR files not installed in {folder} (make models)")
    clf = gear.build(None, "cpu")
    i, j, c = np.meshgrid(np.arange(198), np.arange(198), np.arange(3), indexing="ij")
    x = (((7 * i + 3 * j + 11 * c) % 256) / 255.0)[None].astype(np.float32)
    outputs = clf.graph.run({"input_1": x}, list(TFJS_REFERENCE))
    for out, expected in zip(outputs, TFJS_REFERENCE.values()):
        np.testing.assert_allclose(out[0], expected, atol=1e-5)
    preds = clf.predict([showcase(n) for n in ("obama", "biden", "astronaut")])
    assert all(p.face_found for p in preds)
    for p in preds:
        assert set(p.probabilities) == {"race", "gender", "age"} and 15 <= p.values["age_years"] <= 65
        assert all(sum(v.values()) == pytest.approx(1, abs=1e-5) for v in p.probabilities.values())
    assert [p.label("gender") for p in preds[:2]] == ["Male", "Male"]
