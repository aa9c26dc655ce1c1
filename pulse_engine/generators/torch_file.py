"""A bounded reader for files written by ``torch.save`` (zip and legacy formats), without ``torch.load``.

``torch.load(weights_only=True)`` executes no code, but it trusts sizes: a storage's element count
comes from the pickle and is allocated before the data is read (legacy format), views may extend
or repeat a storage, and its unpickler has the recursion problem described in
:mod:`.pickle_scan`. Here:

1. the file size is checked against :class:`.pickle_scan.LoadBudget`;
2. every pickle is scanned (depth, opcodes) before it is unpickled with
   :class:`.safe_pickle.RestrictedUnpickler` and the allowlist :data:`TORCH_FILE_GLOBALS`
   (containers, tensor rebuilders that refuse views larger than their storage, storage-type
   markers, ``argparse.Namespace``);
3. a storage is allocated only after its declared size has been checked against the bytes really
   in the file (the zip record's size; in the legacy format, the length header and the bytes left),
   so the memory used is at most the file's size, plus one copy while reading.

Big-endian files and pre-1.0 storage views are refused.
"""

from __future__ import annotations

import argparse
import io
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import short_repr
from .pickle_scan import (
    DEFAULT_BUDGET,
    LoadBudget,
    MalformedPickle,
    PickleBudgetError,
    scan_pickle,
)
from .safe_pickle import STORAGE_TYPES, TENSOR_GLOBALS, RestrictedUnpickler, StorageType

__all__ = ["TORCH_FILE_GLOBALS", "is_torch_file", "read_legacy_stream", "read_torch_file"]

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_MAGIC_PICKLE = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled LEGACY_MAGIC_NUMBER
LEGACY_PROTOCOL = 1001

#: What a torch file may name: containers, tensor rebuilders, storage-type markers, and the
#: ``argparse.Namespace`` of rosinality training checkpoints (a plain class: instances only get a
#: ``__dict__`` from the file).
TORCH_FILE_GLOBALS: dict[tuple[str, str], Any] = {
    **TENSOR_GLOBALS,
    **{("torch", name): marker for name, marker in STORAGE_TYPES.items()},
    ("argparse", "Namespace"): argparse.Namespace,
}
_NO_GLOBALS: dict[tuple[str, str], Any] = {}
_REBUILDERS = {key for key in TENSOR_GLOBALS if key[0] == "torch._utils"}


def is_torch_file(head: bytes) -> bool:
    """Whether a file's first bytes are those of a ``torch.save`` file (zip or legacy)."""
    return head.startswith((ZIP_MAGIC, LEGACY_MAGIC_PICKLE))


def read_torch_file(path: Path, budget: LoadBudget = DEFAULT_BUDGET) -> Any:
    """The object saved in ``path`` by ``torch.save``, read within ``budget``; tensors on the CPU.

    Raises:
        pickle.UnpicklingError: (or a subclass) the file is malformed, over budget, or names a
            global outside :data:`TORCH_FILE_GLOBALS`; the message is one short line.
        OSError: the file cannot be read.
    """
    size = path.stat().st_size
    if size > budget.max_file_bytes:
        raise PickleBudgetError(f"file of {size:,} bytes exceeds the {budget.max_file_bytes:,}-byte limit")
    with open(path, "rb") as handle:
        head = handle.read(len(LEGACY_MAGIC_PICKLE))
        handle.seek(0)
        if head.startswith(ZIP_MAGIC):
            return _read_zip(handle, size, budget)
        if head.startswith(LEGACY_MAGIC_PICKLE):
            return read_legacy_stream(handle, size, budget)
    raise pickle.UnpicklingError("not a torch.save file (neither zip nor legacy format)")


class _TorchUnpickler(RestrictedUnpickler):
    """Restricted unpickler whose persistent IDs name storages, resolved by ``storages``.

    With ``dry_run`` the tensor rebuilders return None and storages are not needed: the legacy
    format lists its storages in the pickle *before* their data, so it is unpickled once to learn
    them, then again with the checked storages.
    """

    def __init__(self, handle: IO[bytes], storages: Mapping[str, torch.TypedStorage] | None,
                 wanted: dict[str, tuple[StorageType, int]]) -> None:
        allowed = TORCH_FILE_GLOBALS
        if storages is None:
            allowed = {**allowed, **{key: _dry_rebuild for key in _REBUILDERS}}
        super().__init__(handle, allowed)
        self.storages, self.wanted = storages, wanted

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {short_repr(pid)}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, StorageType) or not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage reference {short_repr(pid)}")
        if len(pid) == 6 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (files written before PyTorch 1.0) are not supported")
        if self.wanted.setdefault(key, (kind, numel)) != (kind, numel):
            raise pickle.UnpicklingError(f"storage {short_repr(key)} is declared twice with different sizes")
        if len(self.wanted) > DEFAULT_BUDGET.max_tensors:
            raise PickleBudgetError(f"more than {DEFAULT_BUDGET.max_tensors:,} storages")
        if self.storages is None:
            return None
        return self.storages[key]


def _dry_rebuild(*args: Any, **kwargs: Any) -> None:
    return None


def _load(handle: IO[bytes], budget: LoadBudget, storages: Mapping[str, torch.TypedStorage] | None,
          wanted: dict[str, tuple[StorageType, int]], allowed: Mapping[tuple[str, str], Any] | None = None) -> Any:
    start = handle.tell()
    scan_pickle(handle, budget)
    handle.seek(start)
    if allowed is not None:
        return RestrictedUnpickler(handle, allowed).load()
    return _TorchUnpickler(handle, storages, wanted).load()


def _storage(data: bytearray, kind: StorageType) -> torch.TypedStorage:
    raw = torch.frombuffer(data, dtype=torch.uint8).untyped_storage() if data else torch.UntypedStorage(0)
    return torch.TypedStorage(wrap_storage=raw, dtype=kind.dtype, _internal=True)


def _read_zip(handle: IO[bytes], size: int, budget: LoadBudget) -> Any:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise MalformedPickle(f"damaged zip file ({type(exc).__name__})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > budget.max_tensors + 16:
            raise PickleBudgetError(f"zip file with {len(infos):,} entries")
        by_name = {info.filename: info for info in infos}
        roots = [name[:-len("data.pkl")] for name in by_name if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(roots) != 1:
            raise pickle.UnpicklingError("zip file without exactly one <name>/data.pkl (not written by torch.save)")
        root = roots[0]
        order = by_name.get(f"{root}byteorder")
        if order is not None and _read_entry(archive, order, 16) != b"little":
            raise pickle.UnpicklingError("big-endian torch file (not supported)")
        pickled = _read_entry(archive, by_name[f"{root}data.pkl"], budget.max_pickle_bytes)
        wanted: dict[str, tuple[StorageType, int]] = {}

        class _Lazy(dict):  # storages read on first reference, after their size is checked
            def __missing__(self, key: str) -> torch.TypedStorage:
                kind, numel = wanted[key]
                info = by_name.get(f"{root}data/{key}")
                nbytes = numel * kind.element_size
                if info is None or info.file_size != nbytes:
                    found = "no record" if info is None else f"{info.file_size:,} bytes"
                    raise MalformedPickle(f"storage {short_repr(key)} declares {numel:,} elements "
                                                 f"({nbytes:,} bytes) but the file has {found}")
                self[key] = _storage(bytearray(_read_entry(archive, info, size)), kind)
                return self[key]

        storages = _Lazy()
        return _load(io.BytesIO(pickled), budget, storages, wanted)


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise PickleBudgetError(f"zip entry {short_repr(info.filename)} of {info.file_size:,} bytes exceeds "
                                f"the {limit:,}-byte limit")
    try:
        with archive.open(info) as entry:
            data = entry.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise MalformedPickle(f"damaged zip entry {short_repr(info.filename)} "
                                     f"({type(exc).__name__})") from None
    if len(data) != info.file_size:
        raise MalformedPickle(f"zip entry {short_repr(info.filename)} has the wrong size")
    return data


def read_legacy_stream(handle: IO[bytes], size: int, budget: LoadBudget = DEFAULT_BUDGET) -> Any:
    """Read a legacy-format ``torch.save`` stream of ``size`` bytes (also the format of the storages
    embedded in NVlabs pickles): magic number, protocol, system info, the object, the storage keys,
    then per storage an int64 element count and the raw little-endian data."""
    start = handle.tell()
    if _load(handle, budget, None, {}, _NO_GLOBALS) != LEGACY_MAGIC_NUMBER:
        raise pickle.UnpicklingError("not a legacy torch file (bad magic number)")
    if _load(handle, budget, None, {}, _NO_GLOBALS) != LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("unsupported legacy torch protocol version")
    info = _load(handle, budget, None, {}, _NO_GLOBALS)
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise pickle.UnpicklingError("big-endian or unknown legacy torch file (not supported)")
    main = handle.tell()
    wanted: dict[str, tuple[StorageType, int]] = {}
    _load(handle, budget, None, wanted)  # dry run: which storages, of what type and size
    keys = _load(handle, budget, None, {}, _NO_GLOBALS)
    if not isinstance(keys, list) or sorted(keys) != sorted(wanted) or len(set(keys)) != len(keys):
        raise pickle.UnpicklingError("legacy torch file whose storage list does not match its contents")
    storages: dict[str, torch.TypedStorage] = {}
    for key in keys:
        kind, numel = wanted[key]
        header = handle.read(8)
        if len(header) != 8 or struct.unpack("<q", header)[0] != numel:
            raise MalformedPickle(f"storage {short_repr(key)} declares {numel:,} elements, "
                                         "its data header disagrees")
        nbytes = numel * kind.element_size
        if nbytes > size - (handle.tell() - start):
            raise MalformedPickle(f"storage {short_repr(key)} declares {nbytes:,} bytes, more than "
                                         "the file has left")
        data = bytearray(nbytes)
        if handle.readinto(data) != nbytes:
            raise MalformedPickle("truncated legacy torch file")
        storages[key] = _storage(data, kind)
    end = handle.tell()
    handle.seek(main)
    value = _load(handle, budget, storages, wanted)
    handle.seek(end)
    return value
