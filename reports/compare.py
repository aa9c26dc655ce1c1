"""``pulse-audit compare RUN_A RUN_B ...``: generators on the same inputs, side by side and paired.

Paired differences (later run B − earlier run A) use the inputs every run shares and every sample of them: per
input the mean over its samples of label preservation per attribute, and of ΔITA, age shift and identity distance
(see :mod:`audit.metrics.paired_runs`). Each difference has a Wald t test and an interval from the same estimator,
so they agree. All testable tests of a comparison form one family (Holm by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import combinations
from typing import Any

import pandas as pd

from audit.core.schema import GROUP
from audit.metrics.columns import ITEM, SAMPLE
from audit.metrics.distribution import first_sample, is_missing
from audit.metrics.paired_runs import paired_difference, per_input_mean
from pulse_engine.errors import PulseAuditError
from reports.analysis import Settings, Tests, build_report, histogram
from reports.formatting import ci, mde, pct, pval, signed
from reports.run_data import Run, audit_specs, dataset_info, model_info, shift_specs
from reports.tables import clean

SCHEMA = "pulse-audit-compare/1"


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Display names: the model label, with the run name added where two runs share one."""
    labels = [model_info(r)["label"] for r in runs]
    return [f"{lab} ({r.name})" if labels.count(lab) > 1 else lab for lab, r in zip(labels, runs)]


def first_outputs(run: Run) -> pd.DataFrame:
    """One row per input (its lowest sample), indexed by item id."""
    faces = run.faces.reset_index(drop=True)
    return faces[first_sample(faces, ITEM, SAMPLE)].set_index(ITEM)


def shared_items(runs: Sequence[Run]) -> list[str]:
    """Item ids present (as successful face rows) in every run; none is a one-line error."""
    shared = set.intersection(*(set(run.faces[ITEM]) for run in runs))
    if not shared:
        raise PulseAuditError("the runs share no input (item ids differ): compare runs made on the same face set "
                              "with the same sampling options")
    return sorted(shared)


def _values(frame: pd.DataFrame, value: str | tuple[str, str]) -> pd.Series:
    if isinstance(value, str):
        return pd.to_numeric(frame[value], errors="coerce")
    return pd.to_numeric(frame[value[1]], errors="coerce") - pd.to_numeric(frame[value[0]], errors="coerce")


def _strata(frame: pd.DataFrame) -> pd.Series | None:
    """The run's sampling groups (``group`` column) per input id, when recorded."""
    if GROUP not in frame or (frame[GROUP].fillna("").astype(str) == "").all():
        return None
    return frame.groupby(ITEM)[GROUP].first().fillna("").astype(str)


def _entry(diff: Any, test_id: str, **fields: Any) -> dict[str, Any]:
    t = diff.test
    return {**fields, "n": diff.n, "a_value": diff.a_value, "b_value": diff.b_value, "difference": diff.difference,
            "ci_low": t.ci_low, "ci_high": t.ci_high, "test": test_id}


def diff_items(means: list[pd.Series]) -> pd.Index:
    """Inputs with a value in both runs."""
    return means[0].index.intersection(means[1].index)


def preservation_pair(frames: tuple[pd.DataFrame, pd.DataFrame], spec_key: str, truth: str, output: str,
                      labels: tuple[str, str], settings: Settings, tests: Tests) -> dict[str, Any] | None:
    """Preservation rate B − A over shared inputs (per input: the share of its samples, with an output label, that
    keep the input label)."""
    means = []
    for frame in frames:
        ok = ~is_missing(frame[output]) & ~is_missing(frame[truth])
        kept = (frame[output].astype(str) == frame[truth].astype(str)).astype(float).where(ok)
        means.append(per_input_mean(frame, kept, ITEM))
    if diff_items(means).empty:
        return None
    a, b = frames
    diff = paired_difference(*means, _strata(a), name=f"{spec_key}: preservation, {labels[1]} − {labels[0]}",
                             kind="preservation_paired", scale=100.0, unit="pp", bounds=(-100.0, 100.0),
                             effect_label=f"preservation rate of {labels[1]} − {labels[0]} (mean over shared inputs)",
                             confidence=settings.confidence, alpha=settings.alpha, power=settings.power)
    items = diff_items(means)
    differ = int((a.groupby(ITEM)[truth].first().reindex(items).astype(str)
                  != b.groupby(ITEM)[truth].first().reindex(items).astype(str)).sum())
    return _entry(diff, tests.add(diff.test, spec_key, f"{labels[0]} vs {labels[1]}"), metric=spec_key,
                  kind="preservation", unit="pp", labels_differ=differ)


def _difference_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """Possible range of B − A for values within ``bounds`` (±their width)."""
    width = bounds[1] - bounds[0]
    return -width, width


def shift_pair(frames: tuple[pd.DataFrame, pd.DataFrame], spec: Any, labels: tuple[str, str], settings: Settings,
               tests: Tests) -> dict[str, Any] | None:
    """Per-input mean of a paired quantity, B − A."""
    means = [per_input_mean(f, _values(f, spec.value), ITEM) for f in frames]
    if len(diff_items(means)) < 2:
        return None
    diff = paired_difference(*means, _strata(frames[0]), name=f"{spec.name}: {labels[1]} − {labels[0]}",
                             kind="shift_paired", unit=spec.unit, bounds=_difference_bounds(spec.bounds),
                             effect_label=f"mean {spec.name} of {labels[1]} − {labels[0]} (over shared inputs)",
                             confidence=settings.confidence, alpha=settings.alpha, power=settings.power)
    return _entry(diff, tests.add(diff.test, spec.key, f"{labels[0]} vs {labels[1]}"), metric=spec.key,
                  name=spec.name, kind="shift", unit=spec.unit, meaning=spec.meaning)


def verdict(p: dict[str, Any], test: dict[str, Any], labels: tuple[str, str]) -> str:
    """One plain line per metric and pair, with its verdict."""
    a, b = labels
    adj = f"{pval(test['p_adjusted'])} after {test['adjustment']}"
    level = round(100 * test["confidence"]) if test["confidence"] else 95
    unit = " pp" if p["kind"] == "preservation" else p["unit"]
    scale = 100 if p["kind"] == "preservation" else 1
    fmt = pct if p["kind"] == "preservation" else (lambda x: f"{signed(x)}{unit}")
    values = (f"{fmt(p['b_value'])} vs {fmt(p['a_value'])}, means over {p['n']} shared inputs of each input's "
              f"samples; difference {b} − {a} = {signed(scale * p['difference'])}{unit}, {level}% CI "
              f"{ci(p['ci_low'], p['ci_high'], unit=unit)}, "
              f"{ci(test['adjusted_ci_low'], test['adjusted_ci_high'], unit=unit)} at the {test['adjustment']}-"
              f"adjusted level")
    what = f"{p['metric']} preservation" if p["kind"] == "preservation" else p["name"]
    if test["verdict"] == "not testable":
        return f"{what}: not testable for {b} vs {a} ({test['reason']}); not counted among the tests."
    if test["verdict"] == "finding":
        if p["kind"] == "preservation":
            word = "more" if p["difference"] > 0 else "less"
        else:
            word = "higher" if p["difference"] > 0 else "lower"
        tail = f"; {p['meaning']}" if p.get("meaning") else ""
        verb = f"keeps the label {word} often than" if p["kind"] == "preservation" else f"is {word} for it than for"
        return f"{what}: {b} {verb} {a} ({values}; Wald t {adj}{tail})."
    return (f"{what}: nothing detected between {b} and {a} ({values}; Wald t {adj}; smallest detectable difference "
            f"{mde(test['mde'], test['unit'], test.get('effect_bound'))}).")


def side_by_side(reports: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """Per attribute and shift, each run's overall and by-group numbers (from its own report)."""
    keys = [a["key"] for a in reports[0]["attributes"]]
    attributes = [{"key": k, "runs": [{"label": lab, "overall": next(o for o in a["overall"] if o["metric"] ==
                                                                      "preservation"),
                                       "by_group": [r for r in a["by_group"] if r["metric"] == "preservation"]}
                                      for lab, rep in zip(labels, reports) for a in rep["attributes"] if a["key"] == k]}
                  for k in keys]
    shifts = [{"key": s["key"], "name": s["name"], "unit": s["unit"],
               "runs": [{"label": lab, "overall": t["overall"]} for lab, rep in zip(labels, reports)
                        for t in rep["shifts"] if t["key"] == s["key"]]} for s in reports[0]["shifts"]]
    return {"attributes": [a for a in attributes if len(a["runs"]) == len(reports)],
            "shifts": [s for s in shifts if len(s["runs"]) == len(reports)]}


def compare_runs(runs: Sequence[Run], settings: Settings = Settings()) -> dict[str, Any]:
    """The comparison dict (JSON-ready)."""
    if len(runs) < 2:
        raise PulseAuditError("compare needs at least two runs")
    labels, items = run_labels(runs), shared_items(runs)
    firsts = [first_outputs(r).loc[lambda f: f.index.isin(items)] for r in runs]
    shared = [r.faces[r.faces[ITEM].isin(items)] for r in runs]
    tests, pairs = Tests(), []
    for i, j in combinations(range(len(runs)), 2):
        pair_labels = (labels[i], labels[j])
        specs_j = {s.key: s for s in audit_specs(runs[j])}
        for spec in audit_specs(runs[i]):
            other = specs_j.get(spec.key)
            if other and other.truth_column == spec.truth_column and spec.truth_column in shared[i]:
                p = preservation_pair((shared[i], shared[j]), spec.key, spec.truth_column, spec.output_column,
                                      pair_labels, settings, tests)
                pairs += [dict(p, pair=list(pair_labels))] if p else []
        shifts_j = {s.key for s in shift_specs(runs[j])}
        for spec in shift_specs(runs[i]):
            p = shift_pair((shared[i], shared[j]), spec, pair_labels, settings, tests) if spec.key in shifts_j else None
            pairs += [dict(p, pair=list(pair_labels))] if p else []
    table = tests.table(settings)
    by_id = {t["id"]: t for t in table}
    verdicts = [{"test": p["test"], "text": verdict(p, by_id[p["test"]], tuple(p["pair"]))} for p in pairs]
    reports = [build_report(r, settings) for r in runs]
    hist = {}
    for spec in shift_specs(runs[0]):
        frames = [f.assign(_run=lab, _v=_values(f, spec.value)) for f, lab, r in zip(firsts, labels, runs)
                  if spec.key in {s.key for s in shift_specs(r)}]
        joined = pd.concat(frames)
        hist[spec.key] = dict(histogram(joined, joined["_v"], ["_run"], settings.bins), name=spec.name, unit=spec.unit)
    return clean({"schema": SCHEMA, "generated": datetime.now(UTC).isoformat(timespec="seconds"),
                  "settings": {**settings.stats(), "adjustment": settings.adjustment},
                  "runs": [{"label": lab, "name": r.name, "root": str(r.root), "model": model_info(r),
                            "dataset": dataset_info(r).get("name", ""), "inputs": int(r.faces[ITEM].nunique())}
                           for lab, r in zip(labels, runs)],
                  "shared_inputs": len(items), "side_by_side": side_by_side(reports, labels), "paired": pairs,
                  "tests": table, "verdicts": verdicts, "histograms": hist})
