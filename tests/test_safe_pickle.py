"""The restricted unpickler refuses everything but tensors, plain containers and captured metadata.

Malicious pickles are written here with the standard pickler. Pickles that imitate NVlabs'
``torch_utils.persistence`` are written while a fake ``torch_utils.persistence`` module is
registered in ``sys.modules`` (only inside :func:`fake_persistence`), so the stream calls
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` exactly as a real network pickle does.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from pulse_engine.errors import WeightsError
from pulse_engine.generators.safe_pickle import (
    ALLOWED_GLOBALS,
    MAX_MODULES,
    MAX_NAME_CHARS,
    ForbiddenGlobal,
    PersistentObject,
    RestrictedUnpickler,
    child,
    flatten_module_state,
    restricted_load,
)
from pulse_engine.generators.stylegan2_loaders import read_nvlabs_pickle

DATA = Path(__file__).parent / "data" / "stylegan2"
FIXTURE = DATA / "nvlabs_tiny.pkl"


@contextlib.contextmanager
def fake_persistence():
    """Register a stand-in ``torch_utils.persistence`` module while pickles are written."""
    names = ("torch_utils", "torch_utils.persistence")
    saved = {name: sys.modules.get(name) for name in names}
    package, module = types.ModuleType(names[0]), types.ModuleType(names[1])

    def _reconstruct_persistent_obj(meta):  # only referenced by name in the stream
        raise AssertionError("the writer never unpickles")

    _reconstruct_persistent_obj.__module__ = names[1]
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    sys.modules.update(dict(zip(names, (package, module))))
    try:
        yield module
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


class Persistent:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, like NVlabs' decorator."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,)


def writable(obj, module_src: str):
    """Turn a captured tree back into picklable persistent objects carrying ``module_src``."""
    if isinstance(obj, PersistentObject):
        return Persistent(dict(type="class", version=obj.version, module_src=module_src, class_name=obj.class_name,
                               state={k: writable(v, module_src) for k, v in obj.state.items()}))
    if isinstance(obj, dict):
        return type(obj)((k, writable(v, module_src)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(writable(v, module_src) for v in obj)
    return obj


def load_fixture_tree() -> dict:
    with open(FIXTURE, "rb") as handle:
        return restricted_load(handle)


def write_snapshot(path: Path, snapshot: dict, module_src: str) -> Path:
    with fake_persistence():
        path.write_bytes(pickle.dumps(writable(snapshot, module_src), protocol=4))
    return path


class Reduce:
    """An object whose unpickling calls ``func(*args)``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# --- the real fixture ---------------------------------------------------------------------------

def test_real_nvlabs_pickle_needs_only_allowlisted_globals():
    seen = set()

    class Recording(RestrictedUnpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    with open(FIXTURE, "rb") as handle:
        snapshot = Recording(handle).load()
    assert seen <= set(ALLOWED_GLOBALS)
    assert ("torch_utils.persistence", "_reconstruct_persistent_obj") in seen  # it is a persistence pickle
    g_ema = snapshot["G_ema"]
    assert isinstance(g_ema, PersistentObject) and g_ema.class_name == "Generator" and g_ema.version == 6
    assert g_ema.module_src_chars > 0 and g_ema.init_kwargs["synthesis_kwargs"]["conv_clamp"] == 1.0
    assert child(child(g_ema, "synthesis"), "b32").class_name == "SynthesisBlock"
    assert snapshot["G"] is g_ema  # memoised, as written


# --- malicious pickles --------------------------------------------------------------------------

def test_reduce_to_os_system_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Reduce(os.system, f"touch {marker}")}))
    name = f"{os.system.__module__}.system"
    with pytest.raises(WeightsError) as info:
        read_nvlabs_pickle(evil)
    assert str(info.value) == (f"{evil} contains unexpected global '{name}'; refusing to load "
                               "(nothing from it was executed)")
    assert not marker.exists()


def test_exec_payload_would_run_with_plain_pickle_but_not_here(tmp_path):
    control, marker = tmp_path / "control", tmp_path / "marker"
    payload = "open({!r}, 'w').write('pwned')"
    pickle.loads(pickle.dumps(Reduce(builtins.exec, payload.format(str(control)))))  # the payload is live
    assert control.read_text() == "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Reduce(builtins.exec, payload.format(str(marker)))}))
    with pytest.raises(WeightsError, match="contains unexpected global 'builtins.exec'; refusing to load"):
        read_nvlabs_pickle(evil)
    assert not marker.exists()


def test_forbidden_global_nested_inside_a_persistent_object_is_refused(tmp_path):
    marker = tmp_path / "marker"
    snapshot = load_fixture_tree()
    snapshot["G_ema"].state["_init_kwargs"]["mapping_kwargs"]["hook"] = Reduce(subprocess.Popen, ["touch", str(marker)])
    evil = write_snapshot(tmp_path / "nested.pkl", snapshot, "pass\n")
    with pytest.raises(WeightsError, match="unexpected global 'subprocess.Popen'"):
        read_nvlabs_pickle(evil)
    assert not marker.exists()


def test_persistent_module_source_is_never_executed(tmp_path):
    marker = tmp_path / "marker"
    source = f"open({str(marker)!r}, 'w').write('pwned')\n"
    path = write_snapshot(tmp_path / "src.pkl", load_fixture_tree(), source)
    with open(path, "rb") as handle:
        snapshot = restricted_load(handle)
    assert snapshot["G_ema"].module_src_sha256 == hashlib.sha256(source.encode()).hexdigest()
    model = read_nvlabs_pickle(path)  # the full loader succeeds: the source text is data, ignored
    expected = np.load(DATA / "nvlabs_tiny_expected.npz")
    with torch.no_grad():
        image = model.synthesis(torch.from_numpy(expected["ws"]), model.const_noise())
    assert np.abs(image.numpy() - expected["image_const_noise"]).max() < 2e-5
    assert not marker.exists()


def test_unknown_persistent_object_type_is_refused(tmp_path):
    with fake_persistence():
        data = pickle.dumps({"G_ema": Persistent(dict(type="function", version=6, module_src="", class_name="f"))})
    (tmp_path / "odd.pkl").write_bytes(data)
    with pytest.raises(WeightsError, match="odd.pkl is truncated or not a readable NVlabs network pickle"):
        read_nvlabs_pickle(tmp_path / "odd.pkl")


def test_persistent_ids_are_refused():
    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, str) and obj == "x" else None

    buffer = io.BytesIO()
    WithPid(buffer).dump(["x"])
    with pytest.raises(pickle.UnpicklingError, match="persistent IDs"):
        restricted_load(io.BytesIO(buffer.getvalue()))


def test_numpy_values_become_plain_numbers_and_odd_dtypes_are_refused():
    assert restricted_load(io.BytesIO(pickle.dumps(np.float64(1.5)))) == 1.5
    value = restricted_load(io.BytesIO(pickle.dumps(np.int32(-7))))
    assert value == -7 and type(value) is int
    with pytest.raises(pickle.UnpicklingError, match="not a plain numeric type"):
        restricted_load(io.BytesIO(pickle.dumps(np.dtype("O"))))
    with pytest.raises(ForbiddenGlobal) as info:
        restricted_load(io.BytesIO(pickle.dumps(np.zeros(3))))
    assert "_reconstruct" in info.value.name


def test_plain_tensors_and_containers_round_trip():
    payload = {"t": torch.arange(6.0).reshape(2, 3)[:, 1:], "p": torch.nn.Parameter(torch.ones(2)),
               "o": OrderedDict(a=1), "s": {1, 2}}
    loaded = restricted_load(io.BytesIO(pickle.dumps(payload, protocol=3)))  # 3.7 default: sets as builtins.set
    assert torch.equal(loaded["t"], payload["t"]) and isinstance(loaded["p"], torch.nn.Parameter)
    assert loaded["o"] == OrderedDict(a=1) and loaded["s"] == {1, 2}


# --- unsupported generators ---------------------------------------------------------------------

def test_stylegan3_pickle_is_refused(tmp_path):
    layer = PersistentObject("SynthesisLayer", 6, {"_parameters": {}, "_buffers": {}, "_modules": {}})
    synthesis = PersistentObject("SynthesisNetwork", 6, {"_modules": {
        "input": PersistentObject("SynthesisInput", 6, {"_modules": {}}), "L0_36_512": layer}})
    g_ema = PersistentObject("Generator", 6, {"_modules": {"synthesis": synthesis}, "_init_kwargs": {
        "z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024, "img_channels": 3}})
    path = write_snapshot(tmp_path / "sg3.pkl", {"G_ema": g_ema}, "pass\n")
    with pytest.raises(WeightsError, match="sg3.pkl holds a StyleGAN3 generator: StyleGAN3 not supported"):
        read_nvlabs_pickle(path)


@pytest.mark.parametrize("group,key,value,message", [
    ("synthesis_kwargs", "architecture", "resnet", "architecture='resnet'"),
    ("mapping_kwargs", "lr_multiplier", 0.01, None),
    ("", "c_dim", 10, "conditional generator"),
    ("synthesis_kwargs", "fancy_option", 1, "unknown option synthesis_kwargs.fancy_option"),
])
def test_generator_options_are_checked(tmp_path, group, key, value, message):
    snapshot = load_fixture_tree()
    kwargs = snapshot["G_ema"].state["_init_kwargs"]
    (kwargs[group] if group else kwargs)[key] = value
    path = write_snapshot(tmp_path / "opt.pkl", snapshot, "pass\n")
    if message is None:
        assert read_nvlabs_pickle(path).lr_mlp == value
    else:
        with pytest.raises(WeightsError, match=f"opt.pkl: unsupported NVlabs StyleGAN2 generator: .*{message}"):
            read_nvlabs_pickle(path)


def test_tensor_view_past_its_storage_is_refused():
    # a typed storage pickles via torch.storage._load_from_bytes, as in NVlabs files
    storage = torch.TypedStorage(wrap_storage=torch.arange(4.0).untyped_storage(), dtype=torch.float32, _internal=True)
    inside = Reduce(torch._utils._rebuild_tensor_v2, storage, 1, (3,), (1,), False, OrderedDict())
    assert torch.equal(restricted_load(io.BytesIO(pickle.dumps(inside))), torch.tensor([1.0, 2.0, 3.0]))
    outside = Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (1000,), (1,), False, OrderedDict())
    with pytest.raises(pickle.UnpicklingError, match="needs more elements than its storage holds"):
        restricted_load(io.BytesIO(pickle.dumps(outside)))
    # a BUILD opcode cannot re-view a checked tensor through Tensor.__setstate__ (set_ with file sizes)
    class Restated:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (storage, 0, (1,), (1,), False, OrderedDict()),
                    (storage, 0, (1 << 20, 1 << 20), (0, 0)))

    restated = Restated()
    with pytest.raises(pickle.UnpicklingError, match="BUILD opcode"):
        restricted_load(io.BytesIO(pickle.dumps(restated)))
    # a stride-0 view repeating one stored element a million times is refused as well
    repeated = Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (1000, 1000), (0, 0), False, OrderedDict())
    with pytest.raises(pickle.UnpicklingError, match="needs more elements"):
        restricted_load(io.BytesIO(pickle.dumps(repeated)))
    # sizes are bounded before any product is taken (a file-sized integer would make it take hours)
    huge = Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (1 << 4000, 0), (1, 1), False, OrderedDict())
    with pytest.raises(pickle.UnpicklingError, match="2\\*\\*62"):
        restricted_load(io.BytesIO(pickle.dumps(huge)))


def module(**children: PersistentObject) -> PersistentObject:
    return PersistentObject("M", 6, {"_parameters": {"w": torch.zeros(1)}, "_modules": children})


def test_module_walk_refuses_repeats_and_is_bounded():
    """A module met twice (shared, or a cycle made through the memo), too many modules or an over-long name
    is one line; a plain tree flattens to dotted names."""
    leaf = module()
    assert set(flatten_module_state(module(a=module(b=leaf)))) == {"w", "a.w", "a.b.w"}
    with pytest.raises(pickle.UnpicklingError, match="'b' appears twice"):
        flatten_module_state(module(a=leaf, b=leaf))
    cycle = module()
    cycle.state["_modules"]["again"] = cycle
    with pytest.raises(pickle.UnpicklingError, match="'again' appears twice"):
        flatten_module_state(cycle)
    with pytest.raises(pickle.UnpicklingError, match=f"more than {MAX_MODULES:,} modules"):
        flatten_module_state(module(**{f"m{i}": module() for i in range(MAX_MODULES)}))
    with pytest.raises(pickle.UnpicklingError, match=f"at most {MAX_NAME_CHARS} characters"):
        flatten_module_state(module(**{"x" * (MAX_NAME_CHARS + 1): leaf}))
