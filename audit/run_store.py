"""The run store: one directory per audit run, resumable and crash-safe.

Layout of ``OUT/``::

    run.json                 config (the resume fingerprint), provenance (:mod:`audit.provenance`),
                             one entry per session (start time, git commit, package versions)
    parts/part-000001.parquet, …   rows, append-only, one file per flush (the source of truth)
    results.parquet          the concatenation of the parts (rewritten after every flush)
    images/<safe id>/{truth,lr,out_<k>}.png
    .lock                    held (flock) while a process writes; released by the kernel on death

Atomicity: every file is written to a temporary name in its own folder, flushed, fsync'ed and
renamed over its final name (``os.replace``), so at any instant a file is either absent or whole.
Images are written before the part that references them, and a part is written only for rows not
already stored; a SIGKILL at any instant therefore loses at most the rows of the flush in flight,
never a completed row, and never duplicates one. Leftover temporary files are removed on open.

Kill tests stop a writer at a known point with the hook :data:`HOLD_VARIABLE` instead of racing a timer.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pulse_engine.errors import PulseAuditError

from .images import to_image
from .provenance import git_commit, package_versions, utc_now

LEADING_COLUMNS = ("run_id", "item_id", "sample", "input_kind", "group", "error")
Key = tuple[str, int]
HOLD_VARIABLE = "PULSE_AUDIT_TEST_HOLD"
"""Test hook, ``<point>:<n>:<fifo>``: the process stops the n-th time it reaches ``point`` (``write``: a
file's temporary copy is complete, not yet renamed; ``part``: a part has been stored) and waits until a
tester opens the named pipe ``fifo`` for writing and closes it, or a signal ends the process."""
_reached: dict[str, int] = {}


def hold_point(point: str) -> None:
    """Count ``point`` and wait there if :data:`HOLD_VARIABLE` names this occurrence (no-op otherwise)."""
    spec = os.environ.get(HOLD_VARIABLE)
    if not spec:
        return
    name, count, fifo = spec.split(":", 2)
    _reached[point] = _reached.get(point, 0) + 1
    if name == point and _reached[point] == int(count):
        with open(fifo, "rb") as gate:
            gate.read()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    hold_point("write")
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Atomically write ``table`` as Parquet."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write(path, buffer.getvalue())


def safe_id(item_id: str, max_chars: int = 120) -> str:
    """A folder name for ``item_id``: unsafe characters become ``_``, plus a short hash when changed
    or cut to ``max_chars`` (so that distinct ids never share a folder and no name is too long)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", item_id).strip(".") or "_"
    if safe != item_id or len(safe) > max_chars:
        safe = safe[:max_chars] + "-" + uuid.uuid5(uuid.NAMESPACE_URL, item_id).hex[:8]
    return safe


def classifier_column(side: str, classifier: str, *parts: str) -> str:
    """Column name ``<side>_<classifier>_<part>_…``; side is ``in`` (true HR) or ``out`` (output),
    e.g. ``out_age-gender_gender_p_female``, ``in_skin-tone_ita``, ``out_identity_face``."""
    return "_".join((side, classifier, *parts))


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A table with the union of the rows' keys as columns (absent values are null)."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    return pa.table({name: [row.get(name) for row in rows] for name in names})


def column_order(names: Iterable[str]) -> list[str]:
    """Canonical column order: ids, labels, paths, upsampler diagnostics, timings, input-side and
    output-side classifier columns, comparisons."""
    prefixes = ("label_", "label_source_", "path_", "ups_", "t_", "in_", "out_")

    def rank(name: str) -> tuple[int, str]:
        if name in LEADING_COLUMNS:
            return LEADING_COLUMNS.index(name), ""
        for i, prefix in enumerate(prefixes):
            if name.startswith(prefix) and not (prefix == "label_" and name.startswith("label_source_")):
                return len(LEADING_COLUMNS) + i, name
        return len(LEADING_COLUMNS) + len(prefixes), name

    return sorted(names, key=rank)


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate parts whose columns may differ (missing → null; int promoted to float if mixed)."""
    if not tables:
        return pa.table({"run_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string()),
                         "sample": pa.array([], pa.int64()), "error": pa.array([], pa.string())})
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.select(column_order(table.column_names))


class RunStore:
    """An open run directory. Use :meth:`open`; call :meth:`close` (or use ``with``) at the end."""

    def __init__(self, root: Path, run_id: str, lock: Any, tables: list[pa.Table], next_part: int) -> None:
        self.root, self.run_id, self._lock = root, run_id, lock
        self.tables, self.next_part = tables, next_part
        self.done: set[Key] = set()
        for table in tables:
            self.done.update(zip(table.column("item_id").to_pylist(), table.column("sample").to_pylist()))

    @classmethod
    def open(cls, root: Path, config: Mapping[str, Any],
             provenance: Callable[[], Mapping[str, Any]] = dict) -> RunStore:
        """Open or create ``root``. A new run writes ``run.json`` with ``config`` and ``provenance()``
        (called only then); an existing one must have been made with an equal ``config``."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / ".lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise PulseAuditError(f"{root} is in use by another running audit; wait for it or use another "
                                  "--out") from exc
        try:
            return cls._open_locked(root, lock, json.loads(json.dumps(config)), provenance)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def _open_locked(cls, root: Path, lock: Any, config: dict[str, Any],
                     provenance: Callable[[], Mapping[str, Any]]) -> RunStore:
        run_file = root / "run.json"
        if not run_file.exists() and any(not p.name.startswith(".") for p in root.iterdir()):
            raise PulseAuditError(f"{root} is not empty and holds no run.json; use a new --out")
        for folder in (root, root / "parts", *(root / "images").glob("*")):
            for stale in folder.glob(".*.tmp"):
                stale.unlink()
        session = {"started": utc_now(), "git_commit": git_commit(), "packages": package_versions()}
        if run_file.exists():
            try:
                record = json.loads(run_file.read_text())
            except (OSError, ValueError) as exc:
                raise PulseAuditError(f"{run_file}: unreadable ({exc}); use a new --out") from exc
            cls._check_config(root, record.get("config", {}), config)
            record.setdefault("sessions", []).append(session)
        else:
            record = {"run_id": f"{root.name}-{uuid.uuid4().hex[:8]}", "created": session["started"],
                      "config": config, **session, **provenance(), "sessions": [session]}
        atomic_write(run_file, json.dumps(record, indent=2, default=str).encode())
        tables, next_part = cls._read_parts(root / "parts")
        store = cls(root, record["run_id"], lock, tables, next_part)
        if tables:
            store.consolidate()
        return store

    @staticmethod
    def _check_config(root: Path, stored: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        if changed:
            diffs = ", ".join(f"{k}: run.json has {stored.get(k)!r}, now {config.get(k)!r}" for k in changed[:4])
            raise PulseAuditError(f"{root} holds a run with other settings ({diffs}); resume with the same "
                                  "options or use a new --out")

    @staticmethod
    def _read_parts(folder: Path) -> tuple[list[pa.Table], int]:
        parts = sorted(folder.glob("part-*.parquet"))
        tables = []
        for part in parts:
            try:
                tables.append(pq.read_table(part))
            except (OSError, pa.ArrowException) as exc:
                raise PulseAuditError(f"{part}: unreadable result part ({exc}); move it away to redo its rows") from exc
        numbers = [int(p.stem.split("-")[1]) for p in parts]
        return tables, max(numbers, default=0) + 1

    def image_path(self, item_id: str, name: str) -> str:
        """Path, relative to the run folder, of image ``name`` (e.g. ``out_0``) of ``item_id``."""
        return f"images/{safe_id(item_id)}/{name}.png"

    def save_image(self, item_id: str, name: str, image: torch.Tensor) -> str:
        """Atomically write a (3, H, W) [0, 1] tensor as PNG; returns its relative path."""
        relative = self.image_path(item_id, name)
        buffer = io.BytesIO()
        to_image(image).save(buffer, format="PNG")
        atomic_write(self.root / relative, buffer.getvalue())
        return relative

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store rows (each with ``item_id`` and ``sample``) not stored yet, as one atomic part,
        then refresh ``results.parquet``."""
        fresh = [dict(row, run_id=self.run_id) for row in rows if (row["item_id"], row["sample"]) not in self.done]
        if not fresh:
            return
        table = rows_to_table(fresh)
        write_parquet(table, self.root / "parts" / f"part-{self.next_part:06d}.parquet")
        self.next_part += 1
        self.tables.append(table)
        self.done.update((row["item_id"], row["sample"]) for row in fresh)
        hold_point("part")
        self.consolidate()

    def consolidate(self) -> Path:
        """Atomically (re)write ``results.parquet`` from all parts; returns its path."""
        path = self.root / "results.parquet"
        write_parquet(concat(self.tables), path)
        return path

    def close(self) -> None:
        """Release the run folder."""
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_results(root: Path) -> pa.Table:
    """All stored rows of a run, read from its parts (complete even while the run is going on)."""
    tables, _ = RunStore._read_parts(Path(root) / "parts")
    return concat(tables)
