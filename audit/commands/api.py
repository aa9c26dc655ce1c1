"""The Python API for notebooks: run an audit, load a run as pandas, compute its metrics, classify one image.

    from audit import AuditConfig, run_audit, load_run, attribute_audits, analyze
    folder = run_audit(AuditConfig(dataset="demo", upsampler="bicubic", per_group=2, out="runs/nb"))
    run = load_run(folder)             # run.table: one row per input × sample (pandas); run.meta: run.json
    audits = attribute_audits(run)     # "<attribute>/<classifier>" → AttributeAudit (tidy frames, tests)
    analyze("face.png")                # classifier name → Prediction for one image

Column names have no white space (``in_<classifier>_<attribute>``, ``out_…``, ``label_<attribute>``,
``ups_<diagnostic>``), e.g. ``run.table["out_skin-tone_ita"]``; class-probability columns ``…_p_<class>``
write spaces in the class as ``_`` (``out_skin-tone_ita_band_p_very_light``); :mod:`audit.core.schema` forms them. This
module sits on the workflow floor: it only gathers entry points of the floors below (ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audit.classifiers import build_classifier
from audit.core.records import Prediction
from audit.metrics import AttributeAudit
from audit.run.harness import AuditConfig, run_audit
from audit.vision.images import read_rgb
from reports.analysis import Settings, build_report, make_audit
from reports.run_data import Run, audit_specs, load_run

__all__ = ["AuditConfig", "Run", "Settings", "analyze", "attribute_audits", "build_report", "load_run",
           "run_audit"]


def attribute_audits(run: Run | str | Path, settings: Settings | None = None) -> dict[str, AttributeAudit]:
    """Every categorical input → output audit of ``run`` (a loaded run or its folder), keyed
    ``"<attribute>/<classifier>"`` as in the report."""
    run = run if isinstance(run, Run) else load_run(Path(run))
    settings = settings or Settings()
    return {spec.key: make_audit(run, spec, settings) for spec in audit_specs(run)}


def analyze(image: str | Path | np.ndarray, classifiers: Sequence[str] = ("skin-tone", "age-gender"),
            device: str = "cpu") -> dict[str, Prediction]:
    """Read one image (a path, or an (H, W, 3) uint8 RGB array) and classify it with each of
    ``classifiers`` (``NAME[:WEIGHTS]``, see ``pulse-audit doctor``)."""
    array = image if isinstance(image, np.ndarray) else np.asarray(read_rgb(Path(image)))
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"analyze needs an (H, W, 3) uint8 RGB image, got {array.dtype} {array.shape}")
    return {spec: build_classifier(spec, device).predict([array])[0] for spec in classifiers}
