"""A folder of your own faces described by a CSV manifest.

``folder:PATH`` where PATH is a folder holding ``manifest.csv``, or the manifest itself (any name).
The manifest has a ``path`` column (image paths relative to the manifest's folder, or absolute)
and any number of attribute columns; an empty cell means "no label". Item ids are the ``path``
values normalised (``/`` separators, ``.`` and ``x/..`` removed); a file listed twice, under any
spelling, through a symbolic link or a hard link (one device and inode), is an error naming both lines.

Label vocabularies are the distinct values found, sorted (numerically when all are numbers),
unless an optional sidecar ``labels.json`` beside the manifest declares them::

    {"name": "my-faces", "licence": "...", "citation": "...",
     "source": "predicted", "model": "FairFace res34 20190809",
     "attributes": {"race": {"values": ["White", "Black"], "source": "annotated", "notes": "..."}}}

Every key is optional. With declared ``values``, those are the vocabulary (in display order) and any
other value is an error. Label source, most specific first: the attribute's ``source`` in the
sidecar, the ``labels_source`` option (Python only: ``load_faceset(spec, labels_source=...)``),
the sidecar's top-level ``source``, then ``annotated``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pulse_engine.errors import PulseAuditError, short_repr

from ..core.records import LABEL_SOURCES, AttributeSpec, FaceItem
from . import LoadedFaceSet, card_path, csv_rows, file_key, label_error, normal_id, read_text_bounded, vocabulary

MANIFEST = "manifest.csv"
SIDECAR = "labels.json"
MAX_SIDECAR_BYTES = 1 << 20  # a labels.json larger than this is refused before it is parsed
_TOP_KEYS = {"name", "licence", "citation", "source", "model", "attributes"}
_ATTRIBUTE_KEYS = {"values", "source", "model", "notes"}


def load_folder(root: Path, labels_source: str | None = None) -> LoadedFaceSet:
    """Load a manifest-described folder.

    Args:
        root: the folder holding ``manifest.csv``, or the manifest CSV itself.
        labels_source: ``annotated`` or ``predicted``, for attributes the sidecar does not describe.

    Raises:
        PulseAuditError: no manifest, no ``path`` column, an empty or repeated path, a malformed
            sidecar, or a value outside a declared vocabulary (with its line number).
    """
    manifest = root if root.is_file() else root / MANIFEST
    if not manifest.is_file():
        found = sorted(p.name for p in root.glob("*.csv"))
        raise PulseAuditError(f"folder: {manifest} not found ({'found: ' + ', '.join(found) if found else 'no CSV'}"
                              f"); write a {MANIFEST} with a 'path' column, or pass folder:CSV")
    base = manifest.parent
    meta = _read_sidecar(base / SIDECAR)
    header, rows = csv_rows(manifest, ("path",))
    columns = [column for column in header if column != "path"]
    declared: dict[str, dict[str, Any]] = meta.get("attributes", {})
    for attribute in declared:
        if attribute not in columns:
            raise PulseAuditError(f"{base / SIDECAR}: attribute {short_repr(attribute)} is not a manifest column")

    items: list[FaceItem] = []
    seen: dict[tuple[int, int] | str, tuple[int, str]] = {}
    for line, row in rows:
        if not row["path"]:
            raise PulseAuditError(f"{manifest} line {line}: empty path")
        item_id = normal_id(row["path"])
        same, first = seen.setdefault(file_key(base / item_id), (line, item_id))
        if same != line:
            raise PulseAuditError(f"{manifest} line {line}: {_same_file(base, item_id, first, same)}")
        labels = {column: row[column] for column in columns}
        for attribute, spec in declared.items():
            valid = spec.get("values")
            if valid is not None and labels[attribute] and labels[attribute] not in valid:
                raise label_error(f"{manifest} line {line}", attribute, labels[attribute], valid)
        items.append(FaceItem(item_id, base / item_id, labels))

    attributes = {}
    for column in columns:
        spec = declared.get(column, {})
        source = spec.get("source") or labels_source or meta.get("source") or "annotated"
        if source not in LABEL_SOURCES:
            raise PulseAuditError(f"folder: label source of {short_repr(column)} is {short_repr(source)}; valid: "
                                  + ", ".join(LABEL_SOURCES))
        values = tuple(spec["values"]) if "values" in spec else vocabulary(i.labels[column] for i in items)
        attributes[column] = AttributeSpec(column, values, source, model=spec.get("model", meta.get("model", "")),
                                           notes=spec.get("notes", ""))
    own_card = base / "README.md"
    return LoadedFaceSet(name=meta.get("name") or base.name, root=base, attributes=attributes, items=items,
                         card=own_card if own_card.is_file() else card_path("folder"),
                         licence=meta.get("licence", ""), citation=meta.get("citation", ""),
                         options={"manifest": manifest.name}
                         | ({"labels_source": labels_source} if labels_source else {}))


def _same_file(base: Path, item_id: str, first: str, line: int) -> str:
    """Why the file listed as ``item_id`` is the one listed as ``first`` on ``line``, naming both."""
    if item_id == first:
        return f"{short_repr(item_id)} is already listed on line {line} (same file)"
    how = ("the same path once links are resolved" if os.path.realpath(base / item_id) == os.path.realpath(base / first)
           else "a hard link: same device and inode")
    return f"{short_repr(item_id)} is {short_repr(first)} ({how}), which is already listed on line {line} (same file)"


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar's content ({} when absent, at most :data:`MAX_SIDECAR_BYTES`), with its keys and value types
    checked; nesting too deep for the parser is a one-line error like any other malformed JSON."""
    if not path.is_file():
        return {}
    text = read_text_bounded(path, MAX_SIDECAR_BYTES)
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PulseAuditError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise PulseAuditError(f"{path}: JSON nested too deeply") from exc
    if not isinstance(meta, dict) or set(meta) - _TOP_KEYS:
        raise PulseAuditError(f"{path}: expected an object with keys among {', '.join(sorted(_TOP_KEYS))}")
    _check_texts(path, "", meta, _TOP_KEYS - {"attributes"})
    attributes = meta.get("attributes", {})
    if not isinstance(attributes, dict):
        raise PulseAuditError(f"{path}: 'attributes' must map column names to objects")
    for name, spec in attributes.items():
        if not isinstance(spec, dict) or set(spec) - _ATTRIBUTE_KEYS:
            raise PulseAuditError(f"{path}: attribute {short_repr(name)} must be an object with keys among "
                                  + ", ".join(sorted(_ATTRIBUTE_KEYS)))
        _check_texts(path, f"attribute {short_repr(name)}: ", spec, _ATTRIBUTE_KEYS - {"values"})
        values = spec.get("values")
        if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) and v for v in values)):
            raise PulseAuditError(f"{path}: values of {short_repr(name)} must be a list of non-empty strings")
    return meta


def _check_texts(path: Path, where: str, entry: dict[str, Any], keys: set[str]) -> None:
    """Each of ``keys`` present in ``entry`` holds a string (it is shown in reports as text)."""
    for key in sorted(keys & set(entry)):
        if not isinstance(entry[key], str):
            raise PulseAuditError(f"{path}: {where}{key!r} must be a string, not {type(entry[key]).__name__}")
