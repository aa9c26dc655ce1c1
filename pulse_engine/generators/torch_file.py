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
3. a zip file's central directory is located and walked here first, as :mod:`zipfile` would parse
   it (:func:`_check_zip_directory`), and refused when it holds more entries or bytes than a file
   within the budget needs, before :mod:`zipfile` builds an object per entry;
4. a storage is allocated only after its declared size has been checked against the bytes really
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

__all__ = ["TORCH_FILE_GLOBALS", "ZIP_ENTRY_MAX_BYTES", "is_torch_file", "read_legacy_stream", "read_torch_file"]

ZIP_MAGIC = b"PK\x03\x04"
# The zip records _check_zip_directory reads, as zipfile reads them (same logic in CPython 3.11.7 to 3.13.0).
_EOCD = struct.Struct("<4s4H2LH")  # signature, disk, directory disk, entries here, entries, size, offset, comment
_EOCD64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk of the ZIP64 record, its offset, disks
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, entries here, entries, size, offset
_ENTRY = struct.Struct("<4s4B4HL2L5H2L")  # one central-directory entry; name, extra, comment lengths at 28
ZIP_ENTRY_MAX_BYTES = 512
"""Central-directory bytes allowed per zip entry: 46 fixed, a name (``<file stem>/data/<key>``, the stem
at most 255 bytes) and a 28-byte ZIP64 extra field fit with room to spare."""
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
    _check_zip_directory(handle, size, budget.max_tensors + 16)
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise MalformedPickle(f"damaged zip file ({type(exc).__name__})") from None
    with archive:
        by_name = {info.filename: info for info in archive.infolist()}
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


def _check_zip_directory(handle: IO[bytes], size: int, max_entries: int) -> None:
    """Refuse a zip file whose central directory has more than ``max_entries`` entries or more than
    ``max_entries`` × :data:`ZIP_ENTRY_MAX_BYTES` bytes, reading only the end records and the entry
    headers (never more than 64 KiB at once).

    :class:`zipfile.ZipFile` reads the whole directory into memory and builds a ``ZipInfo`` per
    entry, so a 45 MiB file listing a million one-byte entries took 360 MiB before any count could
    be checked. The directory is located exactly as ``zipfile._EndRecData`` / ``_EndRecData64`` /
    ``_RealGetContents`` locate it (the end record at the very end, else the last signature in the
    final 64 KiB; a ZIP64 record directly before it overrides its sizes; the directory ends where
    those records begin) and walked the way zipfile walks it (46-byte headers, each followed by its
    name, extra field and comment, until the declared size is used up), so the entries counted here
    are the entries zipfile would build. A directory zipfile would reject is left to zipfile.
    """
    end = _end_record(handle, size)  # where the end record starts
    if end is None:
        return
    handle.seek(end)
    _, _, _, _, entries, directory, _, _ = _EOCD.unpack(handle.read(_EOCD.size))
    if end >= _EOCD64_LOCATOR.size:
        handle.seek(end - _EOCD64_LOCATOR.size)
        signature, disk, _, disks = _EOCD64_LOCATOR.unpack(handle.read(_EOCD64_LOCATOR.size))
        if signature == b"PK\x06\x07":
            if disk != 0 or disks > 1 or end < _EOCD64_LOCATOR.size + _EOCD64.size:
                return  # zipfile refuses these
            handle.seek(end - _EOCD64_LOCATOR.size - _EOCD64.size)
            record = _EOCD64.unpack(handle.read(_EOCD64.size))
            if record[0] == b"PK\x06\x06":
                entries, directory = record[7], record[8]
                end -= _EOCD64_LOCATOR.size + _EOCD64.size
    max_bytes = max_entries * ZIP_ENTRY_MAX_BYTES
    if entries > max_entries or directory > max_bytes:
        raise PickleBudgetError(f"zip directory of {entries:,} entries and {directory:,} bytes exceeds the budget "
                                f"of {max_entries:,} entries and {max_bytes:,} bytes")
    if directory > end:
        return  # zipfile refuses it
    walked, count = 0, 0
    handle.seek(end - directory)
    while walked < directory:
        header = handle.read(_ENTRY.size)
        if walked + _ENTRY.size > directory or len(header) != _ENTRY.size or not header.startswith(b"PK\x01\x02"):
            return  # zipfile refuses it
        count += 1
        if count > max_entries:
            raise PickleBudgetError(f"zip directory of more than {max_entries:,} entries (it declares {entries:,})")
        skip = sum(struct.unpack_from("<3H", header, 28))  # name, extra field and comment lengths
        walked += _ENTRY.size + skip
        handle.seek(skip, io.SEEK_CUR)


def _end_record(handle: IO[bytes], size: int) -> int | None:
    """Offset of the zip end-of-central-directory record, found as ``zipfile._EndRecData`` finds it,
    or None when there is none."""
    handle.seek(max(size - _EOCD.size, 0))
    tail = handle.read(_EOCD.size)
    if len(tail) == _EOCD.size and tail.startswith(b"PK\x05\x06") and tail.endswith(b"\0\0"):
        return size - _EOCD.size
    start = max(size - (1 << 16) - _EOCD.size, 0)
    handle.seek(start)
    tail = handle.read()
    found = tail.rfind(b"PK\x05\x06")
    return start + found if found >= 0 and len(tail) - found >= _EOCD.size else None


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
