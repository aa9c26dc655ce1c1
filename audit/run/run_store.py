"""The run store: one directory per audit run, resumable and crash-safe.

Layout of ``OUT/``::

    run.json                 config and inputs (the resume fingerprint), provenance (:mod:`audit.run.provenance`),
                             one entry per session (start time, git commit, package versions, engine,
                             device type, search threads; a resume under others is refused unless allowed)
    parts/part-000001.parquet, …   rows, append-only, one file per flush (the source of truth)
    results.parquet          the concatenation of the parts, written when a session closes normally;
                             it records which parts it holds, so readers (:func:`read_results`) use
                             the parts instead when it is missing or stale (e.g. after a kill)
    images/<safe id>/{truth,lr,out_<k>}.png
    .lock                    held (flock) while a process writes; released by the kernel on death

Atomicity: every file is written to a temporary name in its own folder, flushed, fsync'ed and
renamed over its final name (``os.replace``), so at any instant a file is either absent or whole.
Images are written before the part that references them, and a part is written only for rows not
already stored; a SIGKILL at any instant therefore loses at most the rows of the flush in flight,
never a completed row, and never duplicates one. Leftover temporary files are removed on open.
An OS error while writing (disk full, permissions) is a one-line error; what was stored stays.
One process writes a run (the driver, :mod:`audit.run.harness`): compute may happen elsewhere (chunk workers
return rows and PNG bytes), but only the driver writes them, images (:meth:`RunStore.write_image`) before
the part of their rows.

Resume: the options and the inputs (SHA-256 of the weights files, the face set's items and labels:
:func:`audit.run.provenance.run_inputs`) must equal those in ``run.json``, else the run is refused with one
line naming what changed (``new_run`` discards the stored rows instead). Every part is checked when
read (its name; its schema: key columns present, every column a string, number or flag column, of
the documented kind (:func:`audit.core.schema.column_kind`) and of the same kind in every part; the run
id of its rows; no key stored twice): a copied, foreign or malformed part is a one-line error naming it,
never merged.

Cost: a flush writes one part of its own rows and checks their keys in an in-memory set, so its cost
does not grow with the run; opening reads only the key columns of the parts (``benchmarks/run_store.py``).

Kill tests stop a writer at a known point with the hook :data:`HOLD_VARIABLE` instead of racing a timer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import select
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image

from pulse_engine.errors import PulseAuditError, WeightsError, short_repr
from pulse_engine.generators.card_file import read_card

from ..core.schema import (
    BOOL,
    ERROR,
    FLOAT,
    INTEGER,
    ITEM,
    RECORD_CONFIG,
    RECORD_CREATED,
    RECORD_GIT_COMMIT,
    RECORD_INPUTS,
    RECORD_MIXED,
    RECORD_PACKAGES,
    RECORD_RUN_ID,
    RECORD_SESSIONS,
    RECORD_STARTED,
    RECORD_TABLE_SCHEMA,
    RUN_ID,
    RUN_JSON,
    SAMPLE,
    STRING,
    TABLE_SCHEMA,
    column_kind,
    column_order,
    record_problem,
    record_value,
)
from ..vision.images import to_image
from .provenance import git_commit, package_versions, session_differences, utc_now

RESULTS = "results.parquet"
RUN_RECORD_MAX_BYTES = 16 << 20
"""Largest ``run.json`` read (a run's record is a few kB plus about 1 kB per session)."""
Key = tuple[str, int]
HOLD_VARIABLE = "PULSE_AUDIT_TEST_HOLD"
"""Test hook, ``<point>:<n>:<fifo>``: the process stops the n-th time it reaches ``point`` (``write``: a
file's temporary copy is complete, not yet renamed; ``part``: a part has been stored) and waits until a
tester opens the named pipe ``fifo`` for writing and closes it, or a signal ends the process; it goes on
by itself after :data:`HOLD_LIMIT_S` (a tester that died never leaves it waiting for ever)."""
HOLD_LIMIT_S = 900
_reached: dict[str, int] = {}


def hold_point(point: str) -> None:
    """Count ``point`` and wait there if :data:`HOLD_VARIABLE` names this occurrence (no-op otherwise)."""
    spec = os.environ.get(HOLD_VARIABLE)
    if not spec:
        return
    name, count, fifo = spec.split(":", 2)
    _reached[point] = _reached.get(point, 0) + 1
    if name == point and _reached[point] == int(count):
        gate = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the tester's non-blocking open now succeeds
        try:
            select.select([gate], [], [], HOLD_LIMIT_S)  # readable once the tester has opened and closed it
        finally:
            os.close(gate)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the whole new one.
    An OS error (disk full, permissions, …) is a one-line :class:`PulseAuditError`; the old file is kept."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        hold_point("write")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PulseAuditError(f"cannot write {path}: {exc.strerror or exc}; everything stored before is kept "
                              "(free space or fix the folder, then run the same command to resume)") from exc
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


HASH_SUFFIX = re.compile(r"-[0-9a-f]{8}$")
"""The end of a name :func:`safe_id` made by adding a hash; an id that already ends so gets one too."""


def safe_id(item_id: str, max_chars: int = 120) -> str:
    """A folder name for ``item_id``: unsafe characters become ``_``, plus a short hash of the id when
    changed, cut to ``max_chars``, or ending like such a hash (so that distinct ids share a folder only if
    their 32-bit hashes collide as well, and no name is too long)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", item_id).strip(".") or "_"
    if safe != item_id or len(safe) > max_chars or HASH_SUFFIX.search(safe):
        safe = safe[:max_chars] + "-" + uuid.uuid5(uuid.NAMESPACE_URL, item_id).hex[:8]
    return safe


IMAGE_PATH = re.compile(r"images/[A-Za-z0-9_-][A-Za-z0-9._-]*/[A-Za-z0-9_-][A-Za-z0-9._-]*\.png")
"""What a run-relative image path looks like (:func:`image_path`): one folder below ``images/``, no escape."""


def image_path(item_id: str, name: str) -> str:
    """Path, relative to the run folder, of image ``name`` (e.g. ``out_0``) of ``item_id``."""
    return f"images/{safe_id(item_id)}/{name}.png"


def png_bytes(image: Image.Image) -> bytes:
    """The PNG bytes the store writes for an 8-bit image (a tensor's: ``png_bytes(to_image(tensor))``)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A table with the union of the rows' keys as columns (absent values are null)."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    return pa.table({name: [row.get(name) for row in rows] for name in names})


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate parts whose columns may differ (missing → null; int promoted to float if mixed)."""
    if not tables:
        return pa.table({RUN_ID: pa.array([], pa.string()), ITEM: pa.array([], pa.string()),
                         SAMPLE: pa.array([], pa.int64()), ERROR: pa.array([], pa.string())})
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.select(column_order(table.column_names))


class RunStore:
    """An open run directory. Use :meth:`open`; call :meth:`close` (or use ``with``) at the end."""

    def __init__(self, root: Path, run_id: str, lock: Any, done: set[Key], next_part: int) -> None:
        self.root, self.run_id, self._lock = root, run_id, lock
        self.done, self.next_part = done, next_part

    @classmethod
    def open(cls, root: Path, config: Mapping[str, Any], provenance: Callable[[], Mapping[str, Any]] = dict,
             inputs: Mapping[str, str] | None = None, new_run: bool = False, session: Mapping[str, Any] | None = None,
             allow_mixed: bool = False) -> RunStore:
        """Open or create ``root``. A new run writes ``run.json`` with ``config``, ``inputs`` (name → SHA-256 of
        what the rows depend on, e.g. weights files) and ``provenance()`` (called only then); an existing one
        must have been made with an equal ``config`` and equal ``inputs``, unless ``new_run`` discards it.
        Every session is recorded (start, git commit, package versions, and ``session``, e.g. the engine and the
        search threads); a session that differs from an earlier one of the run in any of these
        (:func:`~audit.run.provenance.session_differences`) is refused unless ``allow_mixed``, which records
        the differences in its entry."""
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock = open(root / ".lock", "a+")
        except OSError as exc:
            raise PulseAuditError(f"cannot use {root} as a run folder: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise PulseAuditError(f"{root} is in use by another running audit; wait for it or use another "
                                  "--out") from exc
        try:
            checked = json.loads(json.dumps(config)), json.loads(json.dumps(inputs or {}))
            return cls._open_locked(root, lock, *checked, provenance, new_run, dict(session or {}), allow_mixed)
        except OSError as exc:
            lock.close()
            raise PulseAuditError(f"cannot use {root} as a run folder: {exc.strerror or exc}") from exc
        except BaseException:
            lock.close()
            raise

    @classmethod
    def _open_locked(cls, root: Path, lock: Any, config: dict[str, Any], inputs: dict[str, str],
                     provenance: Callable[[], Mapping[str, Any]], new_run: bool, extra: dict[str, Any],
                     allow_mixed: bool) -> RunStore:
        run_file = root / RUN_JSON
        if not run_file.exists() and any(not p.name.startswith(".") for p in root.iterdir()):
            raise PulseAuditError(f"{root} is not empty and holds no run.json; use a new --out")
        if new_run and run_file.exists():
            discard_run(root)
        for folder in (root, root / "parts", *(root / "images").glob("*")):
            for stale in folder.glob(".*.tmp"):
                stale.unlink()
        session = this_session(extra)
        if run_file.exists():
            record = read_run_record(root)
            cls._check_schema(root, record_value(record, RECORD_TABLE_SCHEMA))
            cls._check_config(root, record_value(record, RECORD_CONFIG), config)
            cls._check_inputs(root, record.setdefault(RECORD_INPUTS, inputs), inputs)
            sessions = record_value(record, RECORD_SESSIONS)
            cls._check_sessions(root, sessions, session, allow_mixed)
            record[RECORD_SESSIONS] = [*sessions, session]
        else:
            record = {RECORD_RUN_ID: f"{root.name}-{uuid.uuid4().hex[:8]}", RECORD_CREATED: session[RECORD_STARTED],
                      RECORD_TABLE_SCHEMA: TABLE_SCHEMA, RECORD_CONFIG: config, RECORD_INPUTS: inputs, **session,
                      **provenance(), RECORD_SESSIONS: [session]}
        done, next_part = stored_keys(root / "parts", record[RECORD_RUN_ID])
        atomic_write(run_file, json.dumps(record, indent=2, default=str).encode())
        return cls(root, record[RECORD_RUN_ID], lock, done, next_part)

    @staticmethod
    def _check_schema(root: Path, stored: Any) -> None:
        if stored != TABLE_SCHEMA:
            raise PulseAuditError(f"{root} holds a run with the column names of table schema {short_repr(stored)} "
                                  f"(this version writes schema {TABLE_SCHEMA}, see audit/core/schema.py), so it "
                                  "cannot be resumed (reports still read it): use a new --out, or --new-run to discard "
                                  "its rows")

    @staticmethod
    def _check_config(root: Path, stored: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        if changed:
            diffs = ", ".join(f"{k}: run.json has {stored.get(k)!r}, now {config.get(k)!r}" for k in changed[:4])
            raise PulseAuditError(f"{root} holds a run with other settings ({diffs}); resume with the same "
                                  "options, use a new --out, or pass --new-run to discard its rows")

    @staticmethod
    def _check_inputs(root: Path, stored: Mapping[str, str], inputs: Mapping[str, str]) -> None:
        changed = [k for k in dict.fromkeys([*stored, *inputs]) if stored.get(k) != inputs.get(k)]
        if changed:
            name, before, now = changed[0], stored.get(changed[0]), inputs.get(changed[0])
            what = (f"SHA-256 {before[:12]}… when the run began, {now[:12]}… now" if before and now else
                    "not used when the run began" if now else "used when the run began, not now")
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise PulseAuditError(f"{root}: {name} changed since this run began ({what}){more}; the stored rows "
                                  "depend on it: restore it, use a new --out, or pass --new-run to discard them")

    @staticmethod
    def _check_sessions(root: Path, sessions: Sequence[Any], session: dict[str, Any], allow_mixed: bool) -> None:
        differences = changes_since(sessions, session)
        if differences and not allow_mixed:
            more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
            raise PulseAuditError(f"{root}: its rows so far were computed by other code or settings "
                                  f"({'; '.join(differences[:3])}{more}), so rows stored now could differ from "
                                  "theirs: resume with the same versions, device and --threads, pass --allow-mixed "
                                  "(allow_mixed = true in a TOML config; a run already mixed always needs it) to mix "
                                  "them (each session stays listed in run.json and the report), use a new --out, or "
                                  "pass --new-run to discard them")
        if differences:
            session[RECORD_MIXED] = differences

    def image_path(self, item_id: str, name: str) -> str:
        """Path, relative to the run folder, of image ``name`` (e.g. ``out_0``) of ``item_id``."""
        return image_path(item_id, name)

    def save_image(self, item_id: str, name: str, image: torch.Tensor) -> str:
        """Atomically write a (3, H, W) [0, 1] tensor as PNG; returns its relative path."""
        return self.write_image(self.image_path(item_id, name), png_bytes(to_image(image)))

    def write_image(self, relative: str, data: bytes) -> str:
        """Atomically write already-encoded image bytes (e.g. a chunk worker's :func:`png_bytes`) at
        ``relative``, a path of :func:`image_path`'s form (anything else is refused); returns it."""
        if not IMAGE_PATH.fullmatch(relative):
            raise PulseAuditError(f"refusing to write image {relative!r}: not a path images/<safe id>/<name>.png")
        atomic_write(self.root / relative, data)
        return relative

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store rows (each with ``item_id`` and ``sample``) not stored yet, as one atomic part."""
        fresh = [dict(row, run_id=self.run_id) for row in rows if (row[ITEM], row[SAMPLE]) not in self.done]
        if not fresh:
            return
        write_parquet(rows_to_table(fresh), self.root / "parts" / f"part-{self.next_part:06d}.parquet")
        self.next_part += 1
        self.done.update((row[ITEM], row[SAMPLE]) for row in fresh)
        hold_point("part")

    def consolidate(self) -> Path:
        """Atomically (re)write ``results.parquet`` from all parts; returns its path."""
        return write_results(self.root)

    def close(self) -> None:
        """Write ``results.parquet`` if it is stale, then release the run folder."""
        if not self._lock.closed:
            try:
                if not results_current(self.root):
                    self.consolidate()
            finally:
                self.release()

    def release(self) -> None:
        """Release the run folder (without writing ``results.parquet``)."""
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """A session that ends with an exception (a kill, an error) only releases the folder."""
        if kind is None:
            self.close()
        else:
            self.release()


PART_NAME = re.compile(r"part-(\d{6})\.parquet")
KEY_COLUMNS = (ITEM, SAMPLE, RUN_ID)
_ARROW_KINDS = ((STRING, (pa.types.is_string, pa.types.is_large_string)), (INTEGER, (pa.types.is_integer,)),
                (FLOAT, (pa.types.is_floating,)), (BOOL, (pa.types.is_boolean,)))
_PLURAL = {STRING: "strings", INTEGER: "integers", FLOAT: "numbers", BOOL: "flags"}
PARTS_DIGEST = b"pulse_audit_parts"
"""Key of ``results.parquet``'s metadata that identifies the parts it was made from."""


def part_files(folder: Path) -> list[Path]:
    """The parts of ``folder`` in order; any other visible entry there is a one-line error (temporaries,
    whose names start with a dot, are left to :meth:`RunStore.open`)."""
    if not folder.is_dir():
        return []
    parts = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not PART_NAME.fullmatch(path.name) or not path.is_file():
            raise PulseAuditError(f"{path}: not a result part (parts are files named part-NNNNNN.parquet, "
                                  f"written by the run); move it out of {folder}")
        parts.append(path)
    return parts


def parts_digest(parts: Sequence[Path]) -> bytes:
    """SHA-256 of the parts' names and sizes (parts are written once, so this identifies their rows)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(f"{part.name}:{part.stat().st_size}\n".encode())
    return digest.hexdigest().encode()


def _arrow_kind(field: pa.Field) -> str | None:
    """The kind of a part's column (None for an all-null column); a type no row of the table has (lists,
    structs, bytes, dates …) is an error."""
    if pa.types.is_null(field.type):
        return None
    for kind, checks in _ARROW_KINDS:
        if any(check(field.type) for check in checks):
            return kind
    raise ValueError(f"column {short_repr(field.name)} holds {short_repr(str(field.type))}, not strings, numbers "
                     "or flags")


def _part_kinds(schema: pa.Schema) -> dict[str, str]:
    """Column → kind of a part's schema, checked: the key columns present, no column twice, every column
    of a kind the table has and the documented one where :func:`audit.core.schema.column_kind` gives it
    (integers where numbers are documented are accepted)."""
    if len(set(schema.names)) != len(schema.names):
        twice = next(name for name in schema.names if schema.names.count(name) > 1)
        raise ValueError(f"column {short_repr(twice)} appears twice")
    kinds: dict[str, str] = {}
    for field in schema:
        kind, documented = _arrow_kind(field), column_kind(field.name)
        if kind is not None and documented is not None and kind != documented and (kind, documented) != (
                INTEGER, FLOAT):
            raise ValueError(f"column {short_repr(field.name)} holds {_PLURAL[kind]}, not {_PLURAL[documented]}")
        if kind is not None:
            kinds[field.name] = FLOAT if kind == INTEGER and documented != INTEGER else kind
    missing = [name for name in KEY_COLUMNS if name not in kinds]
    if missing:
        raise ValueError(f"no {missing[0]} column of {_PLURAL[column_kind(missing[0])]}")
    return kinds


def _read_part(part: Path, columns: Sequence[str] | None = None) -> tuple[pa.Table, dict[str, str]]:
    """One part, or ``results.parquet`` (``columns`` only, when given), and the kinds of all its columns, its
    schema checked (:func:`_part_kinds`) before any row is read."""
    try:
        with pq.ParquetFile(part) as handle:
            try:
                kinds = _part_kinds(handle.schema_arrow)
            except ValueError as exc:
                raise PulseAuditError(f"{part}: not a result part of this store ({exc}); move it out of "
                                      f"{part.parent}") from None
            table = handle.read(columns=list(columns) if columns else None, use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        remedy = "; it is made again from the parts" if part.name == RESULTS else " to redo its rows"
        raise PulseAuditError(f"{part}: unreadable result part ({exc}); move it away{remedy}") from exc
    if any(table.column(name).null_count for name in KEY_COLUMNS):
        raise PulseAuditError(f"{part}: rows without an item_id, sample or run_id; move it out of {part.parent}")
    return table, kinds


def _check_rows(path: Path, table: pa.Table, run_id: str, seen: dict[Key, str]) -> None:
    """Rows of ``path`` (a part, or ``results.parquet``) checked: all of run ``run_id`` and no (item_id,
    sample) in ``seen`` (key → the file that holds it) or stored twice; adds them to ``seen``."""
    foreign = set(pc.unique(table.column(RUN_ID)).to_pylist()) - {run_id}
    if foreign:
        raise PulseAuditError(f"{path}: rows of another run ({short_repr(min(foreign))}; this run is "
                              f"{short_repr(run_id)}); move it out of {path.parent}")
    for key in zip(table.column(ITEM).to_pylist(), table.column(SAMPLE).to_pylist()):
        if key in seen:
            where = "twice" if seen[key] == path.name else f"also in {seen[key]}"
            raise PulseAuditError(f"{path}: item {short_repr(key[0])} sample {key[1]} is stored {where} (a copied "
                                  f"file?); move the extra file out of {path.parent}")
        seen[key] = path.name


def _scan_parts(folder: Path, run_id: str, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """The parts of ``folder``, each checked: its schema (:func:`_part_kinds`), every column of the same kind
    as in the parts before it (integers and numbers are one kind except where integers are documented; so
    the parts always concatenate), its rows (:func:`_check_rows`). A part that fails is a one-line error
    naming it (never merged)."""
    seen: dict[Key, str] = {}
    first_kinds: dict[str, tuple[str, str]] = {}
    for part in part_files(folder):
        table, kinds = _read_part(part, columns)
        for name, kind in kinds.items():
            before, where = first_kinds.setdefault(name, (kind, part.name))
            if kind != before:
                raise PulseAuditError(f"{part}: column {short_repr(name)} holds {_PLURAL[kind]}, but "
                                      f"{_PLURAL[before]} in {where}; move it out of {folder}")
        _check_rows(part, table, run_id, seen)
        yield table


def stored_keys(folder: Path, run_id: str) -> tuple[set[Key], int]:
    """The (item_id, sample) keys of run ``run_id``'s parts in ``folder`` and the next part number, reading
    only the key columns."""
    done: set[Key] = set()
    for table in _scan_parts(folder, run_id, KEY_COLUMNS):
        done.update(zip(table.column(ITEM).to_pylist(), table.column(SAMPLE).to_pylist()))
    numbers = [int(PART_NAME.fullmatch(p.name)[1]) for p in part_files(folder)]
    return done, max(numbers, default=0) + 1


def read_parts(root: Path) -> pa.Table:
    """All rows of the parts of run folder ``root``, checked against its ``run.json``."""
    root = Path(root)
    if not part_files(root / "parts"):
        return concat([])
    return concat(list(_scan_parts(root / "parts", record_value(read_run_record(root), RECORD_RUN_ID))))


def this_session(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The ``run.json`` entry of a session starting now: start time, git commit, package versions, and ``extra``."""
    return {RECORD_STARTED: utc_now(), RECORD_GIT_COMMIT: git_commit(), RECORD_PACKAGES: package_versions(), **extra}


def changes_since(sessions: Sequence[Any], session: Mapping[str, Any]) -> list[str]:
    """How ``session`` differs from any of the earlier ``sessions`` (:func:`session_differences`), each once."""
    return list(dict.fromkeys(phrase for earlier in sessions if isinstance(earlier, Mapping)
                              for phrase in session_differences(earlier, session)))


def stored_sessions(root: Path) -> list[Mapping[str, Any]]:
    """The session entries of the run stored in ``root`` (none when there is no run, or its record is
    unreadable or damaged: opening it says so)."""
    if not (Path(root) / RUN_JSON).is_file():
        return []
    try:
        return session_entries(read_run_record(root))
    except PulseAuditError:
        return []


def session_entries(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The session entries of a ``run.json`` record (:func:`read_run_record`'s) that are objects."""
    return [s for s in record_value(record, RECORD_SESSIONS) if isinstance(s, Mapping)]


def read_run_record(root: Path) -> dict[str, Any]:
    """The ``run.json`` of ``root``, read bounded (:data:`RUN_RECORD_MAX_BYTES`, the card reader's nesting limit)
    and type-checked (:func:`audit.core.schema.record_problem`); a one-line error when missing, unreadable,
    oversized, too deep, not a JSON object or damaged."""
    try:
        record = read_card(Path(root) / RUN_JSON, "run record", RUN_RECORD_MAX_BYTES)
    except WeightsError as exc:
        raise PulseAuditError(f"{exc}; the run cannot be resumed or reported (run it again in a new folder)") from None
    problem = record_problem(record)
    if problem:
        raise PulseAuditError(f"{Path(root) / RUN_JSON}: a damaged run record ({problem}); the run cannot be resumed "
                              "or reported (run it again in a new folder)")
    return record


def discard_run(root: Path) -> None:
    """Delete the run stored in ``root`` (its run.json, parts, results and images; nothing else)."""
    for name in ("parts", "images"):
        shutil.rmtree(root / name, ignore_errors=True)
    for name in (RESULTS, RUN_JSON):
        (root / name).unlink(missing_ok=True)


def results_current(root: Path) -> bool:
    """Whether ``results.parquet`` holds exactly the current parts (true for a run without rows, and for a
    run copied without its parts folder)."""
    parts, results = part_files(Path(root) / "parts"), Path(root) / RESULTS
    if not results.exists() or not (Path(root) / "parts").is_dir():
        return not parts
    try:
        metadata = pq.read_schema(results).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return metadata.get(PARTS_DIGEST) == parts_digest(parts)


def write_results(root: Path, table: pa.Table | None = None) -> Path:
    """Atomically write ``results.parquet`` from the parts of ``root`` (``table``: their rows, when already
    read); returns its path."""
    root = Path(root)
    parts = part_files(root / "parts")
    table = read_parts(root) if table is None else table
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARTS_DIGEST: parts_digest(parts)})
    write_parquet(table, root / RESULTS)
    return root / RESULTS


def read_results(root: Path, save: bool = False) -> pa.Table:
    """All stored rows of a run (complete even while the run is going on): ``results.parquet`` when it
    is current, else the parts; with ``save``, a stale ``results.parquet`` is also rewritten when the
    folder is writable."""
    root = Path(root)
    if (root / RESULTS).exists() and results_current(root):
        table, _ = _read_part(root / RESULTS)  # checked as a part is: it may have been edited or replaced
        _check_rows(root / RESULTS, table, record_value(read_run_record(root), RECORD_RUN_ID), {})
        return table
    table = read_parts(root)
    if save:
        with contextlib.suppress(PulseAuditError):
            write_results(root, table)
    return table
