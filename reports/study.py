"""``pulse-audit study RUN...``: one page that answers a comparative question across runs.

Rows are runs (upsampler · generator · training composition from its card · factor), columns the
headline metrics of :mod:`audit.metrics.study`, each with its interval and a contrast against the
baseline run; then the dose–response of every metric on the dose (training composition, or a prior
shift) within each condition, tested with the replicates as units (:mod:`audit.stats.trend`).

Two multiple-testing families, each adjusted on its own (Holm by default): the dose–response tests
(primary: the study's question) and the contrasts against the baseline (secondary). A sentence states
a finding only when its test rejects after adjustment; otherwise it says "nothing detected" with the
smallest slope or difference that would have been detected, or "not testable" with the reason.
Numbers live in ``study.json``; ``study.html`` and ``study.md`` are rendered from the same dict.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from audit.metrics.columns import ITEM
from audit.metrics.study import (
    Headline,
    StudyRun,
    Summary,
    condition_trend,
    conditions,
    contrast,
    headlines,
    summarise,
)
from audit.stats.multitest import report_tests
from audit.stats.tests import TestResult
from audit.stats.trend import generators_for_power, inputs_for_power, t_power
from pulse_engine.errors import PulseAuditError
from reports.analysis import Settings
from reports.formatting import ci, num, pct, pval, signed
from reports.run_data import Run, dataset_info, load_run, model_info
from reports.tables import clean

SCHEMA = "pulse-audit-study/1"
PRIMARY_METRICS = ("ucpr_ita_aligned", "ucpr_ita", "delta_ita_aligned", "delta_ita")  # power panel: first measured
SKIN_METRICS = (*PRIMARY_METRICS, "lighter", "darker", "ucpr_lightest")  # the answer's metrics, in this order
DOSE_AXES = {"composition": (0.1, "per +10 pp of light faces in training", "share of light faces in training"),
             "shift": (1.0, "per prior SD of latent shift", "prior shift (SD along the skin-tone direction)")}


# ------------------------------------------------------------------ runs → study runs (doses from cards)
def generator_card(run: Run) -> dict[str, Any] | None:
    """The generator's full card, from the files recorded in run.json: among the ``card.json`` files listed with its
    weights, a prior-shift member's own card (it lists its base's card too), else the first; without any, the
    ``card.json`` beside its first weights file."""
    paths = [Path(str(entry.get("path", ""))) for entry in (run.meta.get("generator") or {}).get("weights", [])]
    cards = []
    for card in [p for p in paths if p.name == "card.json"] or [p.parent / "card.json" for p in paths[:1]]:
        try:
            cards.append(json.loads(card.read_text()))
        except (OSError, ValueError):
            continue
    return next((c for c in cards if shift_dose(c) is not None), cards[0] if cards else None)


def shift_dose(card: Mapping[str, Any] | None) -> float | None:
    """The prior shift of a shifted-family member's card (``alpha``, in prior SDs), None for other cards."""
    card = card or {}
    value = card.get("alpha", ((card.get("training_data") or {}).get("prior_shift_sd")))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def composition_dose(card: Mapping[str, Any] | None, summary: str = "") -> tuple[float, str]:
    """Share of light faces in the generator's training data and a display string, from the card's
    ``training_data`` (requested composition or counts), else from its one-line summary "light 2800 (50%), …"."""
    data = (card or {}).get("training_data") or {}
    shares = data.get("composition_requested") or data.get("counts")
    if isinstance(shares, Mapping) and shares:
        total = sum(float(v) for v in shares.values())
        parts = {str(k): float(v) / total for k, v in shares.items()}
    else:
        parts = {k: float(v) / 100 for k, v in re.findall(r"(\w+) \d+ \((\d+(?:\.\d+)?)%\)", summary)}
    if not parts:
        return math.nan, ""
    text = " · ".join(f"{k} {100 * v:.0f}%" for k, v in parts.items())
    return parts.get("light", 0.0), text


def inputs_key(run: Run) -> str:
    """The face set's name and a digest of the input ids the run was given (failed rows included): two runs with
    equal keys searched the same inputs."""
    ids = sorted(set(run.table[ITEM].astype(str)))
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
    return json.dumps({"dataset": dataset_info(run).get("name", ""), "inputs": len(ids), "ids": digest})


def study_run(run: Run, dose: float | None = None, design: str | None = None, name: str | None = None) -> StudyRun:
    """A run as the study sees it (named ``name``, default its folder's name); ``dose``/``design`` override what
    its generator card says."""
    card = generator_card(run)
    model = model_info(run)
    gen = run.meta.get("generator") or {}
    shift = shift_dose(card)
    if shift is not None:
        card_dose, card_design, text = shift, "shift", f"prior shift {shift:+g} SD"
    else:
        card_dose, text = composition_dose(card, str(gen.get("training_data", "")))
        card_design = "composition"
    return StudyRun(name or run.root.name, run.faces, run.ucpr, str(model["upsampler"]), str(gen.get("name", "")),
                    int(model["factor"] or 0), int(model["resolution"] or 0), inputs_key(run),
                    card_dose if dose is None else float(dose), design or card_design, text,
                    {"label": model["label"], "dataset": dataset_info(run).get("name", ""), "root": str(run.root),
                     "generator_samples_ita": ((card or {}).get("samples_skin_tone") or {}).get("ita_mean_deg")})


# ------------------------------------------------------------------ tests and verdicts
class Family:
    """Tests adjusted together (:func:`audit.stats.multitest.report_tests`); each gets an id with the family's
    prefix. Not-testable results stay out of the family."""

    def __init__(self, prefix: str, name: str) -> None:
        self.prefix, self.name = prefix, name
        self.results: list[TestResult] = []

    def add(self, result: TestResult) -> str:
        self.results.append(result)
        return f"{self.prefix}{len(self.results)}"

    def table(self, settings: Settings) -> list[dict[str, Any]]:
        if not self.results:
            return []
        table = report_tests(self.results, method=settings.adjustment, alpha=settings.alpha)
        return [clean({"id": f"{self.prefix}{i + 1}", **row, "family": self.name})
                for i, row in enumerate(table.to_dict(orient="records"))]


def _adjustment(settings: Settings) -> str:
    return {"holm": "Holm", "bh": "Benjamini–Hochberg"}[settings.adjustment]


def _scaled(x: float | None, scale: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x * scale


def _value_text(x: float | None, metric: Mapping[str, Any], signed_: bool = False) -> str:
    """A metric value (rates in %, differences of rates in pp)."""
    if x is None:
        return "–"
    if metric["unit"]:
        return (signed(x) if signed_ else num(x)) + metric["unit"]
    return f"{signed(100 * x)} pp" if signed_ else pct(x)


def _size_text(x: float | None, metric: Mapping[str, Any]) -> str:
    """The size of a difference or slope (rates in percentage points)."""
    if x is None:
        return "–"
    return num(x) + metric["unit"] if metric["unit"] else f"{num(100 * x)} pp"


def _interval_text(low: float | None, high: float | None, metric: Mapping[str, Any], difference: bool) -> str:
    if low is None or high is None:
        return "–"
    if metric["unit"]:
        return ci(low, high, unit=metric["unit"])
    return ci(100 * low, 100 * high, unit=" pp") if difference else ci(low, high, True)


def condition_label(factor: int, resolution: int, inputs: str, many_inputs: bool) -> str:
    lr = resolution // factor if factor else 0
    label = f"×{factor} ({lr}×{lr} px → {resolution} px)"
    return label + (f", inputs {json.loads(inputs).get('dataset')}" if many_inputs else "")


def trend_sentence(t: Mapping[str, Any], metric: Mapping[str, Any], settings: Settings) -> str:
    """One sentence about a dose–response test, worded by its verdict after adjustment."""
    per = t["per"]
    units = "generators" if t["design"] == "composition" else "inputs"
    where = f"At {t['condition']}, across {ACROSS[t['design']]}, {metric['name']}"
    test = t["test"]
    if test["verdict"] == "not testable":
        return f"{where}: dose–response not testable ({test['reason']})."
    slope = _value_text(t["slope_display"], metric, True)
    interval = _interval_text(t["ci_low_display"], t["ci_high_display"], metric, True)
    adj = f"{pval(test['p_adjusted'])} after {_adjustment(settings)} over {test['family_size']} trend tests"
    if test["verdict"] == "finding":
        direction = "rises" if t["slope"] > 0 else "falls"
        unit = metric["unit"] or " pp"
        adjusted = ci(test["adjusted_ci_low"], test["adjusted_ci_high"], unit=unit)
        return (f"{where} {direction} with the dose: {slope} {per} (95% CI {interval}, {adjusted} at the adjusted "
                f"level; t-test on the slope over {t['n_units']} {units}, {adj}).")
    return (f"{where}: no dose–response detected ({slope} {per}, 95% CI {interval}; {adj}). A slope of "
            f"{_size_text(t['mde_display'], metric)} {per} or more would have been detected with "
            f"{pct(settings.power, 0)} power.")


def contrast_sentence(c: Mapping[str, Any], metric: Mapping[str, Any], settings: Settings) -> str:
    test = c["test"]
    head = f"{metric['name']}, {c['run']} − {c['baseline']}"
    if test["verdict"] == "not testable":
        return f"{head}: not testable ({test['reason']})."
    values = (f"{_value_text(c['difference'], metric, True)}, 95% CI "
              f"{_interval_text(c['ci_low'], c['ci_high'], metric, True)}; {c['method']}, "
              f"{pval(test['p_adjusted'])} after {_adjustment(settings)}")
    if test["verdict"] == "finding":
        return f"{head}: {values}."
    return f"{head}: nothing detected ({values}; detectable: {_size_text(c['mde'], metric)})."


# ------------------------------------------------------------------ the study
def _baseline_for(run: StudyRun, runs: Sequence[StudyRun], baseline: str) -> StudyRun | None:
    """The baseline of ``run``: the run named ``baseline`` (paired when under the same condition, else unpaired),
    or the run of the generator named ``baseline`` under ``run``'s condition (None when there is none)."""
    named = next((r for r in runs if r.name == baseline), None)
    return named or next((r for r in runs if r.generator == baseline and r.condition == run.condition), None)


def _metric_dict(m: Headline) -> dict[str, Any]:
    return {"key": m.key, "name": m.name, "unit": m.unit, "statistic": m.statistic, "meaning": m.meaning}


def build_study(runs: Sequence[StudyRun], settings: Settings | None = None, baseline: str | None = None
                ) -> dict[str, Any]:
    """The study dict (JSON-ready): runs × metrics with intervals and baseline contrasts, trends per condition,
    the first-screen sentences and the power of the most informative condition."""
    settings = settings or Settings()
    if len(runs) < 2:
        raise PulseAuditError("a study needs at least two runs")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise PulseAuditError(f"two runs share a name: {sorted({n for n in names if names.count(n) > 1})}")
    baseline = baseline or runs[0].name
    if not any(baseline in (r.name, r.generator) for r in runs):
        raise PulseAuditError(f"baseline {baseline!r} is neither a run name nor a generator of the study's runs")
    kw = {"alpha": settings.alpha, "power": settings.power, "confidence": settings.confidence}
    metrics = headlines(runs)
    values = {(r.name, m.key): m.values(r) for r in runs for m in metrics}
    primary, secondary = Family("D", "dose–response"), Family("B", "vs baseline")
    rows, contrasts = [], []
    for run in runs:
        base = _baseline_for(run, runs, baseline)
        cells = {}
        for m in metrics:
            summary: Summary | None = summarise(values[run.name, m.key], m.statistic, settings.confidence)
            cell: dict[str, Any] = {"summary": summary.__dict__ if summary else None}
            vb, vr = (values[base.name, m.key], values[run.name, m.key]) if base else (None, None)
            if base is not None and base is not run and vb is not None and vr is not None:
                c = contrast(base, run, vb, vr, **kw, statistic=m.statistic)
                test_id = secondary.add(c.test(f"{m.name}: {run.name} − {base.name}", m.unit or "pp",
                                               1.0 if m.unit else 100.0, settings.confidence,
                                               f"{run.name} − {base.name}" + ("" if m.unit else " (pp)")))
                contrasts.append({"metric": m.key, "run": run.name, "baseline": base.name, "difference": c.estimate,
                                  "ci_low": c.ci_low, "ci_high": c.ci_high, "mde": c.mde, "method": c.method,
                                  "test_id": test_id,
                                  "paired": base.condition == run.condition})
                cell["contrast"] = test_id
            cells[m.key] = cell
        rows.append({"name": run.name, "label": run.info.get("label", run.name), "upsampler": run.upsampler,
                     "generator": run.generator, "composition": run.composition, "dose": run.dose,
                     "design": run.design, "factor": run.factor, "resolution": run.resolution,
                     "condition": list(run.condition), "baseline": base.name if base else None, "cells": cells,
                     "root": run.info.get("root", "")})
    many_inputs = len({json.loads(r.inputs)["dataset"] for r in runs}) > 1  # name the face set only if several
    trends = []
    for cond, design in [(c, d) for c in conditions(runs) for d in DOSE_AXES]:
        members = [r for r in runs if r.condition == cond and r.design == design]
        if sum(math.isfinite(r.dose) for r in members) < 2:
            continue
        for m in metrics:
            ct = condition_trend(members, [values[r.name, m.key] for r in members], **kw)
            if not ct.runs:
                continue
            scale, per, axis = DOSE_AXES[ct.design]
            label = condition_label(cond[1], cond[2], cond[0], many_inputs)
            test_id = primary.add(ct.trend.test(f"{m.name}: dose–response ({design}) at {label}", m.unit or "pp",
                                                (1.0 if m.unit else 100.0) * scale, settings.confidence,
                                                effect_label=f"slope {per}"))
            tr = ct.trend
            trends.append({"metric": m.key, "condition": label, "factor": cond[1], "resolution": cond[2],
                           "design": ct.design, "runs": list(ct.runs), "doses": list(ct.doses),
                           "values": list(ct.values), "slope": tr.slope, "ci_low": tr.ci_low, "ci_high": tr.ci_high,
                           "slope_display": _scaled(tr.slope, scale), "ci_low_display": _scaled(tr.ci_low, scale),
                           "ci_high_display": _scaled(tr.ci_high, scale), "mde_display": _scaled(tr.mde, scale),
                           "per": per, "dose_axis": axis, "intercept": tr.intercept, "n_units": tr.n_units,
                           "residual_sd": tr.residual_sd, "df": tr.df, "method": tr.method,
                           "permutation_p": ct.permutation_p, "test_id": test_id})
    tests = {"primary": primary.table(settings), "secondary": secondary.table(settings)}
    by_id = {t["id"]: t for family in tests.values() for t in family}
    metric_dicts = {m.key: _metric_dict(m) for m in metrics}
    for t in trends:
        t["test"] = by_id[t.pop("test_id")]
        t["sentence"] = trend_sentence(t, metric_dicts[t["metric"]], settings)
    for c in contrasts:
        c["test"] = by_id[c.pop("test_id")]
        c["sentence"] = contrast_sentence(c, metric_dicts[c["metric"]], settings)
    study = {"schema": SCHEMA, "generated": datetime.now(UTC).isoformat(timespec="seconds"),
             "settings": {**settings.stats(), "adjustment": _adjustment(settings)}, "baseline": baseline,
             "metrics": list(metric_dicts.values()), "runs": rows, "contrasts": contrasts, "trends": trends,
             "tests": tests}
    study["power"] = power_panels(runs, trends, settings)
    study["answer"] = answer(trends, metric_dicts, settings)
    return clean(study)


ACROSS = {"composition": "training compositions", "shift": "prior shifts"}
DESIGN_LABELS = {"composition": "Generators trained on different skin-tone compositions",
                 "shift": "One generator with its prior shifted along a skin-tone direction"}


def _factors(factors: Sequence[int]) -> str:
    return ", ".join(f"×{f}" for f in factors)


def answer(trends: Sequence[Mapping[str, Any]], metrics: Mapping[str, Mapping[str, Any]], settings: Settings
           ) -> dict[str, Any]:
    """The first screen: per dose design, at which factors the skin-tone metrics follow the dose; the sentences
    of the findings, then those of the primary metrics where nothing was detected or nothing could be tested."""
    order = {k: i for i, k in enumerate(SKIN_METRICS)}
    ranked = sorted(trends, key=lambda t: (t["design"], order.get(t["metric"], len(order)), t["factor"]))
    lead = []
    for design, label in DESIGN_LABELS.items():
        skin = [t for t in ranked if t["design"] == design and t["metric"] in order]
        if not skin:
            continue
        units = max(len(t["runs"]) for t in skin)
        found = sorted({t["factor"] for t in skin if t["test"]["verdict"] == "finding"})
        tested = sorted({t["factor"] for t in skin if t["test"]["verdict"] != "not testable"})
        head = f"{label} ({units} per factor): "
        if found:
            quiet = [f for f in tested if f not in found]
            lead.append(head + f"the outputs' skin tone follows the dose at {_factors(found)}"
                        + (f"; no dose–response was detected at {_factors(quiet)}." if quiet else "."))
        elif tested:
            lead.append(head + f"no dose–response of the outputs' skin tone was detected at {_factors(tested)}.")
        else:
            lead.append(head + "no dose–response could be tested (reasons below).")
    return {"lead": lead or ["No run has a dose: nothing to test for a dose–response."],
            "found": [t["sentence"] for t in ranked if t["metric"] in order and t["test"]["verdict"] == "finding"],
            "not_found": [t["sentence"] for t in ranked if t["metric"] in PRIMARY_METRICS
                          and t["test"]["verdict"] != "finding"],
            "other_found": [t["sentence"] for t in ranked if t["metric"] not in order
                            and t["test"]["verdict"] == "finding"]}


def power_panels(runs: Sequence[StudyRun], trends: Sequence[Mapping[str, Any]], settings: Settings
                 ) -> list[dict[str, Any]]:
    """One power panel per dose design: at the design's largest factor (where the input carries least
    information), for the first primary metric tested there, the detectable slope and the power to detect the
    *known* slope of the generators' own samples (their mean ITA by dose, from the cards) with the observed noise,
    and how many units would reach the power goal."""
    panels = []
    for design in DOSE_AXES:
        candidates = [t for t in trends if t["design"] == design and t["metric"] in PRIMARY_METRICS
                      and t["test"]["verdict"] != "not testable"]
        if candidates:
            top = max(t["factor"] for t in candidates)
            t = min((t for t in candidates if t["factor"] == top), key=lambda t: PRIMARY_METRICS.index(t["metric"]))
            panels.append(power_panel(runs, t, settings))
    return panels


def power_panel(runs: Sequence[StudyRun], t: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The power panel of one trend (see :func:`power_panels`)."""
    scale = DOSE_AXES[t["design"]][0]
    doses = np.array(t["doses"], float)
    known = {r.name: r.info.get("generator_samples_ita") for r in runs if r.name in t["runs"]}
    panel = {"metric": t["metric"], "condition": t["condition"], "factor": t["factor"], "design": t["design"],
             "n_units": t["n_units"], "residual_sd": t["residual_sd"], "mde": t["mde_display"], "per": t["per"],
             "alpha": settings.alpha, "power_goal": settings.power, "known_slope": None, "power_at_known": None,
             "units_needed": None, "known_source": ""}
    ita = np.array([known[n] if known.get(n) is not None else np.nan for n in t["runs"]], float)
    ok = np.isfinite(ita)
    if ok.sum() < 2 or np.unique(doses[ok]).size < 2:
        return panel
    x, y = doses[ok], ita[ok]
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    if t["design"] == "composition":
        se = t["residual_sd"] / math.sqrt(float(((doses - doses.mean()) ** 2).sum()))
        needed = generators_for_power(slope, t["residual_sd"], doses, settings.alpha, settings.power)
    else:
        se = t["residual_sd"] / math.sqrt(t["n_units"])
        needed = inputs_for_power(slope, t["residual_sd"], settings.alpha, settings.power)
    panel.update(known_slope=slope * scale, units_needed=needed,
                 power_at_known=t_power(abs(slope) / se, t["df"], settings.alpha) if se > 0 else None,
                 known_source=f"the generators' own samples (mean ITA from their cards, {len(x)} generators) move "
                              f"{signed(slope * scale)}° {t['per']}")
    return panel


def validation_summary(report: Mapping[str, Any]) -> str:
    """One paragraph of a run report's skin-tone instrument validation (planted colour change and resolution), or
    "" when the report has none."""
    v = report.get("instrument_validation") or {}
    parts = []
    for row in v.get("planted", []):
        slope_ci, bias_ci = row.get("slope_ci") or [None, None], row.get("bias_ci") or [None, None]
        parts.append(f"{row['instrument']} at {row['side']} px: measured ΔITA vs planted ΔITA slope "
                     f"{num(row.get('slope'))} (95% CI {ci(*slope_ci)}; 1 is ideal), bias {signed(row.get('bias'))}° "
                     f"(95% CI {ci(*bias_ci, unit='°')}), over {row.get('faces_measured')} of "
                     f"{row.get('faces')} images")
    reference = max(v.get("sides") or [0])
    for row in (r for r in v.get("resolution", []) if r.get("side") != reference):
        parts.append(f"{row['instrument']} at {row['side']} px vs {reference} px: paired change "
                     f"{signed(row.get('paired_difference'))}°, {pct(row.get('share_measured'))} of images measured")
    return "; ".join(parts) + "." if parts else ""


# ------------------------------------------------------------------ writing
def load_study_runs(run_dirs: Sequence[Path], doses: Mapping[str, float] | None = None,
                    designs: Mapping[str, str] | None = None) -> list[StudyRun]:
    """Load run folders as study runs named by their folder (by run id where two folders share a name);
    ``doses``/``designs`` are overrides keyed by that name."""
    runs = [load_run(p) for p in run_dirs]
    leaves = [r.root.name for r in runs]
    names = [leaf if leaves.count(leaf) == 1 else r.name for leaf, r in zip(leaves, runs)]
    doses, designs = doses or {}, designs or {}
    return [study_run(r, doses.get(n), designs.get(n), n) for r, n in zip(runs, names)]


def write_json(study: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(study, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def write_study(runs: Sequence[StudyRun], out: Path, settings: Settings | None = None, baseline: str | None = None,
                extras: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Compute the study and write OUT/study.{json,html,md}; ``extras`` (demo: showcase grids, validation,
    links) are rendered below the study in the HTML only."""
    from reports.html import render
    from reports.study_plots import study_figures

    settings = settings or Settings()
    study = build_study(runs, settings, baseline)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "study.json", "html": out / "study.html", "md": out / "study.md"}
    write_json(study, paths["json"])
    paths["html"].write_text(render("study.html.j2", s=study, figures=study_figures(study), extras=extras or {}))
    paths["md"].write_text(render("study.md.j2", s=study))
    return paths
