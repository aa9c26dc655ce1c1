"""On resume: have the files the stored rows were made from changed since?

Each row stores the :class:`~audit.vision.images.FileStamp` of what the run met at the paths it read
(SHA-256 of the bytes read, size, modification and inode change times, inode, device): ``source_*``
for the face image (:mod:`audit.run.inputs`), ``ups_file_*`` for the ``folder`` upsampler's output
(with its name, ``ups_file``). The stamp is taken from the bytes the run reads anyway, so an image is
read once per run. Failed rows are stamped too: a file that was read but could not be used by the
SHA-256 of its bytes; one that could not be read (not a regular file, over budget, unopenable) by its
``stat`` fields only; a path where there was no file, and a ``folder`` output that was not found, as
such (:data:`~audit.vision.images.MISSING`). Failed rows are stored rows, never retried on resume,
so without their stamps a file that appeared or became readable would go unnoticed.

:func:`check_stored_sources` compares the stamps with the files as they are now, without reading what
has not changed: one ``stat`` per stored file (and for each stored ``folder`` output, the look-up the
upsampler would make now: a file that appeared, or another candidate name that would now be read
first, is a change). A SHA-256 pass is made only over a file whose ``stat`` differs from its stamp
(e.g. a copied face set: another inode; or a remount that renumbered the device), refused only if its
content differs too. Such a file is read again at every resume (its stamp is not updated): the cost of a
copied face set is one read per stored image per resume, as in the session that first read it. A file
that could not be read when stored and whose ``stat`` differs now is refused without reading it.

Limits: the inode change time cannot be set back by ``touch`` or ``os.utime``, but can by changing the
system clock (or with raw disk access); a rewrite within the file system's timestamp resolution of the
moment the run read the file, keeping its size and inode, is not noticed. Stamps stored before the
inode change time, inode and device were recorded are compared by size and modification time only
(such a run still resumes); rows stored before stamps existed, and failed rows of a path whose
``stat`` failed (e.g. a name too long), carry no stamp and are not checked. UCPR rows carry none: they
are averages of the faces, whose own rows are stored first and checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from pulse_engine.errors import InputImageError, PulseAuditError

from ..core.records import FaceItem
from ..core.schema import ITEM, OUTPUT_STAMP, SAMPLE, SOURCE_STAMP, STAMP_FIELDS, upsampler_column
from ..upsamplers import folder_output
from ..vision.images import FileStamp, file_sha256
from .run_store import part_files

OUTPUT_FILE = upsampler_column("file")
"""The ``folder`` upsampler's output file name (its diagnostic ``file``; "" when it found none)."""
SourceStamp = tuple[str, FileStamp]
"""(item_id, stamp) of a stored face file."""
OutputStamp = tuple[str, int, str, FileStamp | None]
"""(item_id, sample, file name, stamp) of a stored ``folder`` output."""


def _stored_stamps(root: Path) -> tuple[set[SourceStamp], set[OutputStamp]]:
    """The distinct stamps of the parts' rows (reading the stamp columns only)."""
    wanted = [ITEM, OUTPUT_FILE, *(p + s for p in (SOURCE_STAMP, OUTPUT_STAMP) for s in STAMP_FIELDS)]
    sources, outputs = set(), set()
    for part in part_files(root / "parts"):
        with pq.ParquetFile(part) as handle:
            names = set(handle.schema_arrow.names)
            present = [name for name in wanted if name in names] + ([SAMPLE] if OUTPUT_FILE in names else [])
            rows = handle.read(columns=present, use_threads=False).to_pylist()
        for row in rows:
            if (stamp := FileStamp.from_columns(row, SOURCE_STAMP)) is not None:
                sources.add((row[ITEM], stamp))
            if row.get(OUTPUT_FILE) is not None:
                outputs.add((row[ITEM], row[SAMPLE], row[OUTPUT_FILE], FileStamp.from_columns(row, OUTPUT_STAMP)))
    return sources, outputs


def _change(path: Path, stamp: FileStamp | None) -> str:
    """'' if what is at ``path`` still matches ``stamp`` (or there is a file and no stamp), else how it differs."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "" if stamp is not None and stamp.absent else "no longer exists"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if stamp is None or stamp.same_stat(info):
        return ""
    if stamp.absent:
        return "there was no such file then"
    if not stamp.sha256:
        return "it could not be read then, and its size, times or inode changed since"
    try:
        now = file_sha256(path)
    except InputImageError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return "" if now == stamp.sha256 else f"SHA-256 {stamp.sha256[:12]}… when read, {now[:12]}… now"


def _output_change(folder: Path, item_id: str, sample: int, name: str, stamp: FileStamp | None) -> tuple[Path, str]:
    """The stored output file of a row (or the one that appeared) and how it changed ('' if it did not)."""
    now = folder_output(folder, item_id, sample)
    if not name:
        return (now, f"no output for {item_id!r} sample {sample} was found then") if now else (folder, "")
    path = folder / name
    if now is not None and now.name != name:
        return path, f"{now.name} would be read in its place now"
    return path, _change(path, stamp)


def check_stored_sources(root: Path, items: Sequence[FaceItem], outputs: Path | None = None) -> int:
    """Raise a one-line :class:`PulseAuditError` if a file a stored row of run folder ``root`` was made
    from changed; returns the number of stamps checked.

    Args:
        root: the run folder (its parts already validated, e.g. by :meth:`RunStore.open`).
        items: this session's faces; a face's file is looked up by its id, so a face set that moved
            (same items, same relative paths) is checked where it is now.
        outputs: the ``folder`` upsampler's folder, None for other upsamplers.
    """
    paths = {item.item_id: Path(item.path) for item in items}
    sources, stored_outputs = _stored_stamps(root)
    changed = []
    for item_id, stamp in sorted(sources, key=lambda pair: pair[0]):
        if item_id in paths and (problem := _change(paths[item_id], stamp)):
            changed.append(f"input image {paths[item_id]} changed since its rows were stored ({problem})")
    if outputs is not None:
        for item_id, sample, name, stamp in sorted(stored_outputs, key=lambda row: row[:3]):
            path, problem = _output_change(Path(outputs), item_id, sample, name, stamp)
            if problem:
                changed.append(f"upsampler output {path} changed since its rows were stored ({problem})")
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise PulseAuditError(f"{root}: {changed[0]}{more}; the stored rows depend on it: restore it, use a new "
                              "--out, or pass --new-run to discard them")
    return len(sources) + (len(stored_outputs) if outputs is not None else 0)
