"""Every number of a report, computed once from a run's table into one JSON-ready dict.

HTML, Markdown, plots and model cards are rendered from this dict only, so each number they show is in
``report.json`` and traces back to ``results.parquet`` through the metrics of :mod:`audit.metrics`.
All testable hypothesis tests of a report form one family for the multiple-testing adjustment (Holm by default);
each test has a verdict: finding, nothing detected (with its minimum detectable effect) or not testable (why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from audit.core.schema import LR_ERROR, PSNR, SSIM, SUCCESS
from audit.metrics import AttributeAudit, PairedShift, noise_floor, report_tests, upsampler_metrics
from audit.metrics.columns import label_column
from audit.stats.tests import TestResult
from pulse_engine.errors import PulseAuditError
from reports.findings import findings
from reports.instrument import instrument_sections
from reports.run_data import (
    AuditSpec,
    Run,
    ShiftSpec,
    audit_specs,
    classifier_cards,
    has_column,
    label_provenance,
    run_summary,
    sample_rows,
    shift_specs,
)
from reports.tables import clean, group_label, indexed_records, records

SCHEMA = "pulse-audit-report/2"


@dataclass(frozen=True)
class Settings:
    """Statistical settings of a report (recorded in its JSON)."""

    n_boot: int = 2000
    seed: int = 0
    confidence: float = 0.95
    alpha: float = 0.05
    power: float = 0.8
    adjustment: str = "holm"
    positive: Mapping[str, str] = field(default_factory=lambda: {"race": "White"})
    per_group: int = 4  # sample-grid inputs per group
    bins: int = 30

    @classmethod
    def from_options(cls, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05, adjust: str = "holm",
                     positive: Sequence[str] = (), per_group: int = 4) -> Settings:
        """Settings from command-line options; ``positive`` items are ``ATTRIBUTE=CLASS``. Bad values are
        one-line errors."""
        if n_boot < 100 or not 0 < alpha < 1 or adjust not in ("holm", "bh") or per_group < 0:
            raise PulseAuditError("need --n-boot ≥ 100, 0 < --alpha < 1, --adjust holm or bh, --per-group ≥ 0")
        pairs = dict(cls().positive)
        for item in positive:
            attribute, sep, value = item.partition("=")
            if not sep or not attribute.strip() or not value.strip():
                raise PulseAuditError(f"--positive {item!r}: expected ATTRIBUTE=CLASS, e.g. race=White")
            pairs[attribute.strip()] = value.strip()
        return cls(n_boot=n_boot, seed=seed, alpha=alpha, adjustment=adjust, positive=pairs, per_group=per_group)

    def stats(self) -> dict[str, Any]:
        return dict(n_boot=self.n_boot, seed=self.seed, confidence=self.confidence, alpha=self.alpha,
                    power=self.power)


class Tests:
    """Collects TestResults with what each belongs to; adjusted together at the end."""

    def __init__(self) -> None:
        self.results: list[TestResult] = []
        self.meta: list[dict[str, Any]] = []

    def add(self, result: TestResult, source: str, group: str | None = None, kind: str | None = None) -> str:
        """Add a test (its own ``kind`` unless ``kind`` is given) and return its id ("T3")."""
        test_id = f"T{len(self.results) + 1}"
        self.results.append(result)
        self.meta.append({"id": test_id, "source": source, "kind": kind or result.kind, "group": group})
        return test_id

    def table(self, settings: Settings) -> list[dict[str, Any]]:
        if not self.results:
            return []
        adjusted = report_tests(self.results, method=settings.adjustment, alpha=settings.alpha)
        return [clean({**row, **m}) for m, row in zip(self.meta, adjusted.to_dict(orient="records"))]


def ucpr_reference(run: Run, spec: AuditSpec) -> dict[str, float] | None:
    """The stated reference of the UCPR test of ``spec``: the groups the average faces were made from, each weighted
    by its number of outputs. Only for an attribute the run was grouped by (its average faces were made per
    group); None otherwise (then the UCPR shares are descriptive: no population is uniform over, e.g., age bins)."""
    column = label_column(spec.attribute)
    if run.ucpr is None or column not in run.group_by or column not in run.ucpr:
        return None
    labels = run.ucpr[column].fillna("").astype(str)
    counts = labels[labels.isin(spec.categories)].value_counts()
    return {str(k): float(v) for k, v in counts.items()} if counts.sum() else None


def make_audit(run: Run, spec: AuditSpec, settings: Settings, groups: list[str] | None = None,
               faces: pd.DataFrame | None = None) -> AttributeAudit:
    """The AttributeAudit of ``spec`` (UCPR rows included when the run has them and the truth is a label; tested
    only against :func:`ucpr_reference`)."""
    positive = settings.positive.get(spec.attribute)
    ucpr = run.ucpr if spec.truth == "label" and run.ucpr is not None and spec.output_column in run.ucpr else None
    prior = ucpr_reference(run, spec) if ucpr is not None else None
    return AttributeAudit(run.faces if faces is None else faces, spec.truth_column, spec.output_column,
                          groups=groups, categories=list(spec.categories),
                          positive=positive if positive in spec.categories else None, uninformative=ucpr,
                          prior=prior, name=spec.key, power=settings.power, **_frame_kwargs(settings))


def _frame_kwargs(settings: Settings) -> dict[str, Any]:
    return dict(n_boot=settings.n_boot, seed=settings.seed, confidence=settings.confidence, alpha=settings.alpha)


def attribute_section(run: Run, spec: AuditSpec, audit: AttributeAudit, tests: Tests) -> dict[str, Any]:
    counts = audit.transition()
    ids = [tests.add(t, spec.key) for t in audit.tests()]
    ucpr_tested = audit.ucpr is not None and audit.ucpr.test is not None
    return clean({
        **asdict(spec), "key": spec.key, "positive": audit.positive, "groups": audit.groups,
        "n_rows": len(audit.data), "n_inputs": int(audit.data[audit.cluster].nunique()),
        "n_unlabelled": audit.n_unlabelled,
        "transition": {"categories": list(counts.index), "counts": counts.to_numpy().tolist()},
        "paired_table": audit.paired_table().astype(int).tolist(),
        "transition_rates": records(audit.transition_rates()),
        "overall": indexed_records(audit.overall(), "metric"),
        "by_group": _ordered(records(audit.by_group(), audit.groups), spec.categories),
        "rdp": _ordered(records(audit.rdp(), audit.groups), spec.categories),
        "shares": indexed_records(audit.shares(), "category"), "divergences": records(audit.divergences()),
        "ucpr_shares": indexed_records(audit.ucpr.table, "category") if audit.ucpr is not None else None,
        "ucpr_reference": ("the groups the average faces were made from, weighted by their outputs" if ucpr_tested
                           else "none stated: descriptive only" if audit.ucpr is not None else None),
        "differences": indexed_records(audit.differences(), "metric"),
        "ratios": indexed_records(audit.ratios(), "metric"), "warnings": audit.warnings(), "tests": ids,
        "intersectional": None, "noise_floor": None})


def _ordered(rows: list[dict[str, Any]], categories: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows in the vocabulary's display order of their group (stable; unknown groups last)."""
    rank = {c: i for i, c in enumerate(categories)}
    return sorted(rows, key=lambda r: rank.get(r["group"], len(rank)))


def intersectional_section(audit: AttributeAudit, spec: AuditSpec, tests: Tests, names: list[str]
                           ) -> dict[str, Any]:
    """By-group preservation over the run's sampling intersection and its k×2 test (other tests would repeat
    the unitary audit's and are left out of the family)."""
    ids = [tests.add(audit.preservation_test(), spec.key, kind="preservation_gap_intersectional")]
    return clean({"groups": audit.groups, "names": names, "by_group": records(audit.by_group(), audit.groups),
                  "differences": indexed_records(audit.differences(), "metric"), "tests": ids})


def histogram(frame: pd.DataFrame, values: pd.Series, groups: list[str], bins: int) -> dict[str, Any]:
    """Per-group histogram of ``values`` on shared edges spanning the 1st–99th percentile (values beyond are
    counted in the end bins)."""
    v = values.to_numpy(float)
    ok = np.isfinite(v)
    if not ok.any():
        return {"edges": [], "series": [], "clipped": 0}
    low, high = np.percentile(v[ok], [1, 99])
    high = high if high > low else low + 1.0
    edges = np.linspace(low, high, bins + 1)
    if not groups:
        keys = pd.Series("all", index=frame.index)
    else:
        keys = frame[groups[0]].astype(str)
        for g in groups[1:]:
            keys = keys + " × " + frame[g].astype(str)
    series = []
    for name in sorted(keys[ok].unique()):
        mine = v[ok & (keys == name).to_numpy()]
        counts = np.histogram(np.clip(mine, low, high), edges)[0]
        series.append({"name": name, "counts": counts.tolist(), "n": len(mine), "median": float(np.median(mine))})
    return clean({"edges": edges.tolist(), "series": series, "clipped": int(((v[ok] < low) | (v[ok] > high)).sum())})


def shift_section(run: Run, spec: ShiftSpec, settings: Settings, tests: Tests) -> dict[str, Any]:
    groups = run.group_by
    shift = PairedShift(run.faces, spec.value, groups or None, name=spec.name, unit=spec.unit,
                        test_zero=spec.signed, power=settings.power, bounds=spec.bounds, **_frame_kwargs(settings))
    labels = [None] + [group_label(dict(zip(groups, k if isinstance(k, tuple) else (k,))), groups)
                       for k in shift.frame.group_index] if groups else [None]
    ids = [tests.add(t, spec.key, label) for t, label in zip(shift.tests(), labels)]
    values = shift.frame.data["_shift"]
    return clean({**asdict(spec), "groups": groups, "table": records(shift.table, groups),
                  "overall": indexed_records(shift.frame.overall, "metric"),
                  "differences": indexed_records(shift.frame.difference(), "metric"), "tests": ids,
                  "histogram": histogram(shift.frame.data, values, groups, settings.bins)})


def upsampler_section(run: Run, settings: Settings) -> dict[str, Any] | None:
    success = SUCCESS if has_column(run, SUCCESS) else None
    lr_error = LR_ERROR if has_column(run, LR_ERROR) else None
    fidelity = {name: name for name in (PSNR, SSIM) if has_column(run, name)}  # against the true HR image
    if success is None and lr_error is None and not fidelity:
        return None
    frame = upsampler_metrics(run.faces.assign(**({SUCCESS: run.faces[SUCCESS].astype(float)} if success else {})),
                              run.group_by or None, success=success, lr_error=lr_error, extra=fidelity,
                              n_boot=settings.n_boot, seed=settings.seed, confidence=settings.confidence)
    return clean({"groups": run.group_by, "overall": indexed_records(frame.overall, "metric"),
                  "by_group": records(frame.by_group, run.group_by)})


def monk_section(attributes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Inputs and outputs per Monk swatch (row and column totals of the Monk transition counts)."""
    for section in attributes:
        if section["attribute"] == "monk":
            counts = np.asarray(section["transition"]["counts"])
            return {"source": section["key"], "categories": section["transition"]["categories"],
                    "inputs": counts.sum(axis=1).tolist(), "outputs": counts.sum(axis=0).tolist()}
    return None


def build_report(run: Run, settings: Settings = Settings(), oracle: Run | None = None) -> dict[str, Any]:
    """The full report dict of ``run`` (see the module docstring); ``oracle`` adds the classifiers' noise
    floor per attribute from an ``oracle`` run over the same inputs."""
    tests, attributes = Tests(), []
    oracle_specs = {s.key: s for s in audit_specs(oracle)} if oracle else {}
    for spec in audit_specs(run):
        audit = make_audit(run, spec, settings)
        section = attribute_section(run, spec, audit, tests)
        if spec.truth == "label" and len(run.group_by) >= 2:
            inter = make_audit(run, spec, settings, groups=run.group_by)
            section["intersectional"] = intersectional_section(inter, spec, tests, run.group_names)
        if spec.key in oracle_specs and oracle_specs[spec.key].truth == spec.truth:
            floor = noise_floor(audit, make_audit(oracle, oracle_specs[spec.key], settings))
            section["noise_floor"] = records(floor, audit.groups)
        attributes.append(section)
    shifts = [shift_section(run, spec, settings, tests) for spec in shift_specs(run)]
    report = {"schema": SCHEMA, "generated": datetime.now(UTC).isoformat(timespec="seconds"),
              "toolkit": {"name": "pulse-audit", "version": _version()},
              "settings": clean({**asdict(settings), "positive": dict(settings.positive)}),
              "run": clean(run_summary(run)), "oracle": oracle.name if oracle else None,
              "labels": label_provenance(run), "classifiers": classifier_cards(run),
              "attributes": attributes, "shifts": shifts, "upsampler": upsampler_section(run, settings),
              "monk": monk_section(attributes), "tests": tests.table(settings),
              "samples": sample_rows(run, run.group_by or _first_truth(attributes), settings.per_group)}
    report |= instrument_sections(run, settings, oracle)
    report["findings"] = findings(report)
    return clean(report)


def _first_truth(attributes: list[dict[str, Any]]) -> list[str]:
    return [attributes[0]["truth_column"]] if attributes else []


def _version() -> str:
    try:
        return metadata.version("pulse-audit")
    except metadata.PackageNotFoundError:
        return "unknown"
