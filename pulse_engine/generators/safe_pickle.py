"""A restricted unpickler for NVlabs ``stylegan2-ada-pytorch`` network pickles.

Those pickles are written by ``torch_utils.persistence``: every network module is stored as a call
``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the module's class name, its
constructor arguments, its ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, …) *and the
source text of the Python module defining the class*, which NVlabs' code ``exec``s on load.
Loading such a file with :func:`pickle.load` is therefore arbitrary code execution.

:class:`RestrictedUnpickler` resolves only the globals listed in :data:`ALLOWED_GLOBALS`:

- torch's tensor/parameter rebuild helpers and storage classes, and ``torch.storage._load_from_bytes``
  (replaced by a version that reads the embedded storage with ``torch.load(weights_only=True)``);
- ``collections.OrderedDict``, ``builtins.set``/``frozenset`` (protocol-2/3 pickles spell sets so);
- ``numpy.dtype`` and ``numpy.core.multiarray.scalar``, replaced by stand-ins that accept only plain
  numeric dtypes and turn a pickled NumPy scalar into a Python number;
- ``dnnlib.util.EasyDict`` → :class:`dict`;
- ``torch_utils.persistence._reconstruct_persistent_obj`` → a stub returning a
  :class:`PersistentObject` that records the class name, constructor arguments and state, and
  keeps only the length and SHA-256 of ``module_src``, which is never executed or compiled.

Any other global (``os.system``, ``builtins.exec``, ``subprocess.Popen``, a model class, …) makes
:meth:`RestrictedUnpickler.find_class` raise :class:`ForbiddenGlobal` *before* anything is called,
so nothing from the file runs. Persistent IDs are refused as well (plain pickle's default).
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import torch

__all__ = ["ALLOWED_GLOBALS", "ForbiddenGlobal", "PersistentObject", "RestrictedUnpickler", "restricted_load",
           "flatten_module_state", "child"]


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist; ``name`` is ``"module.qualname"``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"global {name!r} is not allowed")
        self.name = name


@dataclass
class PersistentObject:
    """What ``torch_utils.persistence`` stored for one module, captured without running its code.

    Attributes:
        class_name: class name inside the pickled module source (e.g. ``"SynthesisLayer"``).
        version: ``torch_utils.persistence`` format version (6 for stylegan2-ada-pytorch).
        state: the module's ``__dict__`` as pickled: ``_parameters``, ``_buffers``, ``_modules``
            (child :class:`PersistentObject` s), ``_init_args``, ``_init_kwargs`` and plain attributes.
        module_src_chars: length of the stored module source text (kept only for reporting).
        module_src_sha256: SHA-256 of that text (kept only for reporting; the text is dropped).
    """

    class_name: str
    version: int
    state: dict[str, Any] = field(repr=False)
    module_src_chars: int = 0
    module_src_sha256: str = ""

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments recorded by ``persistent_class`` (empty if absent)."""
        kwargs = self.state.get("_init_kwargs") or {}
        return dict(kwargs) if isinstance(kwargs, Mapping) else {}

    @property
    def init_args(self) -> tuple[Any, ...]:
        """Constructor positional arguments recorded by ``persistent_class`` (empty if absent)."""
        args = self.state.get("_init_args") or ()
        return tuple(args) if isinstance(args, (tuple, list)) else ()

    def __setstate__(self, state: Any) -> None:  # a BUILD opcode aimed at the stub: refuse
        raise pickle.UnpicklingError("unexpected state applied to a persistent object")


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: record, never exec."""
    if not isinstance(meta, Mapping):
        raise pickle.UnpicklingError("persistent object without a meta dict")
    if meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError(f"unsupported persistent object type {meta.get('type')!r}")
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, Mapping):
        raise pickle.UnpicklingError(f"persistent object {meta['class_name']} has a non-dict state")
    src = meta.get("module_src")
    src_bytes = src.encode("utf-8", "replace") if isinstance(src, str) else b""
    return PersistentObject(class_name=meta["class_name"], version=int(meta.get("version", -1)),
                            state=dict(state), module_src_chars=len(src_bytes),
                            module_src_sha256=hashlib.sha256(src_bytes).hexdigest())


def _load_storage_from_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: the bytes are a legacy ``torch.save`` of one
    storage, read here with ``weights_only=True`` (tensors and storages only) onto the CPU."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("storage payload is not bytes")
    storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"embedded storage holds a {type(storage).__name__}")
    return storage


def _no_hooks(hooks: Any) -> collections.OrderedDict:
    if hooks:  # backward hooks are never serialised by torch; a non-empty value is suspicious
        raise pickle.UnpicklingError("tensor with serialised backward hooks")
    return collections.OrderedDict()


def _rebuild_tensor_v2(storage: Any, offset: int, size: tuple, stride: tuple, requires_grad: bool,
                       backward_hooks: Any, metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a typed storage")
    if metadata:
        raise pickle.UnpicklingError("tensor with unsupported serialised metadata")
    offset, size, stride = int(offset), tuple(int(n) for n in size), tuple(int(n) for n in stride)
    if len(size) != len(stride) or offset < 0 or any(n < 0 for n in size + stride):
        raise pickle.UnpicklingError("tensor with an invalid size, stride or offset")
    if all(size):  # the view must lie inside the storage (torch would silently grow it instead)
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= storage._size():  # _size(): element count, without the TypedStorage deprecation warning
            raise pickle.UnpicklingError("tensor extends past the end of its storage")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, bool(requires_grad),
                                           _no_hooks(backward_hooks))


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple) -> torch.Tensor:
    return _rebuild_tensor_v2(storage, offset, size, stride, False, None)


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    _no_hooks(backward_hooks)
    return torch.nn.Parameter(data, bool(requires_grad))


def _rebuild_parameter_with_state(data: Any, requires_grad: bool, backward_hooks: Any,
                                  state: Any) -> torch.nn.Parameter:
    if state:
        raise pickle.UnpicklingError("parameter with serialised Python state")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_NUMERIC_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})


class _SafeDType:
    """Stand-in for ``numpy.dtype`` as pickled (``dtype('f8', False, True)`` + state tuple)."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        if spec not in _NUMERIC_DTYPES:
            raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not a plain numeric type")
        self.spec, self.byteorder = spec, "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("unexpected numpy dtype state")
        self.byteorder = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.spec).newbyteorder(self.byteorder if self.byteorder != "|" else "=")


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | bool:
    """Stand-in for ``numpy.core.multiarray.scalar``: a Python number from a numeric dtype + bytes."""
    if not isinstance(dtype, _SafeDType) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy scalar that is not a plain number")
    np_dtype = dtype.numpy()
    if len(data) != np_dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar with a wrong byte count")
    return np.frombuffer(bytes(data), dtype=np_dtype)[0].item()


_STORAGE_NAMES = ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
                  "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "UntypedStorage")

#: (module, name) → the object the unpickler returns for it. Nothing else resolves.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): _SafeDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    **{("torch", name): getattr(torch, name) for name in _STORAGE_NAMES if hasattr(torch, name)},
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent IDs are not supported")


def restricted_load(handle: IO[bytes]) -> Any:
    """Unpickle ``handle`` with :class:`RestrictedUnpickler`; raises ForbiddenGlobal / UnpicklingError."""
    return RestrictedUnpickler(handle).load()


def child(obj: PersistentObject, name: str) -> Any:
    """The submodule ``name`` of a captured module (None when absent)."""
    modules = obj.state.get("_modules") or {}
    return modules.get(name) if isinstance(modules, Mapping) else None


def flatten_module_state(obj: PersistentObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict``-style ``{dotted.name: tensor}`` of a captured module tree.

    Parameters and buffers are taken from each module's ``_parameters`` and ``_buffers``
    (non-persistent buffers excluded), recursing through ``_modules``; ``None`` entries are skipped.
    """
    flat: dict[str, torch.Tensor] = {}
    skip = obj.state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        entries = obj.state.get(group) or {}
        if not isinstance(entries, Mapping):
            raise pickle.UnpicklingError(f"{obj.class_name}.{group} is not a dict")
        for key, value in entries.items():
            if value is None or (group == "_buffers" and key in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise pickle.UnpicklingError(f"{prefix}{key} is a {type(value).__name__}, not a tensor")
            flat[f"{prefix}{key}"] = value.detach()
    modules = obj.state.get("_modules") or {}
    for key, sub in (modules.items() if isinstance(modules, Mapping) else ()):
        if sub is None:
            continue
        if not isinstance(sub, PersistentObject):
            raise pickle.UnpicklingError(f"submodule {prefix}{key} is a {type(sub).__name__}")
        flat.update(flatten_module_state(sub, f"{prefix}{key}."))
    return flat
