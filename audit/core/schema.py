"""The run table's column names and ``run.json``'s keys, in one place: the harness and the run store write them
with these helpers and every reader (:mod:`audit.metrics`, :mod:`reports.run_data`) finds them with the same helpers.

One row per input × sample (``results.parquet``; the run's settings and provenance are in ``run.json``):

=====================================  =======  ==========================================================
column                                 kind     meaning
=====================================  =======  ==========================================================
``run_id``                             string   the run's id (``run.json``'s ``run_id``)
``item_id``, ``sample``                string,  the input and the sample (output) number: the row's key
                                       integer
``input_kind``                         string   ``face`` (a labelled face), ``ucpr`` (a group-average face),
                                                ``skipped`` (a file that could not be read)
``group``                              string   the input's sampling group (the ``--group-by`` values joined)
``error``                              string   why the row has no output ("" when it has one)
``label_<attr>``                       string   the face set's label ("" when unlabelled)
``label_source_<attr>``                string   ``annotated`` or ``predicted``
``path_source|truth|lr|out``           string   the source file; images relative to the run folder
``source_sha256|bytes|mtime_ns|``      string,  stamp of the source file as the run met it (SHA-256 of the bytes
``ctime_ns|inode|device``              integers read, "" if not read; size, -1 if absent; stat fields), checked on
                                                resume (:mod:`audit.run.source_check`; ``FileStamp`` in
                                                :mod:`audit.vision.images`)
``ups_file_sha256|bytes|…|device``     string,  the same for the ``folder`` upsampler's output file (``ups_file``, ""
                                       integers when it found none)
``ups_<diagnostic>``                   any      the upsampler's diagnostics (``ups_success``, ``ups_lr_l2`` …)
``t_upsample_s``, ``t_classify_s``     float    seconds per output
``<side>_<clf>_face``                  bool     classifier ``clf`` found a face; side ``in`` (the true image)
                                                or ``out`` (the upsampler's output)
``<side>_<clf>_<attr>``                string   the most probable class ("" without a face)
``<side>_<clf>_<attr>_p_<class>``      float    that class's probability; ``<class>`` with every run of
                                                white space as ``_`` (:func:`class_token`)
``<side>_<clf>_<value>``               float    a continuous reading (``ita`` in degrees, ``age_years``)
``<side>_<clf>_error``                 string   why ``clf`` could not read the image
``identity_distance``                  float    identity-embedding distance, truth ↔ output
``delta_ita``, ``delta_ita_aligned``   float    output − truth ITA° of ``skin-tone`` / ``skin-tone-aligned``
``psnr``, ``ssim``                     float    fidelity to the true image
=====================================  =======  ==========================================================

No column name contains white space, so every column is usable as a pandas label and in ``DataFrame.query``
(with backticks where a classifier's name has a hyphen). Schema 1 (before this module) kept spaces in
class-probability columns; :func:`probability_columns` reads both, and a schema-1 run cannot be resumed
(:data:`TABLE_SCHEMA`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TABLE_SCHEMA = 2
"""Version of the column names, recorded in ``run.json`` (``table_schema``); a run with another is not resumed."""

SIDES = ("in", "out")
RUN_ID, ITEM, SAMPLE, INPUT_KIND, GROUP, ERROR = "run_id", "item_id", "sample", "input_kind", "group", "error"
LEADING_COLUMNS = (RUN_ID, ITEM, SAMPLE, INPUT_KIND, GROUP, ERROR)
PATH_SOURCE, PATH_TRUTH, PATH_LR, PATH_OUT = "path_source", "path_truth", "path_lr", "path_out"
SOURCE_STAMP, OUTPUT_STAMP = "source_", "ups_file_"
"""Prefixes of the stamp columns (``<prefix>sha256``, ``<prefix>bytes``, … one per :data:`STAMP_FIELDS`) of a row's
source file and of its ``folder`` upsampler output file."""
STAMP_FIELDS = ("sha256", "bytes", "mtime_ns", "ctime_ns", "inode", "device")
"""Stamp column suffixes; stamps stored before the last three existed lack them (their runs still resume)."""
STAMP_STAT_FIELDS = STAMP_FIELDS[2:]
"""The suffixes that describe the file rather than its bytes (another copy of the same bytes differs in them)."""
T_UPSAMPLE, T_CLASSIFY = "t_upsample_s", "t_classify_s"
SUCCESS, LR_ERROR = "ups_success", "ups_lr_l2"
IDENTITY_DISTANCE, DELTA_ITA, DELTA_ITA_ALIGNED, PSNR, SSIM = (
    "identity_distance", "delta_ita", "delta_ita_aligned", "psnr", "ssim")
PREFIXES = ("label_", "label_source_", "path_", "ups_", "t_", "in_", "out_")
"""Column families in the table's order, after :data:`LEADING_COLUMNS` and before the comparisons."""


def label_column(attribute: str) -> str:
    """Dataset label of ``attribute``, e.g. ``label_race``."""
    return f"label_{attribute}"


def label_source_column(attribute: str) -> str:
    """Provenance of the dataset label ("annotated" / "predicted"), e.g. ``label_source_race``."""
    return f"label_source_{attribute}"


def upsampler_column(diagnostic: str) -> str:
    """An upsampler diagnostic, e.g. ``ups_lr_l2``."""
    return f"ups_{diagnostic}"


def _side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


def classifier_column(side: str, classifier: str, attribute: str) -> str:
    """Label a classifier gave on one side, e.g. ``out_fairface_race``."""
    return f"{_side(side)}_{classifier}_{attribute}"


def value_column(side: str, classifier: str, value: str) -> str:
    """Continuous classifier output, e.g. ``in_skin-tone_ita``."""
    return f"{_side(side)}_{classifier}_{value}"


def face_column(side: str, classifier: str) -> str:
    """Whether the classifier found a face, e.g. ``out_fairface_face``."""
    return f"{_side(side)}_{classifier}_face"


def error_column(side: str, classifier: str) -> str:
    """Why the classifier could not read the image, e.g. ``out_identity_error``."""
    return f"{_side(side)}_{classifier}_error"


def class_token(label: str) -> str:
    """A class as it appears in a column name: every run of white space becomes ``_`` (``very light`` →
    ``very_light``)."""
    return re.sub(r"\s+", "_", str(label).strip())


def probability_column(side: str, classifier: str, attribute: str, label: str) -> str:
    """Probability of class ``label``, e.g. ``out_skin-tone_ita_band_p_very_light``."""
    return f"{classifier_column(side, classifier, attribute)}_p_{class_token(label)}"


def probability_columns(columns: Iterable[str], side: str, classifier: str, attribute: str,
                        classes: Sequence[str] = ()) -> dict[str, str]:
    """Class → probability column among ``columns`` (in their order), for one classifier/attribute/side.

    A column is matched to a class of ``classes`` in either spelling (schema 2's token, or schema 1's raw
    class with its spaces); a column of a class not listed is returned under its suffix.
    """
    prefix = f"{classifier_column(side, classifier, attribute)}_p_"
    spelled = {class_token(c): c for c in classes} | {c: c for c in classes}
    return {spelled.get(c[len(prefix):], c[len(prefix):]): c for c in columns if c.startswith(prefix)}


STRING, INTEGER, FLOAT, BOOL = "string", "integer", "float", "bool"
"""The kinds of the table's documented columns (:func:`column_kind`)."""
_KIND_BY_NAME = {RUN_ID: STRING, ITEM: STRING, SAMPLE: INTEGER, INPUT_KIND: STRING, GROUP: STRING, ERROR: STRING,
                 SUCCESS: BOOL, LR_ERROR: FLOAT, T_UPSAMPLE: FLOAT, T_CLASSIFY: FLOAT, IDENTITY_DISTANCE: FLOAT,
                 DELTA_ITA: FLOAT, DELTA_ITA_ALIGNED: FLOAT, PSNR: FLOAT, SSIM: FLOAT}
_KIND_BY_NAME |= {f"{prefix}{field}": STRING if field == "sha256" else INTEGER
                  for prefix in (SOURCE_STAMP, OUTPUT_STAMP) for field in STAMP_FIELDS}


def column_kind(name: str) -> str | None:
    """The kind (:data:`STRING`, :data:`INTEGER`, :data:`FLOAT`, :data:`BOOL`) the table documents for column
    ``name``, or None for a column whose kind it leaves open (upsampler diagnostics, classifier labels,
    probabilities and readings: a string, a number or a flag, the same in every part of a run)."""
    if name in _KIND_BY_NAME:
        return _KIND_BY_NAME[name]
    if name.startswith(("label_", "path_")):
        return STRING
    parts = name.split("_")
    if parts[0] in SIDES and len(parts) == 3 and parts[2] in ("face", "error"):
        return BOOL if parts[2] == "face" else STRING
    return None


def column_order(names: Iterable[str]) -> list[str]:
    """Canonical column order: ids, labels, paths, upsampler diagnostics, timings, input-side and
    output-side classifier columns, comparisons."""
    def rank(name: str) -> tuple[int, str]:
        if name in LEADING_COLUMNS:
            return LEADING_COLUMNS.index(name), ""
        for i, prefix in enumerate(PREFIXES):
            if name.startswith(prefix) and not (prefix == "label_" and name.startswith("label_source_")):
                return len(LEADING_COLUMNS) + i, name
        return len(LEADING_COLUMNS) + len(PREFIXES), name

    return sorted(names, key=rank)


# ------------------------------------------------------------------------------------------------ run.json
RUN_JSON = "run.json"
"""The run's record beside its table: a JSON object whose keys are the ``RECORD_*`` names below."""
RECORD_RUN_ID, RECORD_CREATED, RECORD_TABLE_SCHEMA = RUN_ID, "created", "table_schema"
RECORD_CONFIG, RECORD_INPUTS, RECORD_SESSIONS = "config", "inputs", "sessions"
"""``config``: the resume fingerprint (``AuditConfig.fingerprint``: flat option → value); ``inputs``: name →
SHA-256 of what the rows depend on; ``sessions``: one ``{started, git_commit, packages, engine, search_threads,
device, mixed}`` per session (``device``: the type the searches ran on, ``cpu`` or ``cuda``; ``mixed``: how it
differed from the sessions before it, when ``--allow-mixed`` let it resume)."""
RECORD_STARTED, RECORD_GIT_COMMIT, RECORD_PACKAGES = "started", "git_commit", "packages"
RECORD_ENGINE, RECORD_SEARCH_THREADS, RECORD_MIXED, RECORD_DEVICE = "engine", "search_threads", "mixed", "device"
RECORD_SEEDS, RECORD_UPSAMPLER, RECORD_GENERATOR = "seeds", "upsampler", "generator"
RECORD_CLASSIFIERS, RECORD_DATASET, RECORD_SAMPLING = "classifiers", "dataset", "sampling"
"""Provenance (:mod:`audit.run.provenance`): ``upsampler`` {name, resolution}; ``generator`` its card or null;
``classifiers`` a list of cards {name, model, …, attributes: {attribute: classes}}; ``dataset`` the face set's
card fields with ``labels`` {attribute: {values, source, model, notes}}; ``sampling`` {summary: [lines], …}."""
RECORD_DEFAULTS: dict[str, object] = {
    RECORD_RUN_ID: "", RECORD_CREATED: "", RECORD_TABLE_SCHEMA: 1, RECORD_CONFIG: {}, RECORD_INPUTS: {},
    RECORD_SESSIONS: [], RECORD_GIT_COMMIT: "", RECORD_PACKAGES: {}, RECORD_SEEDS: {}, RECORD_UPSAMPLER: {},
    RECORD_GENERATOR: None, RECORD_CLASSIFIERS: [], RECORD_DATASET: {}, RECORD_SAMPLING: {}}
"""What a reader takes for a key a record lacks (an older run, or a run killed before its provenance);
``table_schema`` 1 is the schema before :data:`TABLE_SCHEMA` was recorded."""


_JSON_TYPES = ((dict, "an object"), (list, "an array"), (str, "a string"), (bool, "true or false"),
               (int, "an integer"), (float, "a number"))


def json_type(value: Any) -> str:
    """The JSON type of a parsed value as messages name it ("an object", "true or false", "null", …)."""
    if value is None:
        return "null"
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def record_problem(record: Mapping[str, Any]) -> str | None:
    """The first key of a ``run.json`` record whose JSON type is not the one written (:data:`RECORD_DEFAULTS`'s;
    ``generator`` an object), or an ``inputs`` value that is not a string, as a phrase; None when every key fits
    (a missing or null key is fine: :func:`record_value` gives its default)."""
    for key, default in RECORD_DEFAULTS.items():
        value = record.get(key)
        expected = dict if default is None else type(default)
        if value is not None and (not isinstance(value, expected) or isinstance(value, bool) != (expected is bool)):
            return f"{key!r} is {json_type(value)}, not {json_type(expected())}"
    inputs = record.get(RECORD_INPUTS) or {}
    odd = next((name for name, digest in inputs.items() if not isinstance(digest, str)), None)
    return None if odd is None else f"input {odd[:80]!r} has {json_type(inputs[odd])}, not a SHA-256 string"


def record_value(record: Mapping[str, Any], key: str) -> Any:
    """``record[key]``, or its :data:`RECORD_DEFAULTS` entry (a fresh copy) when missing or null."""
    if key not in RECORD_DEFAULTS:
        raise KeyError(f"{key!r} is not a run.json key of audit.core.schema")
    value = record.get(key)
    return copy.deepcopy(RECORD_DEFAULTS[key]) if value is None else value
