"""The one adapter between a run folder (``run.json``, its rows, ``images/``) and the reports.

Rows come from ``results.parquet`` when it holds every stored part, else from the parts themselves
(:func:`audit.run.run_store.read_results`), so a killed or still running audit can be reported on.

Everything that knows the run store's layout and its provenance keys lives here; column names come from
:mod:`audit.core.schema`. Reports, cards and comparisons see a :class:`Run`
and the specs below, never raw keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from audit.core.schema import (
    DELTA_ITA,
    DELTA_ITA_ALIGNED,
    ERROR,
    ITEM,
    PATH_LR,
    PATH_OUT,
    PATH_TRUTH,
    RECORD_CLASSIFIERS,
    RECORD_CONFIG,
    RECORD_CREATED,
    RECORD_DATASET,
    RECORD_DEVICE,
    RECORD_ENGINE,
    RECORD_GENERATOR,
    RECORD_GIT_COMMIT,
    RECORD_PACKAGES,
    RECORD_RUN_ID,
    RECORD_SAMPLING,
    RECORD_SEARCH_THREADS,
    RECORD_STARTED,
    RECORD_UPSAMPLER,
    RUN_JSON,
    SAMPLE,
    classifier_column,
    json_type,
    label_column,
    record_problem,
    record_value,
    value_column,
)
from audit.core.schema import IDENTITY_DISTANCE as IDENTITY
from audit.core.vocabulary import AGE_YEARS
from audit.metrics.columns import split_inputs
from audit.run.provenance import session_differences, short_commit
from audit.run.run_store import IMAGE_PATH, read_results, read_run_record, session_entries
from audit.vision.images import read_rgb
from pulse_engine.errors import InputImageError, PulseAuditError, short_repr

IMAGE_COLUMNS = {"lr": PATH_LR, "truth": PATH_TRUTH, "out": PATH_OUT}
MAX_IMAGE_PATH = 256
"""Longest stored image path read (the store's are under 150 characters: ``images/<id of ≤ 129>/<name>.png``)."""


@dataclass(frozen=True)
class AuditSpec:
    """One categorical attribute to audit: ``classifier``'s label on the outputs against ``truth``."""

    attribute: str
    classifier: str
    truth: str  # "label" (dataset label) or "in" (the same classifier on the original image)
    truth_column: str
    output_column: str
    categories: tuple[str, ...]
    provenance: dict[str, str]
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.attribute}/{self.classifier}"


@dataclass(frozen=True)
class ShiftSpec:
    """A paired continuous quantity: a per-row column, or (before, after) columns."""

    key: str
    name: str
    value: str | tuple[str, str]
    unit: str
    signed: bool = True  # a signed change tested against 0 (False: a distance, compared between groups)
    meaning: str = ""
    bounds: tuple[float, float] = (-math.inf, math.inf)  # possible values (ITA° ∈ [−90°, 90°]: |ΔITA| ≤ 180°;
    # ages in AGE_YEARS: |age shift| ≤ 116 years)


@dataclass
class Run:
    """A loaded run folder; ``meta`` is its ``run.json`` record, whose keys must have their JSON types
    (:func:`~audit.core.schema.record_problem`, checked here too: a one-line error otherwise)."""

    root: Path
    meta: dict[str, Any]
    table: pd.DataFrame
    faces: pd.DataFrame = field(init=False)
    ucpr: pd.DataFrame | None = field(init=False)

    def __post_init__(self) -> None:
        problem = record_problem(self.meta)
        if problem:
            raise PulseAuditError(f"{self.root / RUN_JSON}: a damaged run record ({problem})")
        done = self.table
        if ERROR in done:
            done = done[done[ERROR].fillna("").astype(str) == ""]
        self.faces, self.ucpr = split_inputs(done)

    @property
    def name(self) -> str:
        return str(record_value(self.meta, RECORD_RUN_ID) or self.root.name)

    @property
    def config(self) -> dict[str, Any]:
        return dict(record_part(self, RECORD_CONFIG))

    @property
    def grouped_by(self) -> list[str]:
        """The attributes the run was asked to group by (``--group-by``), labelled or not."""
        return texts(self, self.config, "group_by", RECORD_CONFIG)

    @property
    def group_by(self) -> list[str]:
        """Label columns of the run's sampling groups (``--group-by``) that label some face."""
        columns = [label_column(a) for a in self.grouped_by]
        return [c for c in columns if c in self.faces and self.faces[c].fillna("").astype(str).ne("").any()]

    @property
    def group_names(self) -> list[str]:
        """The attributes behind :attr:`group_by`, for display."""
        return [a for a in self.grouped_by if label_column(a) in self.group_by]

    def image(self, relative: Any) -> Path | None:
        """The file of a stored image path (None when the row has none). A path that is not
        ``images/<safe id>/<name>.png`` (:data:`~audit.run.run_store.IMAGE_PATH`: never absolute, never ``..``), or
        that leads out of the run folder through a link, is an :class:`InputImageError` of one line."""
        if not isinstance(relative, str) or not relative:
            return None
        if len(relative) > MAX_IMAGE_PATH or not IMAGE_PATH.fullmatch(relative):
            raise InputImageError(f"stored image path {short_repr(relative)} is not images/<id>/<name>.png; not read")
        path = self.root / relative
        try:
            inside = path.resolve().is_relative_to(self.root.resolve())
        except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
            raise InputImageError(f"{path}: cannot be resolved ({type(exc).__name__})") from exc
        if not inside:
            raise InputImageError(f"{path}: a link out of the run folder; not read")
        return path

    def read_image(self, relative: Any) -> Image.Image | None:
        """The stored image ``relative`` as 8-bit RGB, read by :func:`~audit.vision.images.read_rgb` (regular files
        within its size and pixel budgets, never a FIFO or device); None when the row has none. Anything else is
        an :class:`InputImageError` of one line."""
        path = self.image(relative)
        return None if path is None else read_rgb(path)


def load_run(root: Path) -> Run:
    """Read a run folder (``results.parquet`` is written from the parts when it is missing or stale);
    a folder that is not a run is a one-line error."""
    root = Path(root)
    if not (root / RUN_JSON).is_file():
        raise PulseAuditError(f"{root} is not a run folder: {RUN_JSON} is missing (make one with "
                              f"`pulse-audit run --out {root}`)")
    meta = read_run_record(root)
    try:
        table = read_results(root, save=True).to_pandas()
    except (OSError, ValueError) as exc:
        raise PulseAuditError(f"{root}: unreadable run files ({exc})") from exc
    run = Run(root, meta, table)
    if run.faces.empty:
        raise PulseAuditError(f"{root}: no successfully processed face rows to report on")
    return run


_REQUIRED = object()


def checked(run: Run, value: Any, kind: type, where: str, default: Any = _REQUIRED) -> Any:
    """``value`` when it is of JSON type ``kind`` (``dict``, ``list``, ``str``, or ``int``: an integer, not a
    boolean); ``default`` when it is null or missing and a default is given; anything else is a one-line
    :class:`PulseAuditError` naming the field ``where`` of the run's ``run.json``."""
    if value is None and default is not _REQUIRED:
        return default
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise PulseAuditError(f"{run.root / RUN_JSON}: {where} is {json_type(value)}, expected {json_type(kind())}")


def record_part(run: Run, key: str) -> dict[str, Any]:
    """The object under ``key`` of the run's record (:func:`~audit.core.schema.record_value`; an object, since
    :func:`~audit.run.run_store.read_run_record` checked every key's type)."""
    return record_value(run.meta, key)


def member(where: str, key: str) -> str:
    """The name of field ``key`` of the field ``where`` in errors (``where.key``; a key read from the file, when
    not a short plain name, is shown bounded: ``where['…']``)."""
    return f"{where}.{key}" if re.fullmatch(r"[\w-]{1,40}", key) else f"{where}[{short_repr(key, 40)}]"


def field_of(run: Run, data: Mapping[str, Any], key: str, kind: type, where: str, default: Any = "") -> Any:
    """``data[key]`` checked by :func:`checked` (``default`` when missing or null), named ``where.key``."""
    return checked(run, data.get(key), kind, member(where, key), default)


def texts(run: Run, data: Mapping[str, Any], key: str, where: str) -> list[str]:
    """``data[key]`` as a list of strings (empty when missing or null); any other value is a one-line error."""
    values = field_of(run, data, key, list, where, [])
    return [checked(run, v, str, f"{member(where, key)}[{i}]") for i, v in enumerate(values)]


def _weights(run: Run, card: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    entries = field_of(run, card, "weights", list, where, [])
    entries = [checked(run, e, dict, f"{where}.weights[{i}]") for i, e in enumerate(entries)]
    return [{**e, "path": field_of(run, e, "path", str, f"{where}.weights[{i}]"),
             "sha256": field_of(run, e, "sha256", str, f"{where}.weights[{i}]")} for i, e in enumerate(entries)]


def _card_texts(run: Run, card: Mapping[str, Any], keys: tuple[str, ...], where: str) -> dict[str, str]:
    return {key: field_of(run, card, key, str, where) for key in keys}


def generator_record(run: Run) -> dict[str, Any] | None:
    """The generator's card recorded in run.json (None when the upsampler has none), its fields type-checked."""
    gen = record_value(run.meta, RECORD_GENERATOR)  # an object or None (read_run_record checked it)
    if gen is None:
        return None
    return {**gen, **_card_texts(run, gen, ("name", "family", "training_data", "licence"), RECORD_GENERATOR),
            "notes": texts(run, gen, "notes", RECORD_GENERATOR), "weights": _weights(run, gen, RECORD_GENERATOR)}


def model_info(run: Run) -> dict[str, Any]:
    """What produced the outputs: upsampler, resolution, factor and the generator card (None if none)."""
    ups, gen, config = record_part(run, RECORD_UPSAMPLER), generator_record(run), run.config
    name = field_of(run, ups, "name", str, RECORD_UPSAMPLER) or field_of(run, config, "upsampler", str,
                                                                       RECORD_CONFIG, "?")
    label = f"{name} · {gen['name']}" if gen else name
    return {"label": label, "upsampler": name, "resolution": field_of(run, ups, "resolution", int, RECORD_UPSAMPLER,
                                                                      None),
            "factor": field_of(run, config, "factor", int, RECORD_CONFIG, None),
            "samples": field_of(run, config, "samples", int, RECORD_CONFIG, None), "generator": gen}


def dataset_info(run: Run) -> dict[str, Any]:
    """The face set's card fields and the sampling summary recorded in run.json."""
    data = record_part(run, RECORD_DATASET)
    shown = _card_texts(run, data, ("name", "licence", "citation", "card", "card_sha256"), RECORD_DATASET)
    rest = {k: v for k, v in data.items() if k != "labels"}
    return {**rest, **shown, "sampling": texts(run, record_part(run, RECORD_SAMPLING), "summary", RECORD_SAMPLING)}
def session_summary(run: Run) -> dict[str, Any]:
    """``sessions``: per session of the run, its start, commit, engine, device type, search threads and torch
    version (what was not recorded is empty); ``mixed``: how later sessions differed from earlier ones in code,
    package versions, device type or threads (:func:`~audit.run.provenance.session_differences`), empty for a
    run made under one setting."""
    entries = session_entries(run.meta)
    sessions = []
    for entry in entries:
        packages, threads = entry.get(RECORD_PACKAGES), entry.get(RECORD_SEARCH_THREADS)
        sessions.append({"started": str(entry.get(RECORD_STARTED) or "")[:40],
                         "engine": str(entry.get(RECORD_ENGINE) or "")[:40],
                         "device": str(entry.get(RECORD_DEVICE) or "")[:40],
                         "git_commit": short_commit(str(entry.get(RECORD_GIT_COMMIT) or "")),
                         "search_threads": threads if type(threads) is int else "",
                         "torch": str(packages.get("torch", ""))[:40] if isinstance(packages, Mapping) else ""})
    mixed = list(dict.fromkeys(phrase for i, later in enumerate(entries) for earlier in entries[:i]
                               for phrase in session_differences(earlier, later)))
    return {"sessions": sessions, "mixed": mixed}


def run_summary(run: Run) -> dict[str, Any]:
    """Identity, model, face set, configuration and row counts of a run (failed rows with example reasons)."""
    errors = run.table[ERROR].fillna("").astype(str) if ERROR in run.table else pd.Series(dtype=str)
    created, commit = (record_value(run.meta, key) for key in (RECORD_CREATED, RECORD_GIT_COMMIT))
    return {"name": run.name, "root": str(run.root), "created": created, "git_commit": commit,
            **session_summary(run), "model": model_info(run),
            "dataset": dataset_info(run), "config": run.config, "rows": len(run.table), "face_rows": len(run.faces),
            "inputs": int(run.faces[ITEM].nunique()), "ucpr_rows": 0 if run.ucpr is None else len(run.ucpr),
            "failed_rows": int((errors != "").sum()), "failed_examples": sorted(set(errors[errors != ""]))[:5]}


def label_provenance(run: Run) -> list[dict[str, Any]]:
    """Per dataset attribute: vocabulary, source (annotated / predicted), model and notes."""
    labels = field_of(run, record_part(run, RECORD_DATASET), "labels", dict, RECORD_DATASET, {})
    out = []
    for attribute, spec in labels.items():
        where = member(f"{RECORD_DATASET}.labels", attribute)
        spec = checked(run, spec, dict, where)
        out.append({"attribute": attribute, "values": texts(run, spec, "values", where),
                    "source": field_of(run, spec, "source", str, where, "unknown"),
                    **_card_texts(run, spec, ("model", "notes"), where)})
    return out


def classifier_cards(run: Run) -> list[dict[str, Any]]:
    """Each classifier's card: model, training data, licence, limits, attributes and weights, its fields
    type-checked."""
    cards = record_value(run.meta, RECORD_CLASSIFIERS)  # a list (read_run_record checked it)
    out = []
    for i, card in enumerate(cards):
        where = f"{RECORD_CLASSIFIERS}[{i}]"
        card = checked(run, card, dict, where)
        attributes = field_of(run, card, "attributes", dict, where, {})
        out.append({**card, "name": field_of(run, card, "name", str, where, _REQUIRED),
                    **_card_texts(run, card, ("model", "training_data", "licence", "limits"), where),
                    "attributes": {a: texts(run, attributes, a, f"{where}.attributes") for a in attributes},
                    "weights": _weights(run, card, where)})
    return out


def _vocabulary(values: list[str], classes: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*values, *classes]))


def audit_specs(run: Run) -> list[AuditSpec]:
    """Every (attribute, classifier) pair with output labels: against the dataset label when the classifier's
    vocabulary fits inside the dataset's, else against the classifier's reading of the original image (when it
    read at least one original)."""
    labels = {p["attribute"]: p for p in label_provenance(run)}
    specs = []
    for card in classifier_cards(run):
        for attribute, classes in card.get("attributes", {}).items():
            output = classifier_column("out", card["name"], attribute)
            if output not in run.table:
                continue
            label = labels.get(attribute)
            has_label = label and label_column(attribute) in run.faces and run.faces[label_column(attribute)].astype(
                str).str.len().gt(0).any()
            if has_label and set(classes) <= set(label["values"]):
                prov = {k: label[k] for k in ("source", "model", "notes")}
                specs.append(AuditSpec(attribute, card["name"], "label", label_column(attribute), output,
                                       _vocabulary(label["values"], classes), prov))
                continue
            truth = classifier_column("in", card["name"], attribute)
            if truth not in run.faces or not run.faces[truth].fillna("").astype(str).str.len().gt(0).any():
                continue  # no original has a reading (no face found on any): nothing to compare outputs with
            note = (f"the dataset's {attribute} vocabulary differs from {card['name']}'s, so outputs are compared "
                    "with the classifier's reading of the original" if has_label else "")
            prov = {"source": "predicted", "model": f"{card['name']} on the original image: {card.get('model', '')}",
                    "notes": "input and output read by the same classifier"}
            specs.append(AuditSpec(attribute, card["name"], "in", truth, output, tuple(classes), prov, note))
    return specs


def shift_specs(run: Run) -> list[ShiftSpec]:
    """ΔITA (output − truth, degrees; positive = lighter), age shift (years) and identity distance, as present."""
    specs = []
    if DELTA_ITA in run.faces and run.faces[DELTA_ITA].notna().any():
        specs.append(ShiftSpec("delta_ita", "ΔITA", DELTA_ITA, "°", True,
                               "output − original ITA°; positive means lighter skin in the output", (-180.0, 180.0)))
    if DELTA_ITA_ALIGNED in run.faces and run.faces[DELTA_ITA_ALIGNED].notna().any():
        specs.append(ShiftSpec("delta_ita_aligned", "ΔITA (aligned frame, no detector)", DELTA_ITA_ALIGNED, "°", True,
                               "output − original ITA° in the generator frame's fixed skin regions; every pair "
                               "measured; positive means lighter", (-180.0, 180.0)))
    for card in classifier_cards(run):
        before, after = value_column("in", card["name"], "age_years"), value_column("out", card["name"], "age_years")
        if before in run.faces and after in run.faces and run.faces[after].notna().any():
            specs.append(ShiftSpec(f"age_shift/{card['name']}", f"age shift ({card['name']})", (before, after),
                                   " years", True, "output − original estimated age",
                                   (AGE_YEARS[0] - AGE_YEARS[1], AGE_YEARS[1] - AGE_YEARS[0])))
    if IDENTITY in run.faces and run.faces[IDENTITY].notna().any():
        specs.append(ShiftSpec("identity_distance", "identity distance", IDENTITY, "", False,
                               "embedding distance original ↔ output; same person below 0.6", (0.0, math.inf)))
    return specs


def has_column(run: Run, column: str) -> bool:
    return column in run.faces and run.faces[column].notna().any()


def _stored(path: Any) -> str:
    """A stored image path cell as text ("" for a row without one: null or not a string)."""
    return path if isinstance(path, str) else ""


def sample_rows(run: Run, groups: list[str], per_group: int, max_samples: int = 3) -> list[dict[str, Any]]:
    """Up to ``per_group`` inputs per group (lowest item ids), each with its LR, truth and output image paths."""
    faces = run.faces
    if not all(c in faces for c in IMAGE_COLUMNS.values()):
        return []
    keys = groups or []
    grouped = faces.groupby(keys, sort=True) if keys else [(("all",), faces)]
    out = []
    for key, rows in grouped:
        key = key if isinstance(key, tuple) else (key,)
        items = sorted(rows[ITEM].unique())[:per_group]
        entries = []
        for item in items:
            mine = rows[rows[ITEM] == item].sort_values(SAMPLE)
            first = mine.iloc[0]
            entries.append({"item_id": str(item), "lr": _stored(first[IMAGE_COLUMNS["lr"]]),
                            "truth": _stored(first[IMAGE_COLUMNS["truth"]]),
                            "outs": [_stored(p) for p in mine[IMAGE_COLUMNS["out"]].head(max_samples)]})
        out.append({"group": " × ".join(map(str, key)), "items": entries})
    return out
