"""A restricted unpickler for NVlabs ``stylegan2-ada-pytorch`` network pickles.

Those pickles are written by ``torch_utils.persistence``: every network module is stored as a call
``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the module's class name, its
constructor arguments, its ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, …) *and the
source text of the Python module defining the class*, which NVlabs' code ``exec``s on load.
Loading such a file with :func:`pickle.load` is therefore arbitrary code execution.

:class:`RestrictedUnpickler` resolves only the globals listed in :data:`ALLOWED_GLOBALS`:

- torch's tensor/parameter rebuild helpers, replaced by versions that refuse any view reaching past
  its storage or holding more elements than its storage (so a stride-0 tensor of a billion elements
  over one stored float is refused), and ``torch.storage._load_from_bytes``, replaced by
  :func:`.torch_file.read_legacy_stream` (the embedded storage is read only after its declared size
  is checked against the bytes actually there);
- ``collections.OrderedDict``, ``builtins.set``/``frozenset`` (protocol-2/3 pickles spell sets so),
  replaced by versions that accept only a list or tuple built by the stream itself (never a storage
  or bytes object, whose iteration size the file would choose);
- ``numpy.dtype`` and ``numpy.core.multiarray.scalar``, replaced by stand-ins that accept only plain
  numeric dtypes and turn a pickled NumPy scalar into a Python number;
- ``dnnlib.util.EasyDict`` → :class:`dict`;
- ``torch_utils.persistence._reconstruct_persistent_obj`` → a stub returning a
  :class:`PersistentObject` that records the class name, constructor arguments and state, and
  keeps only the length and SHA-256 of ``module_src``, which is never executed or compiled.

Any other global (``os.system``, ``builtins.exec``, ``subprocess.Popen``, a model class, torch's
storage constructors, …) makes :meth:`RestrictedUnpickler.find_class` raise :class:`ForbiddenGlobal`
*before* anything is called, so nothing from the file runs; no allowed callable allocates or loops
on a size the file gives. Persistent IDs are refused as well (plain pickle's default). Before
unpickling, :func:`.pickle_scan.scan_pickle` bounds nesting depth and opcode count
(:func:`restricted_load` does both).
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

import numpy as np
import torch

from ..errors import short_repr
from .pickle_scan import DEFAULT_BUDGET, LoadBudget, scan_pickle

__all__ = ["ALLOWED_GLOBALS", "MAX_MODULES", "MAX_NAME_CHARS", "STORAGE_TYPES", "TENSOR_GLOBALS", "ForbiddenGlobal",
           "PersistentObject", "RestrictedUnpickler", "StorageType", "child", "flatten_module_state",
           "restricted_load"]


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist; ``name`` is ``"module.qualname"``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"global {short_repr(name)} is not allowed")
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
        raise pickle.UnpicklingError(f"unsupported persistent object type {short_repr(meta.get('type'))}")
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, Mapping):
        raise pickle.UnpicklingError(f"persistent object {short_repr(meta['class_name'])} has a non-dict state")
    src = meta.get("module_src")
    src_bytes = src.encode("utf-8", "replace") if isinstance(src, str) else b""
    version = meta.get("version", -1)
    return PersistentObject(class_name=meta["class_name"], version=version if isinstance(version, int) else -1,
                            state=dict(state), module_src_chars=len(src_bytes),
                            module_src_sha256=hashlib.sha256(src_bytes).hexdigest())


def _load_storage_from_bytes(data: Any) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: the bytes are a legacy ``torch.save`` of one
    storage, read by :func:`.torch_file.read_legacy_stream` (sizes checked before allocation)."""
    from .torch_file import read_legacy_stream  # torch_file builds on this module

    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("storage payload is not bytes")
    storage = read_legacy_stream(io.BytesIO(bytes(data)), len(data))
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError(f"embedded storage holds a {type(storage).__name__}")
    return storage


def _no_hooks(hooks: Any) -> collections.OrderedDict:
    if hooks:  # backward hooks are never serialised by torch; a non-empty value is suspicious
        raise pickle.UnpicklingError("tensor with serialised backward hooks")
    return collections.OrderedDict()


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> torch.Tensor:
    """A tensor view of ``storage``, refused unless it lies inside the storage and holds no more
    elements than the storage (no stride-0 or overlapping view can multiply the stored data)."""
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a typed storage")
    if metadata:
        raise pickle.UnpicklingError("tensor with unsupported serialised metadata")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and len(size) <= DEFAULT_BUDGET.max_tensor_dims
            and all(type(n) is int for n in (offset, *size, *stride))):
        raise pickle.UnpicklingError("tensor with an invalid size, stride or offset")
    if offset < 0 or any(n < 0 for n in size + stride):
        raise pickle.UnpicklingError("tensor with a negative size, stride or offset")
    if max((offset, *size, *stride)) >= 1 << 62:  # before any product: a file-sized integer would take hours
        raise pickle.UnpicklingError("tensor with a size, stride or offset of 2**62 or more")
    stored = storage._size()  # element count, without the TypedStorage deprecation warning
    numel = math.prod(size)
    if numel and (numel > stored - offset or offset + sum((n - 1) * st for n, st in zip(size, stride)) >= stored):
        raise pickle.UnpicklingError(f"tensor of shape {short_repr(size)} needs more elements than its storage "
                                     f"holds ({stored:,})")
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


def _from_items(kind: type) -> Callable[..., Any]:
    """Stand-in for a container constructor taking at most one list/tuple/set of items."""
    def build(items: Any = ()) -> Any:
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise pickle.UnpicklingError(f"{kind.__name__} built from a {type(items).__name__}")
        return kind(items)

    build.__name__ = kind.__name__
    return build


@dataclass(frozen=True)
class StorageType:
    """What a pickled ``torch.<Name>Storage`` class resolves to: a marker naming a dtype, never a
    constructor (``torch.ByteStorage(2**31)`` would allocate 2 GiB for a 60-byte file)."""

    name: str
    dtype: torch.dtype

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


STORAGE_TYPES = {name: StorageType(name, dtype) for name, dtype in (
    ("FloatStorage", torch.float32), ("DoubleStorage", torch.float64), ("HalfStorage", torch.float16),
    ("BFloat16Storage", torch.bfloat16), ("LongStorage", torch.int64), ("IntStorage", torch.int32),
    ("ShortStorage", torch.int16), ("CharStorage", torch.int8), ("ByteStorage", torch.uint8),
    ("BoolStorage", torch.bool), ("UntypedStorage", torch.uint8))}

#: Globals both torch files and NVlabs pickles may name: containers and tensor rebuilders.
TENSOR_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("collections", "OrderedDict"): _from_items(collections.OrderedDict),
    ("builtins", "set"): _from_items(set),
    ("builtins", "frozenset"): _from_items(frozenset),
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}

#: (module, name) → the object the unpickler returns for it in an NVlabs network pickle.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    **TENSOR_GLOBALS,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): _SafeDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its BUILD can be guarded
    """Unpickler that resolves only the globals in ``allowed`` (default :data:`ALLOWED_GLOBALS`, see
    the module docstring), refuses persistent IDs, and refuses a BUILD opcode aimed at a tensor
    (``Tensor.__setstate__`` would call ``set_`` with sizes from the file, re-viewing or growing the
    storage after :func:`_rebuild_tensor_v2` checked it). The pure-Python implementation is
    iterative like the C one; its speed does not matter next to the opcode scan."""

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def load_build(self) -> None:
        if len(self.stack) >= 2 and isinstance(self.stack[-2], torch.Tensor):
            raise pickle.UnpicklingError("state applied to a tensor (BUILD opcode) is not allowed")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    def __init__(self, handle: IO[bytes], allowed: Mapping[tuple[str, str], Any] | None = None) -> None:
        super().__init__(handle)
        self.allowed = ALLOWED_GLOBALS if allowed is None else allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except (KeyError, TypeError):
            raise ForbiddenGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent IDs are not supported")


def restricted_load(handle: IO[bytes], budget: LoadBudget = DEFAULT_BUDGET) -> Any:
    """Check the pickle at ``handle`` against ``budget`` (:func:`.pickle_scan.scan_pickle`), then
    unpickle it with :class:`RestrictedUnpickler`; raises ForbiddenGlobal / UnpicklingError."""
    start = handle.tell()
    scan_pickle(handle, budget)
    handle.seek(start)
    return RestrictedUnpickler(handle).load()


def child(obj: PersistentObject, name: str) -> Any:
    """The submodule ``name`` of a captured module (None when absent)."""
    modules = obj.state.get("_modules") or {}
    return modules.get(name) if isinstance(modules, Mapping) else None


MAX_MODULES = 10_000
"""Most modules :func:`flatten_module_state` visits in one tree. NVIDIA's 1024 px StyleGAN2 ``G_ema`` has
about 130; the walk does constant work per module, so this bounds its time whatever the file nests."""
MAX_NAME_CHARS = 200
"""Longest dotted tensor or module name :func:`flatten_module_state` builds (NVlabs' longest is about 40, e.g.
``synthesis.b1024.conv0.resample_filter``): a long key shared through the memo at every level cannot make
the names, and their memory, grow with the product of its length and the tree's size."""


def flatten_module_state(obj: PersistentObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict``-style ``{dotted.name: tensor}`` of a captured module tree.

    Parameters and buffers are taken from each module's ``_parameters`` and ``_buffers``
    (non-persistent buffers excluded), walking ``_modules`` with an explicit stack (no recursion);
    ``None`` entries are skipped. The pickle scan bounds nesting depth but cannot see a module that
    the memo places inside itself (or under two parents), so the walk refuses a module met twice
    (by ``id``), a tree of more than :data:`MAX_MODULES` modules and a name longer than
    :data:`MAX_NAME_CHARS`, each with one line.
    """
    flat: dict[str, torch.Tensor] = {}
    pending: list[tuple[PersistentObject, str]] = [(obj, prefix)]
    seen: set[int] = set()
    while pending:
        module, at = pending.pop()
        if id(module) in seen:
            raise pickle.UnpicklingError(f"module {short_repr(at.rstrip('.') or '<root>')} appears twice in the "
                                         "module tree (a cycle or a shared submodule)")
        seen.add(id(module))
        if len(seen) > MAX_MODULES:
            raise pickle.UnpicklingError(f"module tree of more than {MAX_MODULES:,} modules")
        skip = module.state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            entries = module.state.get(group) or {}
            if not isinstance(entries, Mapping):
                raise pickle.UnpicklingError(f"{short_repr(at + group)} is not a dict")
            for key, value in entries.items():
                _check_name(at, key)
                if value is None or (group == "_buffers" and isinstance(skip, (set, frozenset)) and key in skip):
                    continue
                if not isinstance(value, torch.Tensor):
                    raise pickle.UnpicklingError(f"{short_repr(f'{at}{key}')} is a {type(value).__name__}, "
                                                 "not a tensor")
                flat[f"{at}{key}"] = value.detach()
        modules = module.state.get("_modules") or {}
        for key, sub in reversed(list(modules.items()) if isinstance(modules, Mapping) else []):
            if sub is None:
                continue
            _check_name(at, key)
            if not isinstance(sub, PersistentObject):
                raise pickle.UnpicklingError(f"submodule {short_repr(f'{at}{key}')} is a {type(sub).__name__}")
            pending.append((sub, f"{at}{key}."))
    return flat


def _check_name(at: str, key: Any) -> None:
    if not isinstance(key, str) or len(at) + len(key) > MAX_NAME_CHARS:
        raise pickle.UnpicklingError(f"name {short_repr(at)} + {short_repr(key)} is not a string of at most "
                                     f"{MAX_NAME_CHARS} characters")
