"""Report-level validity battery: how often a whole report states a false finding under nulls, how often every kind
of interval covers the truth, and how planted effects are detected.

Run tables come from this module's own generator (not ``tests/synthetic_run.py``) and go through the report logic
(:func:`reports.analysis.build_report`: every test, the Holm family, the verdicts and the findings), so what is
measured is what a reader of ``report.json`` would be told.

The generator. Inputs are stratified by a grouping attribute ("race", classes c0, c1, …, fixed counts per group) and
carry a second, non-grouping attribute ("age", 9 bins, cyclic). For each attribute, an input of class g gives each
sample's output label from P(· | g) = a·δ_g + F_g·/π_g, where F is a symmetric off-diagonal flow matrix with row
sums (1 − a)·π_g (found by symmetric Sinkhorn scaling of π πᵀ): the joint table is then symmetric, so output and
input shares are equal, flips are symmetric and every group keeps its label with probability a — every test's null
holds exactly. Samples of one input are correlated: with probability ρ all of them repeat one draw. ΔITA per sample
is b_i + e_is (input effect sd 4°, sample noise sd 3°), mean 0 under the null. Uninformative inputs (one average
face per group, 20 samples each) give outputs from the stated reference (the groups, uniform). Planted designs:
20 % of one group's outputs flipped to another class; a ΔITA shift of 0.5 SD (of a sample's ΔITA) in one group.

Truths are computed from the generator's conditional matrices (no simulation), and compared with every interval of the
report: rates and shares (Clopper–Pearson at the effective size, Korn & Graubard 1998), means (cluster-robust t),
medians (sign test at the effective size; the true median of a group's ΔITA is its mean shift, the distribution being
symmetric), and each test's intervals (simultaneous over its components, and at the Holm-adjusted level). Usage:

    python -m benchmarks.validity [--reports 200] [--designs all|null|planted|small|0,3] [--n-boot 100]
                                  [--append benchmarks/RESULTS.md]
    python -m benchmarks.validity --designs 0,1,2 --save part1.json   # parts in parallel, then:
    python -m benchmarks.validity --merge part1.json part2.json --append benchmarks/RESULTS.md
    python -m benchmarks.validity --part between [--reports 400] [--n-boot 2000] [--designs 0,1]  # see SMALL

Small-group designs (numbers 9–14, after the nine 100-input designs 0–8, whose numbers are unchanged): the
fixes for few inputs per group (Korn–Graubard df-adjusted effective sizes, the clustering floor, sign-test medians)
matter most where a real audit of a small face set sits, 2–15 faces per group with 2–4 samples each, which designs
0–8 never reach. Chosen to span it: 7 groups × 10 inputs × 2 samples (a small audit of the seven-class race
vocabulary); 7 × 5 × 3 (half as many faces, more samples each); 4 × 3 × 4 (the floor: 3 inputs per group, so
every per-group rate sits at its clustering floor and medians have no interval); unbalanced 7 groups of 15 down to
3 inputs × 3 samples (small and tiny groups in one Holm family); and, for power, the planted flip and ΔITA shift of
designs 7–8 at 7 × 10 × 2. Power there is low by construction (about 20 outputs per group): the planted rows
show what such an audit can detect, not a goal. With few inputs many intervals are legitimately absent ("none (too
few inputs)") and tests are not testable; the coverage table counts the intervals absent from the report in its
own column ("no interval") beside coverage over those present, and a per-test table lists, for every design, the
reports in which each test stated a finding or was not testable. Interval kinds of an attribute are scored per
attribute (race, the grouping attribute with its small groups; age, 9 bins of 1–2 inputs in design 11) and test
intervals per test kind and source, so a shortfall in one is not averaged away by another; the stratified overall
preservation rate is scored too (its truth Σ_g π_g·P[keep | g]). ``--designs all|null|planted`` keep naming
designs 0–8; ``--designs small`` names 9–14.

The between-group part scores ``MetricFrame.difference()`` and ``.ratio()`` (max − min and min / max of group means
and medians) on small clustered groups (3, 5, 10 or 30 inputs per group, 3 samples each; normal, skewed and tied
values; see :func:`small_groups_draw`), where the report-level designs have 100 inputs per group.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from audit.core import schema
from audit.metrics.frame import Metric, MetricFrame
from reports.analysis import Settings, build_report
from reports.run_data import Run

AGE = tuple(f"{10 * i}-{10 * i + 9}" for i in range(9))
CLASSIFIER = "clf"
ALPHA = 0.05


@dataclass(frozen=True)
class Design:
    """One battery design: group sizes (inputs per race class; 0 = a vocabulary class without inputs), samples per
    input, keep probability a, within-input correlation ρ, no-face probability, planted effects."""

    name: str
    sizes: tuple[int, ...] = (100,) * 7
    samples: int = 2
    keep: float = 0.8
    rho: float = 0.5
    no_face: float = 0.0
    flip: tuple[int, int, float] | None = None  # (from group, to class, share of that group's outputs)
    ita_shift: tuple[int, float] | None = None  # (group, shift in SDs of a sample's ΔITA)
    ucpr: int = 20
    null: bool = True

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(f"c{i}" for i in range(len(self.sizes)))


SD_INPUT, SD_SAMPLE = 4.0, 3.0
NULLS = (
    Design("balanced 7×100"),
    Design("unbalanced (one group 5× another)", sizes=(250, 50, 100, 100, 100, 100, 100)),
    Design("a class with no inputs", sizes=(120, 120, 120, 120, 120, 120, 0)),
    Design("2 samples per input", samples=2, rho=0.7),
    Design("4 samples per input", samples=4, rho=0.5),
    Design("rare classes (< 2 %)", sizes=(200, 200, 200, 150, 10, 8), keep=0.9),
    Design("all outputs without a face", no_face=1.0),
)
PLANTED = (
    Design("planted: 20 % of c1 flipped to c0", flip=(1, 0, 0.2), null=False),
    Design("planted: ΔITA +0.5 SD in c2", ita_shift=(2, 0.5), null=False),
)
SMALL_AUDITS = (
    Design("small: 7 groups × 10 inputs × 2 samples", sizes=(10,) * 7),
    Design("small: 7 groups × 5 inputs × 3 samples", sizes=(5,) * 7, samples=3),
    Design("small: 4 groups × 3 inputs × 4 samples", sizes=(3,) * 4, samples=4),
    Design("small: unbalanced, 15 to 3 inputs × 3 samples", sizes=(15, 12, 9, 7, 5, 4, 3), samples=3),
    Design("small planted: 20 % of c1 flipped to c0, 7 × 10 × 2", sizes=(10,) * 7, flip=(1, 0, 0.2), null=False),
    Design("small planted: ΔITA +0.5 SD in c2, 7 × 10 × 2", sizes=(10,) * 7, ita_shift=(2, 0.5), null=False),
)
DESIGNS = NULLS + PLANTED + SMALL_AUDITS  # the numbers of --designs


def symmetric_flows(pi: np.ndarray, keep: float, iterations: int = 5000) -> np.ndarray:
    """Symmetric F ≥ 0 with zero diagonal and row sums (1 − keep)·π (symmetric Sinkhorn on π πᵀ); needs
    max π ≤ ½ (of the classes present)."""
    target = (1 - keep) * pi
    kernel = np.outer(pi, pi)
    np.fill_diagonal(kernel, 0.0)
    d = np.where(pi > 0, 1.0, 0.0)
    for _ in range(iterations):  # d ← d·√(target / row sums of D K D)
        rows = (kernel * d[None, :]).sum(axis=1) * d
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(target > 0, d * np.sqrt(target / np.where(rows > 0, rows, 1.0)), 0.0)
    flows = d[:, None] * kernel * d[None, :]
    if not np.allclose(flows.sum(axis=1), target, atol=1e-9):
        raise ValueError("no symmetric flow matrix for these shares (a class above one half?)")
    return flows


def conditional(pi: np.ndarray, keep: float) -> np.ndarray:
    """P[output r | input g] = a·δ + F/π (rows of absent classes: identity, never used)."""
    flows = symmetric_flows(pi, keep)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(pi[:, None] > 0, flows / pi[:, None], 0.0)
    return p + np.diag(np.where(pi > 0, keep, 1.0))


@dataclass
class Truth:
    """What the generator implies for one attribute: P[out | in], input shares (rows), the group weights."""

    classes: tuple[str, ...]
    cond: np.ndarray
    pi: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def out_share(self) -> np.ndarray:
        return self.pi @ self.cond

    @property
    def joint(self) -> np.ndarray:
        return self.pi[:, None] * self.cond


def _draw(rng: np.random.Generator, cond: np.ndarray, labels: np.ndarray, samples: int, rho: float) -> np.ndarray:
    """Output class per (input, sample): each input's samples repeat one draw with probability rho."""
    cum = np.cumsum(cond, axis=1)
    cum[:, -1] = 1.0
    shared = (rng.uniform(size=(len(labels), 1)) > cum[labels]).sum(axis=1)
    own = (rng.uniform(size=(len(labels), samples, 1)) > cum[labels][:, None, :]).sum(axis=2)
    same = rng.uniform(size=(len(labels), 1)) < rho
    return np.where(same, shared[:, None], own)


def simulate(design: Design, seed: int) -> tuple[Run, dict[str, Truth], dict[str, float]]:
    """One run table (as a loaded Run) with its truths."""
    rng = np.random.default_rng(seed)
    sizes = np.array(design.sizes)
    race = np.repeat(np.arange(len(sizes)), sizes)
    n = len(race)
    age = np.arange(n) % len(AGE)
    pi_race, pi_age = sizes / n, np.bincount(age, minlength=len(AGE)) / n
    truths = {"race": Truth(design.classes, conditional(pi_race, design.keep), pi_race),
              "age": Truth(AGE, conditional(pi_age, design.keep), pi_age)}
    if design.flip:
        g, to, share = design.flip
        cond = truths["race"].cond.copy()
        cond[g] = (1 - share) * cond[g] + share * np.eye(len(sizes))[to]
        truths["race"] = replace(truths["race"], cond=cond)
    m = design.samples
    out_race = _draw(rng, truths["race"].cond, race, m, design.rho)
    out_age = _draw(rng, truths["age"].cond, age, m, design.rho)
    sd = math.hypot(SD_INPUT, SD_SAMPLE)
    mean_shift = np.zeros(len(sizes))
    if design.ita_shift:
        mean_shift[design.ita_shift[0]] = design.ita_shift[1] * sd
    ita = (mean_shift[race] + rng.normal(0, SD_INPUT, n))[:, None] + rng.normal(0, SD_SAMPLE, (n, m))
    face = rng.uniform(size=(n, m)) >= design.no_face
    names = np.array(design.classes, dtype=object)
    race_label, age_label = schema.label_column("race"), schema.label_column("age")
    race_out, age_out = (schema.classifier_column("out", CLASSIFIER, a) for a in ("race", "age"))
    rows = pd.DataFrame({
        schema.ITEM: np.repeat([f"img{i:05d}" for i in range(n)], m), schema.SAMPLE: np.tile(np.arange(m), n),
        schema.INPUT_KIND: "face", schema.ERROR: "", race_label: np.repeat(names[race], m),
        age_label: np.repeat(np.array(AGE, dtype=object)[age], m),
        race_out: np.where(face, names[out_race], "").ravel(),
        age_out: np.where(face, np.array(AGE, dtype=object)[out_age], "").ravel(),
        schema.DELTA_ITA: np.where(face, ita, np.nan).ravel()})
    present = np.flatnonzero(sizes > 0)
    ucpr = pd.DataFrame({
        schema.ITEM: np.repeat([f"ucpr/{names[g]}" for g in present], design.ucpr),
        schema.SAMPLE: np.tile(np.arange(design.ucpr), len(present)), schema.INPUT_KIND: "ucpr", schema.ERROR: "",
        race_label: np.repeat(names[present], design.ucpr), age_label: "",
        race_out: names[rng.choice(present, len(present) * design.ucpr)],
        age_out: np.array(AGE, dtype=object)[rng.integers(0, len(AGE), len(present) * design.ucpr)],
        schema.DELTA_ITA: np.nan})
    truths["race"].extra["ucpr"] = np.where(sizes > 0, 1.0, 0.0) / len(present)
    meta = {"run_id": f"validity-{seed}", "config": {"group_by": ["race"], "samples": m},
            "dataset": {"name": "validity battery", "labels": {
                "race": {"values": list(design.classes), "source": "annotated"},
                "age": {"values": list(AGE), "source": "annotated"}}},
            "classifiers": [{"name": CLASSIFIER, "attributes": {"race": list(design.classes), "age": list(AGE)}}]}
    shifts = {"all inputs": float(pi_race @ mean_shift), **{str(names[g]): float(mean_shift[g]) for g in present}}
    return Run(Path("/nonexistent/validity"), meta, pd.concat([rows, ucpr], ignore_index=True)), truths, shifts


def component_truth(test: dict[str, Any], truths: dict[str, Truth], shifts: dict[str, float]) -> dict[str, float]:
    """True effect (in the test's unit) of each component of a report test."""
    if test["kind"] == "shift":
        return {c["label"]: shifts[c["label"]] for c in test["components"]}
    t = truths[test["source"].split("/")[0]]
    idx = {c: i for i, c in enumerate(t.classes)}
    delta = 100 * (t.out_share - t.pi)
    if test["kind"] in ("margins", "positive_share"):
        return {c["label"]: float(delta[idx[c["label"]]]) for c in test["components"]}
    if test["kind"] == "flip_symmetry":
        out = {}
        for c in test["components"]:
            i, _, rest = c["label"].partition(" → ")
            a, b = idx[i], idx[rest.removesuffix(" vs back")]
            out[c["label"]] = float(100 * (t.joint[a, b] - t.joint[b, a]))
        return out
    if test["kind"] == "preservation_gap":
        keep = np.diag(t.cond)
        pooled = float(t.pi @ keep)
        return {c["label"]: float(100 * (keep[idx[c["label"]]] - pooled)) for c in test["components"]}
    if test["kind"] == "ucpr":
        return {c["label"]: 0.0 for c in test["components"]}
    raise ValueError(f"no truth for kind {test['kind']!r}")


class Tally:
    """Covered / with an interval / without one (the report's row gives none), per interval kind (with a separate
    line for true rates below 1 %)."""

    def __init__(self) -> None:
        self.hits: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.zero_width = 0

    def add(self, kind: str, low: Any, high: Any, truth: float) -> None:
        key = f"{kind} (true rate < 1 %)" if kind.startswith(("rate", "share")) and truth < 0.01 else kind
        if not (_bound(low) and _bound(high)):
            self.hits[key][2] += 1
            return
        self.zero_width += low == high
        self.hits[key][0] += low - 1e-12 <= truth <= high + 1e-12
        self.hits[key][1] += 1


def _bound(value: Any) -> bool:
    """Whether a report's interval end is a number (absent ends are None or a reason)."""
    return value is not None and not isinstance(value, str)


def verdict_label(test: dict[str, Any]) -> str:
    """A report test's name in the per-test table: kind (source, group)."""
    group = f", {test['group']}" if test["group"] else ""
    return f"{test['kind']} ({test['source']}{group})"


def score_report(report: dict[str, Any], truths: dict[str, Truth], shifts: dict[str, float], design: Design,
                 tally: Tally) -> dict[str, Any]:
    """Findings, verdict counts, planted detection/direction, and the coverage of every interval in ``tally``."""
    for a in report["attributes"]:
        t = truths[a["attribute"]]
        idx = {c: i for i, c in enumerate(t.classes)}
        on = f" — {a['attribute']}"
        for r in a["by_group"]:
            if r["metric"] == "preservation" and r["group"] in idx and t.pi[idx[r["group"]]] > 0:
                tally.add(f"rate: preservation by group (Clopper–Pearson, effective n){on}", r["ci_low"], r["ci_high"],
                          t.cond[idx[r["group"]], idx[r["group"]]])
        for r in a["overall"]:
            if r["metric"] == "preservation" and a["n_rows"]:
                tally.add(f"rate: preservation overall, stratified (Clopper–Pearson, effective n){on}", r["ci_low"],
                          r["ci_high"], float(t.pi @ np.diag(t.cond)))
        for r in a["transition_rates"]:
            if t.pi[idx[r["input"]]] > 0 and r["row_total"]:
                tally.add(f"rate: transition P(out | in) (Clopper–Pearson, effective n){on}", r["ci_low"], r["ci_high"],
                          t.cond[idx[r["input"]], idx[r["output"]]])
        for r in a["shares"]:
            if r["count"] is not None and a["n_rows"]:
                tally.add(f"share: output shares, stratified (Clopper–Pearson, effective n){on}", r["ci_low"],
                          r["ci_high"], t.out_share[idx[r["category"]]])
        if a["ucpr_shares"] and a["attribute"] == "race":
            for r in a["ucpr_shares"]:
                tally.add("share: UCPR shares (Clopper–Pearson, effective n)", r["ci_low"], r["ci_high"],
                          t.extra["ucpr"][idx[r["category"]]])
    for s in report["shifts"]:
        for r in s["table"]:
            kind = {"mean": "mean: ΔITA by group (cluster-robust t)",
                    "median": "median: ΔITA by group (sign test, effective n)"}
            tally.add(kind[r["metric"]], r["ci_low"], r["ci_high"], shifts[r["group"]])
        spread = [v for g, v in shifts.items() if g != "all inputs"]
        for r in s["differences"]:  # the true group medians are the mean shifts (symmetric ΔITA)
            tally.add(f"{r['metric']} difference: ΔITA max − min over groups ({r['ci_method']})", r["ci_low"],
                      r["ci_high"], max(spread) - min(spread))
    for a in report["attributes"]:
        t = truths[a["attribute"]]
        keep = np.diag(t.cond)[t.pi > 0]
        true = {("preservation", "difference"): float(keep.max() - keep.min()), ("no_face", "difference"): 0.0,
                ("preservation", "ratio"): float(keep.min() / keep.max())}
        for between in ("difference", "ratio"):
            for r in a[f"{between}s"]:
                if (r["metric"], between) in true:
                    tally.add(f"{between} of rates: {r['metric']} "
                              f"{'max − min' if between == 'difference' else 'min / max'} over groups "
                              f"({r['ci_method']}) — {a['attribute']}", r["ci_low"], r["ci_high"],
                              true[r["metric"], between])
    planted = {"detected": False, "direction": None}
    for test in report["tests"]:
        if test["verdict"] == "not testable":
            continue
        truth = component_truth(test, truths, shifts)
        level = {"within": f"test interval, simultaneous within the test — {test['kind']} {test['source']}",
                 "adjusted": "test interval, at the Holm-adjusted level"}
        for key, components in ((level["within"], test["components"]),
                                (level["adjusted"], test["adjusted_components"])):
            given = [c for c in components if _bound(c["ci_low"]) and _bound(c["ci_high"])]
            # a test is scored only when every component has an interval (simultaneous over all of them); one with
            # a component without an interval counts as "no interval" only, not as covered over the rest
            tally.hits[key][2] += len(given) < len(components)
            if given and len(given) == len(components):
                tally.hits[key][0] += all(c["ci_low"] - 1e-9 <= truth[c["label"]] <= c["ci_high"] + 1e-9
                                          for c in given)
                tally.hits[key][1] += 1
        if not design.null and test["verdict"] == "finding":
            expected = _planted_component(design, test)
            if expected:
                planted["detected"] = True
                named = (test["component"], int(np.sign(test["effect"])))
                planted["direction"] = bool(planted["direction"]) or named in expected
    verdicts = [t["verdict"] for t in report["tests"]]
    return {"any_finding": bool(report["findings"]["found"]), "not_testable": verdicts.count("not testable"),
            "tests": len(verdicts), "verdicts": [(verdict_label(t), t["verdict"]) for t in report["tests"]], **planted}


def _planted_component(design: Design, test: dict[str, Any]) -> set[tuple[str, int]] | None:
    """The (component, sign) pairs a finding on the planted effect may name, for the tests that target it: the
    class that gains (+) or the group that loses (−); the shifted group (+)."""
    if design.flip and test["source"] == f"race/{CLASSIFIER}":
        g, to, _ = design.flip
        gain, loss = (f"c{to}", 1), (f"c{g}", -1)
        return {"margins": {gain, loss}, "positive_share": {gain}, "preservation_gap": {loss},
                "flip_symmetry": {(f"c{min(g, to)} → c{max(g, to)} vs back", 1 if g < to else -1)}
                }.get(test["kind"])
    if design.ita_shift and test["kind"] == "shift" and test["group"] in (f"c{design.ita_shift[0]}", None):
        return {("all inputs", 1)} if test["group"] is None else {(f"c{design.ita_shift[0]}", 1)}
    return None


def run_design(design: Design, reports: int, seed: int = 0, n_boot: int = 100) -> dict[str, Any]:
    """``reports`` reports of one design: finding rate, planted detection/direction and the coverage tally."""
    settings = Settings(n_boot=n_boot, positive={"race": "c0"})
    tally, rows = Tally(), []
    for r in range(reports):
        run, truths, shifts = simulate(design, seed + r)
        report = build_report(run, replace(settings, seed=seed + r))
        rows.append(score_report(report, truths, shifts, design, tally))
    found = np.array([x["any_finding"] for x in rows])
    detected = [x for x in rows if x["detected"]]
    per_test: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # reports: with the test, finding, untestable
    for x in rows:
        for label, verdict in x["verdicts"]:
            per_test[label][0] += 1
            per_test[label][1] += verdict == "finding"
            per_test[label][2] += verdict == "not testable"
    return {"design": design, "reports": reports, "n_boot": n_boot, "finding_rate": float(found.mean()),
            "not_testable": float(np.mean([x["not_testable"] for x in rows])),
            "tests": float(np.mean([x["tests"] for x in rows])),
            "detection": float(np.mean([x["detected"] for x in rows])),
            "direction": float(np.mean([x["direction"] for x in detected])) if detected else math.nan,
            "coverage": {k: (v[0] / v[1] if v[1] else math.nan, v[1], v[2]) for k, v in tally.hits.items()},
            "per_test": dict(per_test), "zero_width": tally.zero_width}


def coverage_goal(kind: str) -> tuple[float, float, str]:
    """(low, high, text) of the coverage goal of an interval kind: 95 ± 2 %; ≥ 90 % where the true rate is below
    1 %; at least 93 % for intervals at the Holm-adjusted level (wider than 95 % by construction) and for intervals
    simultaneous over pairs of groups (a range max − min has no unbiased estimate where groups are equal, so its
    interval is exact at best at R = 0 and conservative elsewhere); at least 93 % for rates and shares, whose
    Clopper–Pearson interval at the effective size (Korn & Graubard 1998) covers at least the level at every p for
    independent rows and so is conservative by design (about 0.96–0.98 at large n; Wilson's, used before, aimed at
    95 % on average and fell to 0.87–0.91 at a handful of effective rows near 0 and 1)."""
    if "< 1 %" in kind:
        return 0.90, 1.0, "≥ 0.90"
    if "Clopper–Pearson" in kind:
        return 0.93, 1.0, "≥ 0.93 (conservative by design)"
    if "adjusted" in kind:
        return 0.93, 1.0, "≥ 0.93 (wider by design)"
    if "simultaneous over pairs" in kind:
        return 0.93, 1.0, "≥ 0.93 (simultaneous by design)"
    return 0.93, 0.97, "0.93–0.97"


def markdown(results: list[dict[str, Any]], seconds: float) -> str:
    """The RESULTS.md section: the finding-rate table and the coverage table."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    n_boot = "/".join(sorted({str(r.get("n_boot", 100)) for r in results}))
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"## {now} — validity battery — {platform.processor() or platform.machine()}, "
             f"{platform.python_implementation()} {platform.python_version()}", "",
             f"`benchmarks/validity.py`: reports built by `reports.analysis.build_report` from the battery's own "
             f"generator (see its docstring); α = {ALPHA}, Holm over each report's testable tests, {n_boot} "
             f"bootstrap replicates. Wall time {seconds / 60:.1f} min; load average (1, 5, 15 min) at the end "
             f"{load} on {os.cpu_count()} cores.", "",
             "| design | reports | tests per report | not testable per report | share of reports with any finding | "
             "goal | planted: detected | right direction | zero-width intervals |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in results:
        d = r["design"]
        goal = f"≤ {ALPHA + 0.02:.2f}" if d.null else "(power)"
        met = "" if not d.null else (" ✓" if r["finding_rate"] <= ALPHA + 0.02 else " ✗")
        planted = ("–", "–") if d.null else (f"{r['detection']:.3f}", f"{r['direction']:.3f}")
        lines.append(f"| {d.name} | {r['reports']} | {r['tests']:.1f} | {r['not_testable']:.3f} | "
                     f"{r['finding_rate']:.3f}{met} | {goal} | {planted[0]} | {planted[1]} | {r['zero_width']} |")
    lines += ["", "Coverage of every interval kind (95 % intervals; goal 95 ± 2 %, ≥ 90 % where the true rate is "
              "below 1 %; a test counts as covered when every component's interval covers its true value, so "
              "these are simultaneous over the test's components). Coverage is over the intervals the reports "
              "give; \"no interval\" counts the rows (tests: testable tests with a component) that gave none, "
              "\"–\" where a saved part predates that count:", "",
              "| design | interval kind | intervals | no interval | coverage | goal |", "|---|---|---:|---:|---:|---|"]
    for r in results:
        for kind, (cov, count, *missing) in sorted(r["coverage"].items()):
            low, high, target = coverage_goal(kind)
            shown = "–" if not count else f"{cov:.3f}{' ✓' if low <= cov <= high else ' ✗'}"
            cell = kind.replace("|", "\\|")  # "P(out | in)" inside a table cell
            lines.append(f"| {r['design'].name} | {cell} | {count} | {missing[0] if missing else '–'} | {shown} | "
                         f"{target} |")
    lines += ["", "Verdicts per test (only tests that stated a finding or were not testable in some report; under a "
              "null design every finding is false):", "",
              "| design | test (kind, source, group) | reports with the test | finding | not testable |",
              "|---|---|---:|---:|---:|"]
    for r in results:
        for label, (with_test, found, untestable) in sorted(r.get("per_test", {}).items()):
            if found or untestable:
                lines.append(f"| {r['design'].name} | {label} | {with_test} | {found} | {untestable} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SmallGroups:
    """A design of the between-group part: ``groups`` groups of ``inputs`` inputs with ``samples`` samples each,
    drawn as ``kind`` (see :func:`small_groups_draw`); ``planted`` moves the last group's distribution."""

    kind: str
    groups: int
    inputs: int
    samples: int = 3
    planted: bool = False

    @property
    def null(self) -> bool:
        return not self.planted

    @property
    def name(self) -> str:
        effect = ", last group moved" if self.planted else ", null"
        return f"{self.kind}: {self.groups} groups × {self.inputs} inputs × {self.samples} samples{effect}"


SMALL_KINDS = ("ΔITA-like (normal)", "distance-like (lognormal, skewed)", "age-like (whole years, tied)")
SMALL = tuple(SmallGroups(kind, groups, inputs, planted=planted) for kind in SMALL_KINDS for groups in (2, 4)
              for inputs in (3, 5, 10, 30) for planted in (False, True))


def small_groups_draw(design: SmallGroups, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, float]]:
    """One table (group, input, value y, 0/1 ``above`` = y > 0) and the true max − min of the group medians and
    means, the true min/max of the group medians (NaN where values can be ≤ 0) and, for ΔITA-like values, the true
    max − min of the groups' rates of y > 0. Input effect + sample noise, so samples of one input are
    correlated: ΔITA-like N(μ_g, 4²) + N(0, 3²) (median = mean = μ_g; moved: +5°); distance-like
    0.5·m_g·exp(N(0, 0.5²) + N(0, 0.35²)) (median 0.5·m_g, mean 0.5·m_g·e^{σ²/2}; moved: m = 1.5); age-like
    round(30 + μ_g + N(0, 2²) + N(0, 1.5²)) (whole years, many ties; median = mean = 30 + μ_g for integer μ_g, by
    symmetry of rounding about an integer; moved: +2 years)."""
    g, n, m = design.groups, design.inputs, design.samples
    group = np.repeat(np.arange(g), n * m)
    item = np.repeat(np.arange(g * n), m)
    moved = np.zeros(g)
    if design.kind.startswith("ΔITA"):
        moved[-1] = 5.0 if design.planted else 0.0
        y = (moved[:, None] + rng.normal(0, 4, (g, n))).ravel()[item] + rng.normal(0, 3, g * n * m)
        medians = means = moved
    elif design.kind.startswith("distance"):
        moved[:] = 1.0
        moved[-1] = 1.5 if design.planted else 1.0
        log = rng.normal(0, 0.5, g * n)[item] + rng.normal(0, 0.35, g * n * m)
        y = 0.5 * moved[group] * np.exp(log)
        medians, means = 0.5 * moved, 0.5 * moved * math.exp((0.5**2 + 0.35**2) / 2)
    else:
        moved[-1] = 2.0 if design.planted else 0.0
        y = np.round(30 + moved[group] + rng.normal(0, 2, g * n)[item] + rng.normal(0, 1.5, g * n * m))
        medians = means = 30 + moved
    table = pd.DataFrame({"group": np.array([f"g{i}" for i in range(g)])[group], "item": item, "y": y,
                          "above": (y > 0).astype(float)})
    truth = {"median difference": float(np.ptp(medians)), "mean difference": float(np.ptp(means)),
             "median ratio": float(medians.min() / medians.max()) if not design.kind.startswith("ΔITA") else math.nan,
             "rate difference": float(np.ptp(stats.norm.cdf(moved / 5.0))) if design.kind.startswith("ΔITA")
             else math.nan}  # P[y > 0] = Φ(μ_g / 5) for ΔITA-like values
    return table, truth


def run_small_groups(design: SmallGroups, reports: int, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Coverage of the between-group intervals of ``MetricFrame`` (difference and ratio rows of a mean, a median
    and a rate metric) over ``reports`` tables of one design, with the share of tables that gave no interval and the
    mean width of the intervals given."""
    rng = np.random.default_rng(seed)
    hits: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])  # covered, with an interval, tables, widths
    methods: dict[str, str] = {}
    for _ in range(reports):
        table, truth = small_groups_draw(design, rng)
        frame = MetricFrame(table, {"mean": Metric("y"), "median": Metric("y", "median"),
                                    "rate": Metric("above", "rate")}, "group", "item", n_boot=n_boot,
                            seed=int(rng.integers(1 << 31)))
        rows = {"difference": frame.difference(), "ratio": frame.ratio()}
        for key, true in truth.items():
            statistic, between = key.split()
            if math.isnan(true):
                continue
            row = rows[between].loc[statistic]
            tally = hits[key]
            tally[2] += 1
            if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
                methods[key] = str(row.get("ci_method", "percentile bootstrap"))
                tally[1] += 1
                tally[0] += row["ci_low"] - 1e-12 <= true <= row["ci_high"] + 1e-12
                tally[3] += row["ci_high"] - row["ci_low"]
    return {"design": design, "reports": reports, "n_boot": n_boot,
            "coverage": {k: (v[0] / v[1] if v[1] else math.nan, v[1], 1 - v[1] / v[2], methods.get(k, "–"),
                             v[3] / v[1] if v[1] else math.nan) for k, v in hits.items()}}


def small_groups_markdown(results: list[dict[str, Any]], seconds: float, label: str) -> str:
    """The RESULTS.md section of the between-group part."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"## {now} — validity battery, between-group part ({label}) — "
             f"{platform.processor() or platform.machine()}, {platform.python_implementation()} "
             f"{platform.python_version()}", "",
             f"`benchmarks/validity.py --part between`: `MetricFrame.difference()` / `.ratio()` of a mean, a median "
             f"and a rate metric on tables from `small_groups_draw` (see its docstring), {results[0]['reports']} "
             f"tables per "
             f"design, {results[0]['n_boot']} bootstrap replicates. Wall time {seconds / 60:.1f} min; load average "
             f"(1, 5, 15 min) at the end {load} on {os.cpu_count()} cores. Coverage is over the tables that gave an "
             "interval; goal ≥ 0.93 (see `coverage_goal`).", "",
             "| design | interval | method | coverage | tables with an interval | no interval | mean width |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in results:
        for key, (cov, count, none, method, width) in sorted(r["coverage"].items()):
            ok = "" if math.isnan(cov) else (" ✓" if cov >= 0.93 else " ✗")
            lines.append(f"| {r['design'].name} | {key} | {method} | {cov:.3f}{ok} | {count} | {none:.2f} | "
                         f"{width:.4g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("reports", "between"), default="reports",
                        help="reports: the report-level battery; between: between-group intervals in small groups")
    parser.add_argument("--reports", type=int, default=200, help="reports (tables, for --part between) per design")
    parser.add_argument("--designs", default="all", help="all, null, planted (designs 0-8), small (9-14), or "
                        "comma-separated design numbers (0-based over DESIGNS; over SMALL for --part between)")
    parser.add_argument("--n-boot", type=int, default=100, help="bootstrap replicates per report (reports: 2000)")
    parser.add_argument("--label", default="this code", help="--part between: what the section measures")
    parser.add_argument("--save", type=Path, default=None, help="write this part's results (JSON) for --merge")
    parser.add_argument("--merge", type=Path, nargs="*", default=(), help="merge saved parts instead of running")
    parser.add_argument("--append", type=Path, default=None, help="append the section to this RESULTS.md")
    args = parser.parse_args()
    every = SMALL if args.part == "between" else DESIGNS
    by_name = {d.name: d for d in every}
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        results = [{**r, "design": by_name[r["design"]]} for part in parts for r in part["results"]]
        results.sort(key=lambda r: every.index(r["design"]))
        seconds = max(part["seconds"] for part in parts)
    else:
        first = every if args.part == "between" else NULLS + PLANTED
        named = {"all": first, "null": tuple(d for d in first if d.null),
                 "planted": tuple(d for d in first if not d.null)} | ({"small": SMALL_AUDITS}
                                                                       if args.part == "reports" else {})
        if args.designs not in named and not all(i.strip().isdigit() and int(i) < len(every)
                                                   for i in args.designs.split(",")):
            parser.error(f"--designs {args.designs!r} for --part {args.part}: one of {', '.join(named)} or "
                         f"comma-separated numbers below {len(every)}")
        designs = named.get(args.designs) or tuple(every[int(i)] for i in args.designs.split(","))
        run = run_small_groups if args.part == "between" else run_design
        start, results = time.perf_counter(), []
        for design in designs:
            results.append(run(design, args.reports, n_boot=args.n_boot))
            print(f"{design.name}: done after {time.perf_counter() - start:.0f} s", flush=True)
        seconds = time.perf_counter() - start
        if args.save:
            args.save.write_text(json.dumps({"seconds": seconds, "results": [
                {**r, "design": r["design"].name} for r in results]}))
    text = small_groups_markdown(results, seconds, args.label) if args.part == "between" else \
        markdown(results, seconds)
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
