"""On resume: have the files the stored rows were made from changed since?

Each row stores the :class:`~audit.vision.images.FileStamp` of the files it was read from (SHA-256 of the
bytes decoded, size, modification time): ``source_*`` for the face image (:mod:`audit.run.inputs`),
``ups_file_*`` for an output of the ``folder`` upsampler. The stamp is taken from the bytes the run
reads anyway, so an image is read once per run.

:func:`check_stored_sources` compares them with the files as they are now, without reading what has
not changed: one ``stat`` per stored file, and a SHA-256 pass only over a file whose size or
modification time differs (e.g. copied or touched), refused only if its content differs too. Such
a file is read again at every resume (its stamp is not updated): the cost of a copied face set is
one read per stored image per resume, as in the session that first read it.

Limits: a file rewritten with the same size and modification time (set on purpose, or within the
file system's timestamp resolution) is not noticed; rows stored before stamps existed, rows of files
that could not be read, and rows saying the ``folder`` upsampler had no output carry no stamp and
are not checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from pulse_engine.errors import InputImageError, PulseAuditError

from ..core.records import FaceItem
from ..core.schema import ITEM, OUTPUT_STAMP, SOURCE_STAMP, STAMP_FIELDS, upsampler_column
from ..vision.images import file_sha256
from .run_store import part_files

OUTPUT_FILE = upsampler_column("file")
"""The ``folder`` upsampler's output file name (its diagnostic ``file``)."""



def _stored_stamps(root: Path) -> set[tuple[str, str, str, str, int, int]]:
    """(kind, item_id, file name, sha256, bytes, mtime_ns) of every stamp in the parts (stamp columns only)."""
    wanted = [ITEM, OUTPUT_FILE, *(p + s for p in (SOURCE_STAMP, OUTPUT_STAMP) for s in STAMP_FIELDS)]
    found = set()
    for part in part_files(root / "parts"):
        with pq.ParquetFile(part) as handle:
            present = [name for name in wanted if name in handle.schema_arrow.names]
            columns = handle.read(columns=present, use_threads=False).to_pydict()
        for kind, prefix in (("source", SOURCE_STAMP), ("output", OUTPUT_STAMP)):
            if prefix + "sha256" not in columns:
                continue
            names = columns.get(OUTPUT_FILE) if kind == "output" else columns[ITEM]
            for item_id, name, *stamp in zip(columns[ITEM], names or columns[ITEM],
                                             *(columns[prefix + s] for s in STAMP_FIELDS)):
                if stamp[0] and None not in stamp:
                    found.add((kind, item_id, name, *stamp))
    return found


def _change(path: Path, sha256: str, size: int, mtime_ns: int) -> str:
    """'' if ``path`` still holds the bytes stamped, else how it differs."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no longer exists"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if info.st_size == size and info.st_mtime_ns == mtime_ns:
        return ""
    try:
        now = file_sha256(path)
    except InputImageError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return "" if now == sha256 else f"SHA-256 {sha256[:12]}… when read, {now[:12]}… now"


def check_stored_sources(root: Path, items: Sequence[FaceItem], outputs: Path | None = None) -> int:
    """Raise a one-line :class:`PulseAuditError` if a file a stored row of run folder ``root`` was made
    from changed; returns the number of files checked.

    Args:
        root: the run folder (its parts already validated, e.g. by :meth:`RunStore.open`).
        items: this session's faces; a face's file is looked up by its id, so a face set that moved
            (same items, same relative paths) is checked where it is now.
        outputs: the ``folder`` upsampler's folder, None for other upsamplers.
    """
    paths = {item.item_id: Path(item.path) for item in items}
    changed = []
    stamps = sorted(_stored_stamps(root))
    for kind, item_id, name, sha256, size, mtime_ns in stamps:
        if kind == "source" and item_id in paths:
            path, what = paths[item_id], "input image"
        elif kind == "output" and outputs is not None and name:
            path, what = Path(outputs) / name, "upsampler output"
        else:
            continue
        problem = _change(path, sha256, size, mtime_ns)
        if problem:
            changed.append(f"{what} {path} changed since its rows were stored ({problem})")
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise PulseAuditError(f"{root}: {changed[0]}{more}; the stored rows depend on it: restore it, use a new "
                              "--out, or pass --new-run to discard them")
    return len(stamps)
