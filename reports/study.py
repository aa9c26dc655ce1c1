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
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.core.schema import ITEM
from audit.metrics.study import (
    PRIOR_INSTRUMENTS,
    Headline,
    StudyRun,
    Summary,
    card_prior_ita,
    condition_trend,
    conditions,
    contrast,
    finite_number,
    headlines,
    prior_instrument,
    prior_slope,
    sampling_variance,
    summarise,
)
from audit.metrics.study_power import (
    Attenuation,
    design_power,
    detectable_slope,
    shift_attenuation,
)
from audit.stats.multitest import report_tests
from audit.stats.tests import TestResult
from pulse_engine.errors import PulseAuditError, WeightsError
from pulse_engine.generators.card_file import read_card
from reports.analysis import Settings
from reports.formatting import ci, num, pct, pval, signed
from reports.run_data import Run, dataset_info, generator_record, load_run, model_info
from reports.tables import clean

SCHEMA = "pulse-audit-study/1"
PRIMARY_METRICS = ("ucpr_ita_aligned", "delta_ita_aligned", "ucpr_ita", "delta_ita")
"""The primary metric of a condition, pre-specified: the first of these its runs measure. Both read the outputs'
skin tone in the generator's aligned face frame (no detector, so no selection by detection): on the uninformative
average faces (where only the prior can speak) when the runs have them, else as ΔITA on the real inputs. Across
generators on fixed inputs both slopes are the dose-slope of the outputs' ITA. Runs without the aligned-frame
instrument fall back to the detector-based pair, in the same order."""
DOSE_AXES = {"composition": (0.1, "per +10 pp of light faces in training", "share of light faces in training"),
             "shift": (1.0, "per prior SD of latent shift", "prior shift (SD along the skin-tone direction)")}


# ------------------------------------------------------------------ runs → study runs (doses from cards)
def generator_card(run: Run) -> dict[str, Any] | None:
    """The generator's full card, from the files recorded in run.json: among the ``card.json`` files listed with its
    weights, a prior-shift member's own card (it lists its base's card too), else the first; without any, the
    ``card.json`` beside its first weights file. Each is read by :func:`~pulse_engine.generators.card_file.read_card`
    (a regular file, bounded in size and nesting); one that cannot be read is left out."""
    recorded = generator_record(run) or {}
    paths = [Path(entry["path"]) for entry in recorded.get("weights", []) if entry["path"]]
    cards = []
    for card in [p for p in paths if p.name == "card.json"] or [p.parent / "card.json" for p in paths[:1]]:
        try:
            cards.append(read_card(card, "generator card"))
        except WeightsError:
            continue
    return next((c for c in cards if shift_dose(c) is not None), cards[0] if cards else None)


def _training_data(card: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A card's ``training_data`` object ({} when it has none or holds another JSON type)."""
    data = (card or {}).get("training_data")
    return data if isinstance(data, Mapping) else {}


def shift_dose(card: Mapping[str, Any] | None) -> float | None:
    """The prior shift of a shifted-family member's card (``alpha``, in prior SDs), None for other cards."""
    card = card or {}
    return finite_number(card.get("alpha", _training_data(card).get("prior_shift_sd")))


def composition_dose(card: Mapping[str, Any] | None, summary: str = "") -> tuple[float, str]:
    """Share of light faces in the generator's training data and a display string, from the card's
    ``training_data`` (requested composition or counts: non-negative numbers with a positive sum), else from its
    one-line summary "light 2800 (50%), …"."""
    data = _training_data(card)
    shares = data.get("composition_requested") or data.get("counts")
    counts = {str(k): finite_number(v) for k, v in shares.items()} if isinstance(shares, Mapping) else {}
    usable = counts and all(v is not None and v >= 0 for v in counts.values()) and sum(counts.values()) > 0
    if usable:
        total = sum(counts.values())
        parts = {k: v / total for k, v in counts.items()}
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
    gen = model["generator"] or {}
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
                     "sampling": "; ".join(dataset_info(run).get("sampling", [])[:1]),
                     "prior_ita": card_prior_ita(card)})


# ------------------------------------------------------------------ tests and verdicts
class Family:
    """Tests adjusted together (:func:`audit.stats.multitest.report_tests`); each gets an id with the family's
    prefix. Not-testable results stay out of the family (their ids are kept, their rows say why)."""

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


def display_unit(metric: Mapping[str, Any]) -> str:
    """The unit of a metric's slopes and differences as printed: its own unit, or percentage points for rates."""
    return metric["unit"] or " pp"


def units_text(t: Mapping[str, Any]) -> str:
    """What the trend's units are, e.g. "9 generators" or "72 inputs"."""
    return f"{t['n_units']} {'generators' if t['design'] == 'composition' else 'inputs'}"


def units_note(t: Mapping[str, Any]) -> str:
    """Why a shift-design trend has the units it has: how many of the units its runs all searched carry a value, and
    where those units come from (the runs' sampling, or average faces × seeds); "" for the composition design."""
    if t["design"] != "shift":
        return ""
    n, offered, basis = t["n_units"], t["units_searched"], t["units_basis"]
    kind = "(average face, seed) units" if t["uninformative"] else "inputs"
    share = f"all {offered}" if n == offered else f"{n} (with a value) of the {offered}"
    more = "" if t["uninformative"] else "; only more inputs (--per-group) add units, not more outputs per input"
    return f"Shift design at {t['condition']}: {n} units = {share} {kind} every run searched ({basis}){more}."


def trend_sentence(t: Mapping[str, Any], metric: Mapping[str, Any], settings: Settings) -> str:
    """One sentence about a dose–response test, worded by its verdict within its family; the interval is the one at
    the family-adjusted level (it excludes 0 exactly when the adjusted test rejects) and the detectable slope is at
    the family's Bonferroni level α/m (Holm rejects at least every test with p < α/m)."""
    per, test, unit = t["per"], t["test"], display_unit(metric)
    where = f"At {t['condition']}, across {ACROSS[t['design']]} ({units_text(t)}), {metric['name']}"
    if test["verdict"] == "not testable":
        return f"{where}: dose–response not testable ({test['reason']})."
    slope = f"{signed(test['effect'])}{unit} {per}"
    adjusted = (f"{ci(test['adjusted_ci_low'], test['adjusted_ci_high'], unit=unit)} at the "
                f"{pct(1 - test['adjusted_level'])} level that {_adjustment(settings)} assigns this test")
    adj = (f"{pval(test['p_adjusted'])} after {_adjustment(settings)} over the {test['family_size']} tests of its "
           "family")
    if test["verdict"] == "finding":
        direction = "rises" if test["effect"] > 0 else "falls"
        return f"{where} {direction} with the dose: {slope} ({adjusted}; t-test on the slope, {adj})."
    return (f"{where}: no dose–response detected ({slope}, {adjusted}; {adj}). A slope of "
            f"{num(t['mde_family'])}{unit} {per} or more would have been detected with {pct(settings.power, 0)} power "
            f"at the family's level α/m = {num(t['alpha_family'])}.")


def contrast_sentence(c: Mapping[str, Any], metric: Mapping[str, Any], settings: Settings) -> str:
    test = c["test"]
    head = f"{metric['name']}, {c['run']} − {c['baseline']}"
    if test["verdict"] == "not testable":
        return f"{head}: not testable ({test['reason']})."
    unit = display_unit(metric)
    values = (f"{signed(test['effect'])}{unit}, {ci(test['adjusted_ci_low'], test['adjusted_ci_high'], unit=unit)} at "
              f"the {_adjustment(settings)}-adjusted level {pct(1 - test['adjusted_level'])}; {c['method']}, "
              f"{pval(test['p_adjusted'])} after {_adjustment(settings)}")
    if test["verdict"] == "finding":
        return f"{head}: {values}."
    return f"{head}: nothing detected ({values}; detectable at 95%: {num(test['mde'])}{unit})."


# ------------------------------------------------------------------ the study
def _baseline_for(run: StudyRun, runs: Sequence[StudyRun], baseline: str) -> StudyRun | None:
    """The baseline of ``run``: the run named ``baseline`` (paired when under the same condition, else unpaired),
    or the run of the generator named ``baseline`` under ``run``'s condition (None when there is none)."""
    named = next((r for r in runs if r.name == baseline), None)
    return named or next((r for r in runs if r.generator == baseline and r.condition == run.condition), None)


def _metric_dict(m: Headline) -> dict[str, Any]:
    return {"key": m.key, "name": m.name, "unit": m.unit, "statistic": m.statistic, "meaning": m.meaning}


def primary_metric(members: Sequence[StudyRun], values: Mapping[tuple[str, str], Any]) -> str | None:
    """The pre-specified primary metric of one condition and design: the first of :data:`PRIMARY_METRICS` that at
    least two of its dosed runs measure (chosen by what was measured, never by a result)."""
    for key in PRIMARY_METRICS:
        if sum(values[r.name, key] is not None and len(values[r.name, key]) > 0 and math.isfinite(r.dose)
               for r in members) >= 2:
            return key
    return None


def build_study(runs: Sequence[StudyRun], settings: Settings | None = None, baseline: str | None = None
                ) -> dict[str, Any]:
    """The study dict (JSON-ready): runs × metrics with intervals and baseline contrasts, trends per condition in a
    primary and a secondary family, the first-screen sentences (primary family only) and the power panels."""
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
    families = {"primary": Family("P", "primary dose–response"), "secondary": Family("S", "secondary dose–response"),
                "baseline": Family("B", "vs baseline")}
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
                test_id = families["baseline"].add(c.test(f"{m.name}: {run.name} − {base.name}", m.unit or "pp",
                                                          1.0 if m.unit else 100.0, settings.confidence,
                                                          f"{run.name} − {base.name}" + ("" if m.unit else " (pp)")))
                contrasts.append({"metric": m.key, "run": run.name, "baseline": base.name, "method": c.method,
                                  "test_id": test_id, "paired": base.condition == run.condition})
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
        first = primary_metric(members, values)
        for m in metrics:
            ct = condition_trend(members, [values[r.name, m.key] for r in members], **kw,
                                 searched=[m.searched(r) for r in members])
            if not ct.runs:
                continue
            scale, per, axis = DOSE_AXES[ct.design]
            label = condition_label(cond[1], cond[2], cond[0], many_inputs)
            role = "primary" if m.key == first else "secondary"
            display = (1.0 if m.unit else 100.0) * scale  # slope per dose unit → per displayed dose step, in pp
            test_id = families[role].add(ct.trend.test(f"{m.name}: dose–response ({design}) at {label}",
                                                       m.unit or "pp", display, settings.confidence,
                                                       effect_label=f"slope {per}"))
            tr = ct.trend
            sampling = [sampling_variance(values[name, m.key]) for name in ct.runs]
            trends.append({"metric": m.key, "role": role, "condition": label, "factor": cond[1],
                           "resolution": cond[2], "design": ct.design, "runs": list(ct.runs), "doses": list(ct.doses),
                           "units_searched": ct.units_searched, "uninformative": m.uninformative,
                           "units_basis": m.units_basis(next(r for r in members if r.name == ct.runs[0])),
                           "values": list(ct.values), "slope": tr.slope, "se": tr.se, "display_scale": display,
                           "per": per, "dose_axis": axis, "intercept": tr.intercept, "n_units": tr.n_units,
                           "residual_sd": tr.residual_sd, "df": tr.df, "method": tr.method,
                           "sampling_variances": sampling, "permutation_p": ct.permutation_p, "test_id": test_id})
    tests = {name: family.table(settings) for name, family in families.items()}
    by_id = {t["id"]: t for family in tests.values() for t in family}
    metric_dicts = {m.key: _metric_dict(m) for m in metrics}
    for t in trends:
        t["test"] = by_id[t.pop("test_id")]
        m = max(t["test"]["family_size"], 1)
        t["alpha_family"] = settings.alpha / m
        t["mde_family"] = (detectable_slope(t["se"], t["df"], settings.alpha / m, settings.power) * t["display_scale"]
                           if t["test"]["verdict"] != "not testable" else None)
        t["sentence"] = trend_sentence(t, metric_dicts[t["metric"]], settings)
        t["units_note"] = units_note(t)
    for c in contrasts:
        c["test"] = by_id[c.pop("test_id")]
        c["sentence"] = contrast_sentence(c, metric_dicts[c["metric"]], settings)
    study = {"schema": SCHEMA, "generated": datetime.now(UTC).isoformat(timespec="seconds"),
             "settings": {**settings.stats(), "adjustment": _adjustment(settings)}, "baseline": baseline,
             "metrics": list(metric_dicts.values()), "runs": rows, "contrasts": contrasts, "trends": trends,
             "tests": tests, "families": family_statements(tests, settings)}
    study["power"] = power_panels(runs, trends, settings)
    study["answer"] = answer(trends, metric_dicts)
    study["not_testable"] = not_testable_summary(trends, metric_dicts)
    return clean(study)


ACROSS = {"composition": "training compositions", "shift": "prior shifts"}
DESIGN_LABELS = {"composition": "Generators trained on different skin-tone compositions",
                 "shift": "One generator with its prior shifted along a skin-tone direction"}
FAMILY_TEXT = {
    "primary": "Primary family (the first screen's sentences come only from it): one pre-specified metric per dose "
               "design and factor — the outputs' skin tone in the generator's aligned face frame (no detector, every "
               "output measured), on the uninformative average faces where the run has them (the prior speaks "
               "there), else ΔITA on the real inputs",
    "secondary": "Secondary, exploratory family: every other metric × factor × design",
    "baseline": "Contrasts against the baseline run"}


def family_statements(tests: Mapping[str, Sequence[Mapping[str, Any]]], settings: Settings) -> dict[str, str]:
    """One sentence per family: what it holds, its size, its adjustment and how its intervals are read."""
    out = {}
    for name, rows in tests.items():
        m = sum(r["verdict"] != "not testable" for r in rows)
        found = sum(r["verdict"] == "finding" for r in rows)
        out[name] = (f"{FAMILY_TEXT[name]}: {m} tests adjusted together by {_adjustment(settings)} at α = "
                     f"{num(settings.alpha)} ({found} finding{'s' if found != 1 else ''}; "
                     f"{len(rows) - m} not testable, outside the family). Each adjusted interval is the test's own "
                     f"t interval at the level {_adjustment(settings)} assigns it (1 − α·p/p̃): it excludes 0 exactly "
                     "when the adjusted test rejects; at the smallest p it is the Bonferroni (simultaneous) interval.")
    return out


def _factors(factors: Sequence[int]) -> str:
    return ", ".join(f"×{f}" for f in factors)


def lead_size(t: Mapping[str, Any], unit: str) -> str:
    """"×16: +3.3° per …, adjusted interval 0.1 to 6.6°" for a primary finding."""
    test = t["test"]
    return (f"×{t['factor']}: {signed(test['effect'])}{unit} {t['per']}, adjusted interval "
            f"{ci(test['adjusted_ci_low'], test['adjusted_ci_high'], unit=unit)}")


def answer(trends: Sequence[Mapping[str, Any]], metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The first screen, from the primary family only: per dose design, at which factors the outputs' skin tone
    follows the dose (with the slope and its adjusted interval), then one sentence per primary test."""
    primary = sorted((t for t in trends if t["role"] == "primary"), key=lambda t: (t["design"], t["factor"]))
    lead = []
    for design, label in DESIGN_LABELS.items():
        mine = [t for t in primary if t["design"] == design]
        if not mine:
            continue
        units = max(len(t["runs"]) for t in mine)
        found = [t for t in mine if t["test"]["verdict"] == "finding"]
        quiet = [t["factor"] for t in mine if t["test"]["verdict"] == "nothing detected"]
        head = f"{label} ({units} {'generators' if design == 'composition' else 'prior shifts'} per factor): "
        if found:
            sizes = "; ".join(lead_size(t, display_unit(metrics[t["metric"]])) for t in found)
            lead.append(head + f"the outputs' skin tone follows the dose at {_factors([t['factor'] for t in found])}"
                        f" ({sizes})" + (f"; no dose–response was detected at {_factors(quiet)}." if quiet else "."))
        elif quiet:
            lead.append(head + f"no dose–response of the outputs' skin tone was detected at {_factors(quiet)}.")
        else:
            lead.append(head + "no dose–response could be tested (reasons below).")
    return {"lead": lead or ["No run has a dose: nothing to test for a dose–response."],
            "primary": [t["sentence"] for t in primary],
            "secondary_found": [t["sentence"] for t in trends
                                if t["role"] == "secondary" and t["test"]["verdict"] == "finding"]}


def not_testable_summary(trends: Sequence[Mapping[str, Any]], metrics: Mapping[str, Mapping[str, Any]]
                         ) -> list[dict[str, Any]]:
    """The dose–response tests that could not be run, grouped by reason (one line each on the page)."""
    groups: dict[str, list[str]] = {}
    for t in trends:
        if t["test"]["verdict"] == "not testable":
            groups.setdefault(t["test"]["reason"], []).append(
                f"{metrics[t['metric']]['name']} ×{t['factor']} ({t['design']})")
    return [{"reason": reason, "tests": tests} for reason, tests in groups.items()]


def power_panels(runs: Sequence[StudyRun], trends: Sequence[Mapping[str, Any]], settings: Settings
                 ) -> list[dict[str, Any]]:
    """One power panel per dose design at its largest factor (the input carries least information there), for its
    primary test, at the primary family's Bonferroni level α/m (a lower bound of Holm's power). The composition
    panel asks for the power to detect the *expected output* slope, with the attenuation the shift design measured
    at its largest factor (:mod:`audit.metrics.study_power`)."""
    primary = [t for t in trends if t["role"] == "primary" and t["test"]["verdict"] != "not testable"]
    tops = {d: max((t for t in primary if t["design"] == d), key=lambda t: t["factor"], default=None)
            for d in DOSE_AXES}
    shift, measured = tops.get("shift"), None
    instrument = prior_instrument(runs, [name for t in tops.values() if t is not None for name in t["runs"]])
    if shift is not None:
        scale = shift["display_scale"]
        measured = shift_attenuation(shift["slope"], shift["test"]["ci_low"] / scale, shift["test"]["ci_high"] / scale,
                                     prior_slope(runs, shift["runs"], shift["doses"], instrument))
    return [power_panel(runs, t, settings, measured if design == "composition" else None,
                        shift["factor"] if shift is not None else None, instrument)
            for design, t in tops.items() if t is not None]


def power_panel(runs: Sequence[StudyRun], t: Mapping[str, Any], settings: Settings, attenuation: Attenuation | None,
                attenuation_factor: int | None, instrument: str = "detector") -> dict[str, Any]:
    """The power panel of one primary trend (see :func:`power_panels`); slopes in display units (``t['per']``); the
    prior slope by ``instrument`` (each instrument's slope is listed too, for comparison)."""
    scale, alpha = t["display_scale"], t["alpha_family"]
    panel = {"metric": t["metric"], "condition": t["condition"], "factor": t["factor"], "design": t["design"],
             "n_units": t["n_units"], "units": units_text(t), "residual_sd": t["residual_sd"], "per": t["per"],
             "alpha": alpha, "family_size": t["test"]["family_size"], "power_goal": settings.power,
             "mde": t["mde_family"], "observed": t["test"]["effect"], "prior_slope": None, "attenuation": None,
             "expected": None, "expected_low": None, "power_expected": None, "power_expected_low": None,
             "sampling_sd": None, "between_sd": None, "sizing": [], "generators_needed": None,
             "prior_instrument": instrument, "prior_instrument_text": PRIOR_INSTRUMENTS[instrument],
             "prior_slopes": {i: prior_slope(runs, t["runs"], t["doses"], i) * scale for i in PRIOR_INSTRUMENTS}}
    prior = prior_slope(runs, t["runs"], t["doses"], instrument)
    if math.isfinite(prior):
        panel["prior_slope"] = prior * scale
    if t["design"] != "composition" or attenuation is None or not math.isfinite(prior):
        return panel
    design = design_power(prior, attenuation, t["doses"], t["residual_sd"], t["sampling_variances"], alpha,
                          settings.power)
    panel.update(attenuation={**asdict(attenuation), "factor": attenuation_factor}, expected=design.expected * scale,
                 expected_low=design.expected_low * scale, sampling_sd=design.sampling_sd,
                 between_sd=design.between_sd, power_expected=design.power_expected,
                 power_expected_low=design.power_expected_low, sizing=design.sizing,
                 generators_needed=design.generators_needed)
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
