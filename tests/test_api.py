"""The notebook API (``from audit import …``): one run through it, checked against the run's own rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import audit
from audit.metrics import AttributeAudit

DEMO = Path(__file__).resolve().parents[1] / "datasets" / "demo"


def test_notebook_flow_runs_loads_analyses_and_classifies(tmp_path):
    folder = audit.run_audit(audit.AuditConfig(dataset="demo", upsampler="oracle", per_group=1,
                                               classifiers="skin-tone", device="cpu", out=str(tmp_path / "run")))
    run = audit.load_run(folder)
    assert isinstance(run.table, pd.DataFrame) and len(run.table) > 0
    # no column name has white space: class-probability columns spell "very light" as very_light
    assert not any(any(c.isspace() for c in column) for column in run.table.columns)
    assert "out_skin-tone_ita_band_p_very_light" in run.table.columns  # every class of the vocabulary
    audits = audit.attribute_audits(folder)
    assert set(audits) == {"ita_band/skin-tone", "monk/skin-tone"}
    assert all(isinstance(a, AttributeAudit) for a in audits.values())
    # analyze() on the file reads what the harness stored for the same input (oracle: input = output)
    row = run.faces.dropna(subset=["in_skin-tone_ita"]).iloc[0]
    reading = audit.analyze(DEMO / row["item_id"], classifiers=["skin-tone"])["skin-tone"]
    assert np.isclose(reading.values["ita"], row["in_skin-tone_ita"], atol=1e-6)
    assert reading.label("ita_band") == row["in_skin-tone_ita_band"]


def test_analyze_refuses_what_is_not_an_rgb_image():
    import pytest

    with pytest.raises(ValueError, match="uint8 RGB"):
        audit.analyze(np.zeros((8, 8), np.float32))
