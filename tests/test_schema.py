"""The run table's names (audit.core.schema): formed in one place, free of white space, and old runs still read."""

import json
import re
from pathlib import Path

import pytest

from audit.core.records import ClassifierCard, Prediction
from audit.core.schema import (
    RECORD_CLASSIFIERS,
    RECORD_CONFIG,
    RECORD_GENERATOR,
    RECORD_SAMPLING,
    RECORD_TABLE_SCHEMA,
    RUN_JSON,
    TABLE_SCHEMA,
    class_token,
    probability_column,
    probability_columns,
    record_value,
)
from audit.run.rows import prediction_columns
from audit.run.run_store import RunStore
from pulse_engine.errors import PulseAuditError

REPO = Path(__file__).resolve().parents[1]


class Bands:
    """A classifier whose classes have spaces, as ``skin-tone``'s ITA bands do."""

    name = "bands"
    attributes = {"band": ("very light", "light", "very  dark\t")}
    card = ClassifierCard("bands", "test", "-", "-", attributes)


def test_probability_columns_have_no_white_space_and_map_back_to_classes():
    prediction = Prediction(True, {"band": {"very light": 0.7, "light": 0.2, "very  dark\t": 0.1}})
    row = prediction_columns("out", Bands(), prediction)
    assert not [name for name in row if re.search(r"\s", name)], row
    assert row["out_bands_band_p_very_light"] == 0.7 and row["out_bands_band_p_very_dark"] == 0.1
    assert class_token(" very  dark\t") == "very_dark"
    assert probability_column("in", "bands", "band", "very light") == "in_bands_band_p_very_light"
    classes = Bands.attributes["band"]
    assert probability_columns(row, "out", "bands", "band", classes) == {
        "very light": "out_bands_band_p_very_light", "light": "out_bands_band_p_light",
        "very  dark\t": "out_bands_band_p_very_dark"}
    # a schema-1 table (the class's own spelling) is read too, and an unlisted class keeps its suffix
    old = ["out_bands_band_p_very light", "out_bands_band_p_light", "out_bands_band_p_other", "out_bands_band"]
    assert probability_columns(old, "out", "bands", "band", classes) == {
        "very light": "out_bands_band_p_very light", "light": "out_bands_band_p_light",
        "other": "out_bands_band_p_other"}


def test_a_run_of_an_older_schema_is_refused_on_resume_in_one_line(tmp_path):
    with RunStore.open(tmp_path / "run", {"n": 1}):
        pass
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["table_schema"] == TABLE_SCHEMA
    del record["table_schema"]  # as every run written before audit.core.schema
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    with pytest.raises(PulseAuditError, match=r"table schema 1 .*cannot be resumed.*--new-run") as caught:
        RunStore.open(tmp_path / "run", {"n": 1})
    assert "\n" not in str(caught.value)
    with RunStore.open(tmp_path / "run", {"n": 1}, new_run=True):
        pass
    assert json.loads((tmp_path / "run" / "run.json").read_text())["table_schema"] == TABLE_SCHEMA


def test_only_the_schema_forms_column_names():
    """Formed names (``in_<classifier>…``, ``label_<attribute>``, ``ups_<diagnostic>``, ``…_p_<class>``) are
    spelled in audit/core/schema.py only; writers and readers call its helpers. (Image file names such as
    ``out_<k>.png``, given to ``image_path``, are the run store's layout, not columns.)"""
    formed = re.compile(r"""f["'](?:in|out|label|label_source|ups)_\{|["']_p_["']|_p_\{""")
    offenders = [f"{path.relative_to(REPO)}:{n}" for folder in ("audit", "reports", "benchmarks")
                 for path in sorted((REPO / folder).rglob("*.py")) if path.name != "schema.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if formed.search(line) and "image_path(" not in line]
    assert not offenders, offenders


def test_run_json_is_read_through_the_schema(tmp_path):
    """run.json's keys come from audit.core.schema: the store writes them, reports.run_data reads them (with the
    schema's default where an older record lacks one), and no reader spells a record key by hand."""
    with RunStore.open(tmp_path / "run", {"seed": 0}, lambda: {RECORD_SAMPLING: {"summary": ["s"]}}) as store:
        store.append([])
    record = json.loads((tmp_path / "run" / RUN_JSON).read_text())
    assert record[RECORD_TABLE_SCHEMA] == TABLE_SCHEMA and record_value(record, RECORD_CONFIG) == {"seed": 0}
    assert record_value(record, RECORD_SAMPLING)["summary"] == ["s"] and record_value(record, RECORD_GENERATOR) is None
    assert record_value({}, RECORD_CLASSIFIERS) == [] and record_value({}, RECORD_TABLE_SCHEMA) == 1
    with pytest.raises(KeyError, match="not a run.json key"):
        record_value(record, "confg")
    by_hand = re.compile(r"""meta(?:\.get\(|\[)["'](?:run_id|created|config|upsampler|generator|dataset|classifiers|"""
                         r"""sampling|git_commit)["']""")
    readers = [REPO / "reports" / "run_data.py", REPO / "audit" / "commands" / "cli.py"]
    assert not [f"{p.name}:{n}" for p in readers for n, line in enumerate(p.read_text().splitlines(), 1)
                if by_hand.search(line)]
