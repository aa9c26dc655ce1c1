"""``pulse-audit compare RUN_A RUN_B ...``: generators on the same inputs, side by side and paired.

Paired tests use the inputs every run shares, one output each (each input's lowest sample, normally sample 0):
McNemar on label preservation per attribute, Wilcoxon signed-rank on the per-input difference of ΔITA, age shift
and identity distance. Differences (later run − earlier run) get percentile intervals from a paired bootstrap over
the shared inputs, stratified by input label. All tests of a comparison form one family (Holm by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from audit.metrics.columns import ITEM, SAMPLE
from audit.metrics.distribution import first_sample, is_missing
from audit.stats.intervals import Bootstrap, percentile_interval
from audit.stats.tests import mcnemar, wilcoxon_signed_rank
from pulse_engine.errors import PulseAuditError
from reports.analysis import Settings, Tests, build_report, histogram
from reports.formatting import ci, mde, pct, pval, signed
from reports.run_data import GROUP, Run, audit_specs, dataset_info, model_info, shift_specs
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


def _strata(frame: pd.DataFrame) -> np.ndarray | None:
    """The run's sampling groups (``group`` column) as bootstrap strata, when recorded."""
    if GROUP not in frame or (frame[GROUP].fillna("").astype(str) == "").all():
        return None
    return frame[GROUP].fillna("").astype(str).to_numpy()


def _paired_interval(a: np.ndarray, b: np.ndarray, strata: np.ndarray | None, settings: Settings
                     ) -> tuple[float, float]:
    """Percentile interval of mean(b) − mean(a) over a bootstrap of the shared inputs."""
    design = Bootstrap(len(a), strata, None, settings.n_boot, settings.seed)
    sums = design.sums(np.stack([a, b, np.ones(len(a))], axis=1))
    low, high = percentile_interval((sums[:, 1] - sums[:, 0]) / sums[:, 2], settings.confidence)
    return float(low), float(high)


def preservation_pair(frames: tuple[pd.DataFrame, pd.DataFrame], spec_key: str, truth: str, output: str,
                      labels: tuple[str, str], settings: Settings, tests: Tests) -> dict[str, Any] | None:
    """McNemar on preserved (yes/no) of two runs over shared inputs with an output label in both."""
    a, b = frames
    both = a.index.intersection(b.index)
    a, b = a.loc[both], b.loc[both]
    ok = ~is_missing(a[output]) & ~is_missing(b[output]) & ~is_missing(a[truth])
    if not ok.any():
        return None
    a, b = a[ok], b[ok]
    pa = (a[output].astype(str) == a[truth].astype(str)).to_numpy(float)
    pb = (b[output].astype(str) == b[truth].astype(str)).to_numpy(float)
    table = [[int(((pa == 1) & (pb == 1)).sum()), int(((pa == 1) & (pb == 0)).sum())],
             [int(((pa == 0) & (pb == 1)).sum()), int(((pa == 0) & (pb == 0)).sum())]]
    test = mcnemar(table, f"{spec_key}: preservation, {labels[0]} vs {labels[1]} (McNemar)", settings.alpha,
                   settings.power)
    low, high = _paired_interval(pa, pb, _strata(a), settings)
    return {"metric": spec_key, "kind": "preservation", "unit": "pp", "n": len(pa), "table": table,
            "a_value": pa.mean(), "b_value": pb.mean(), "difference": pb.mean() - pa.mean(), "ci_low": low,
            "ci_high": high, "test": tests.add(test, spec_key, "mcnemar_paired", f"{labels[0]} vs {labels[1]}"),
            "labels_differ": int((a[truth].astype(str) != b[truth].astype(str)).sum())}


def shift_pair(frames: tuple[pd.DataFrame, pd.DataFrame], spec: Any, labels: tuple[str, str], settings: Settings,
               tests: Tests) -> dict[str, Any] | None:
    """Wilcoxon signed-rank on the per-input difference (B − A) of a paired quantity."""
    a, b = frames
    both = a.index.intersection(b.index)
    va, vb = _values(a.loc[both], spec.value).to_numpy(float), _values(b.loc[both], spec.value).to_numpy(float)
    ok = np.isfinite(va) & np.isfinite(vb)
    if ok.sum() < 2:
        return None
    va, vb = va[ok], vb[ok]
    test = wilcoxon_signed_rank(vb - va, f"{spec.name}: {labels[1]} − {labels[0]} (Wilcoxon)", spec.unit,
                                settings.alpha, settings.power)
    low, high = _paired_interval(va, vb, _strata(a.loc[both][ok]), settings)
    return {"metric": spec.key, "name": spec.name, "kind": "shift", "unit": spec.unit, "n": int(ok.sum()),
            "a_value": va.mean(), "b_value": vb.mean(), "difference": vb.mean() - va.mean(), "ci_low": low,
            "ci_high": high, "median_difference": test.effect, "meaning": spec.meaning,
            "test": tests.add(test, spec.key, "wilcoxon_paired", f"{labels[0]} vs {labels[1]}")}


def verdict(p: dict[str, Any], test: dict[str, Any], labels: tuple[str, str]) -> str:
    """One plain line per metric and pair."""
    a, b = labels
    adj = f"{pval(test['p_adjusted'])} after {test['adjustment']}"
    if p["kind"] == "preservation":
        values = (f"{pct(p['b_value'])} vs {pct(p['a_value'])} on the same {p['n']} inputs; difference "
                  f"{signed(100 * p['difference'], 3)} pp, "
                  f"95% CI {ci(100 * p['ci_low'], 100 * p['ci_high'], unit=' pp')}")
        if test["reject"]:
            word = "more" if p["difference"] > 0 else "less"
            return f"{p['metric']} preservation: {b} keeps the label {word} often than {a} ({values}; McNemar {adj})."
        return (f"{p['metric']} preservation: no detectable difference between {b} and {a} ({values}; McNemar {adj}; "
                f"smallest detectable difference {mde(test['mde'], 'pp')}).")
    unit = p["unit"]
    values = (f"mean {signed(p['b_value'])}{unit} vs {signed(p['a_value'])}{unit} on {p['n']} shared inputs; paired "
              f"difference {signed(p['difference'])}{unit}, 95% CI {ci(p['ci_low'], p['ci_high'], unit=unit)}")
    if test["reject"]:
        word = "higher" if p["median_difference"] > 0 else "lower"
        return f"{p['name']}: {word} for {b} than for {a} ({values}; Wilcoxon {adj}; {p['meaning']})."
    return (f"{p['name']}: no detectable difference between {b} and {a} ({values}; Wilcoxon {adj}; smallest "
            f"detectable shift {mde(test['mde'], unit)}).")


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
    tests, pairs = Tests(), []
    for i, j in combinations(range(len(runs)), 2):
        pair_labels = (labels[i], labels[j])
        specs_j = {s.key: s for s in audit_specs(runs[j])}
        for spec in audit_specs(runs[i]):
            other = specs_j.get(spec.key)
            if other and other.truth_column == spec.truth_column and spec.truth_column in firsts[i]:
                p = preservation_pair((firsts[i], firsts[j]), spec.key, spec.truth_column, spec.output_column,
                                      pair_labels, settings, tests)
                pairs += [dict(p, pair=list(pair_labels))] if p else []
        shifts_j = {s.key for s in shift_specs(runs[j])}
        for spec in shift_specs(runs[i]):
            p = shift_pair((firsts[i], firsts[j]), spec, pair_labels, settings, tests) if spec.key in shifts_j else None
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
    return clean({"schema": SCHEMA, "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "settings": {**settings.stats(), "adjustment": settings.adjustment},
                  "runs": [{"label": lab, "name": r.name, "root": str(r.root), "model": model_info(r),
                            "dataset": dataset_info(r).get("name", ""), "inputs": int(r.faces[ITEM].nunique())}
                           for lab, r in zip(labels, runs)],
                  "shared_inputs": len(items), "side_by_side": side_by_side(reports, labels), "paired": pairs,
                  "tests": table, "verdicts": verdicts, "histograms": hist})
