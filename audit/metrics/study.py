"""A study across runs: headline metrics per run with intervals, contrasts against a baseline run and
dose–response trends on training composition (or a prior-shift dose), grouped by condition.

A *condition* is what makes two runs' outputs comparable input by input: the same face set and
sampling (hence the same inputs), the same downscale factor and the same output resolution. Runs of one
condition are paired over their shared inputs; runs of different conditions are never paired
(:func:`pair_units` refuses) and are contrasted unpaired (Welch) instead. Every headline metric is
first reduced to one value per unit (an input, its samples averaged; for uninformative-input metrics
an (average face, seed) pair), so tests never treat the samples of one input as independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from audit.classifiers.skin_tone import ITA_BANDS  # lightest band first
from audit.core.schema import DELTA_ITA, DELTA_ITA_ALIGNED, GROUP, IDENTITY_DISTANCE, SUCCESS
from audit.metrics.columns import ITEM, SAMPLE, classifier_column, value_column
from audit.stats.contrasts import Contrast, paired_contrast, welch_contrast
from audit.stats.intervals import wilson_interval
from audit.stats.trend import Trend, generator_trend, paired_trend, permutation_trend
from pulse_engine.errors import PulseAuditError

SKIN, ALIGNED, ITA_BAND = "skin-tone", "skin-tone-aligned", "ita_band"
SAME_PERSON = 0.6  # identity distance below which the identity model reads the same person
MIN_RATE_UNITS = 5  # a t-test of a share on fewer units (inputs) per run is not trusted: "not testable"


@dataclass(frozen=True)
class StudyRun:
    """One run as the study sees it: its tables and what distinguishes it from the others.

    ``dose`` is the run's position on the study's dose axis (share of light faces in the generator's
    training data, or a prior-shift size; NaN when unknown); ``design`` says how doses vary: "composition"
    (separately trained generators: generators are the units of the trend) or "shift" (one generator
    family on the same inputs: inputs are the units).
    """

    name: str
    faces: pd.DataFrame
    ucpr: pd.DataFrame | None
    upsampler: str
    generator: str
    factor: int
    resolution: int
    inputs: str  # face set + sampling options: equal strings mean the same inputs
    dose: float = math.nan
    design: str = "composition"
    composition: str = ""  # for display, e.g. "light 85% · dark 15%"
    info: dict = field(default_factory=dict)

    @property
    def condition(self) -> tuple[str, int, int]:
        return (self.inputs, self.factor, self.resolution)


@dataclass(frozen=True)
class Headline:
    """A headline metric: one value per unit, summarised by its mean ("rate" for 0/1 units). Its units are the
    run's real inputs (those of sampling group ``group`` when set) or, when ``uninformative``, its (average face,
    search seed) pairs."""

    key: str
    name: str
    unit: str  # "" for rates (shown as %), else the value's unit
    statistic: str  # "rate" or "mean"
    meaning: str
    values: Callable[[StudyRun], pd.Series | None]  # per-unit values, None when the run cannot measure it
    uninformative: bool = False
    group: str = ""

    def searched(self, run: StudyRun) -> pd.Index:
        """Every unit the run searched for this metric, measured or not (a unit without a value is missing from
        :attr:`values`)."""
        if self.uninformative:
            return pd.Index([]) if run.ucpr is None else pd.Index(_ucpr_keys(run.ucpr)).unique()
        faces = run.faces
        if self.group:
            faces = faces[faces[GROUP].astype(str) == self.group] if GROUP in faces else faces.iloc[:0]
        return pd.Index(faces[ITEM].astype(str)).unique() if ITEM in faces else pd.Index([])

    def units_basis(self, run: StudyRun) -> str:
        """Where the run's units come from: its input sampling, or its average faces × search seeds."""
        if not self.uninformative:
            return str(run.info.get("sampling", "")) or f"{len(self.searched(run))} inputs"
        faces = 0 if run.ucpr is None else run.ucpr[ITEM].nunique()
        seeds = 0 if run.ucpr is None else run.ucpr[SAMPLE].nunique()
        return f"{faces} average faces × {seeds} search seeds"


def _band_index(labels: pd.Series) -> np.ndarray:
    return pd.Index(ITA_BANDS).get_indexer(labels.fillna("").astype(str).to_numpy()).astype(float)


def _per_input(frame: pd.DataFrame, values: np.ndarray | pd.Series) -> pd.Series:
    """Mean over each input's samples (NaN ignored), indexed by input id; inputs without a value dropped."""
    series = pd.Series(np.asarray(values, float), index=frame.index)
    return series.groupby(frame[ITEM].astype(str).to_numpy()).mean().dropna()


def _band_move(run: StudyRun, direction: int) -> pd.Series | None:
    out_col, in_col = classifier_column("out", SKIN, ITA_BAND), classifier_column("in", SKIN, ITA_BAND)
    if out_col not in run.faces or in_col not in run.faces:
        return None
    out, inp = _band_index(run.faces[out_col]), _band_index(run.faces[in_col])
    ok = (out >= 0) & (inp >= 0)
    moved = np.where(ok, (np.sign(inp - out) == direction).astype(float), np.nan)  # lighter = smaller index
    return _per_input(run.faces, moved)


def delta_ita(column: str) -> Callable[[StudyRun], pd.Series | None]:
    """Per input: mean ΔITA (output − truth ITA°) of one skin-tone instrument's column."""
    def values(run: StudyRun) -> pd.Series | None:
        return _per_input(run.faces, pd.to_numeric(run.faces[column], errors="coerce")) if column in run.faces \
            else None
    return values


def _identity(run: StudyRun) -> pd.Series | None:
    if IDENTITY_DISTANCE not in run.faces:
        return None
    distance = pd.to_numeric(run.faces[IDENTITY_DISTANCE], errors="coerce").to_numpy(float)
    return _per_input(run.faces, np.where(np.isfinite(distance), (distance < SAME_PERSON).astype(float), np.nan))


def _success(run: StudyRun) -> pd.Series | None:
    if SUCCESS not in run.faces or run.upsampler != "pulse":
        return None
    return _per_input(run.faces, run.faces[SUCCESS].astype(float))


def _ucpr_keys(ucpr: pd.DataFrame) -> np.ndarray:
    """Uninformative inputs: each (average face, seed) is a unit (the seeds are independent searches)."""
    return (ucpr[ITEM].astype(str) + "#" + ucpr[SAMPLE].astype(str)).to_numpy()


def _ucpr_units(run: StudyRun, values: np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(values, float), index=_ucpr_keys(run.ucpr)).dropna()


def _ucpr_lightest(run: StudyRun) -> pd.Series | None:
    column = classifier_column("out", SKIN, ITA_BAND)
    if run.ucpr is None or column not in run.ucpr:
        return None
    band = _band_index(run.ucpr[column])
    return _ucpr_units(run, np.where(band >= 0, (band == 0).astype(float), np.nan))


def ucpr_ita(classifier: str) -> Callable[[StudyRun], pd.Series | None]:
    """Per (average face, seed): the output's ITA° read by one skin-tone instrument."""
    def values(run: StudyRun) -> pd.Series | None:
        column = value_column("out", classifier, "ita")
        if run.ucpr is None or column not in run.ucpr:
            return None
        return _ucpr_units(run, pd.to_numeric(run.ucpr[column], errors="coerce").to_numpy(float))
    return values


def preserved_in_group(group: str) -> Callable[[StudyRun], pd.Series | None]:
    """Per input of sampling group ``group``: share of its outputs whose ITA band equals the input's."""
    def values(run: StudyRun) -> pd.Series | None:
        out_col, in_col = classifier_column("out", SKIN, ITA_BAND), classifier_column("in", SKIN, ITA_BAND)
        if GROUP not in run.faces or out_col not in run.faces or in_col not in run.faces:
            return None
        mine = run.faces[run.faces[GROUP].astype(str) == group]
        out, inp = _band_index(mine[out_col]), _band_index(mine[in_col])
        return _per_input(mine, np.where((out >= 0) & (inp >= 0), (out == inp).astype(float), np.nan))
    return values


HEADLINES = (
    Headline("delta_ita", "ΔITA", "°", "mean", "output − input ITA, mean over inputs; positive = lighter output",
             delta_ita(DELTA_ITA)),
    Headline("delta_ita_aligned", "ΔITA (aligned frame)", "°", "mean",
             "output − input ITA in fixed regions of the generator's face frame (no detector); positive = lighter",
             delta_ita(DELTA_ITA_ALIGNED)),
    Headline("lighter", "became lighter", "", "rate", "share of outputs in a lighter ITA band than their input",
             lambda run: _band_move(run, 1)),
    Headline("darker", "became darker", "", "rate", "share of outputs in a darker ITA band than their input",
             lambda run: _band_move(run, -1)),
    Headline("ucpr_lightest", "UCPR: lightest band", "", "rate",
             "share of outputs of uninformative (average-face) inputs in the lightest ITA band (very light)",
             _ucpr_lightest, uninformative=True),
    Headline("ucpr_ita", "UCPR: output ITA", "°", "mean",
             "mean ITA of the outputs of uninformative (average-face) inputs; higher = lighter", ucpr_ita(SKIN),
             uninformative=True),
    Headline("ucpr_ita_aligned", "UCPR: output ITA (aligned frame)", "°", "mean",
             "mean ITA of the outputs of uninformative inputs in fixed face-frame regions (no detector); higher = "
             "lighter", ucpr_ita(ALIGNED), uninformative=True),
    Headline("identity", "identity preserved", "", "rate",
             f"share of outputs the identity model reads as the input's person (distance < {SAME_PERSON})",
             _identity),
    Headline("success", "search success", "", "rate", "share of outputs whose downscale meets eps", _success),
)


def headlines(runs: Sequence[StudyRun]) -> list[Headline]:
    """The fixed headline metrics, then ITA-band preservation per sampling group seen in any run."""
    groups = sorted({str(g) for run in runs if GROUP in run.faces for g in run.faces[GROUP].dropna().unique()
                     if str(g)}, key=lambda g: (ITA_BANDS.index(g) if g in ITA_BANDS else len(ITA_BANDS), g))
    return [*HEADLINES, *(Headline(f"preserved:{g}", f"ITA band kept ({g})", "", "rate",
                                   f"share of outputs of inputs in group {g} whose ITA band equals the input's",
                                   preserved_in_group(g), group=g) for g in groups)]


@dataclass(frozen=True)
class Summary:
    """A run's value of a headline metric: mean over units with an interval (Wilson at the unit count for
    rates, t for means; unadjusted)."""

    value: float
    ci_low: float
    ci_high: float
    n_units: int
    method: str


def summarise(values: pd.Series | None, statistic: str, confidence: float = 0.95) -> Summary | None:
    """Mean over units with its interval (None when the run cannot measure the metric)."""
    if values is None:
        return None
    v = values.to_numpy(float)
    n = len(v)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0, "no unit with a value")
    mean = float(v.mean())
    if statistic == "rate":
        low, high = wilson_interval(mean * n, n, confidence)
        return Summary(mean, float(low), float(high), n, f"Wilson at {n} units")
    if n < 2:
        return Summary(mean, math.nan, math.nan, n, "one unit: no interval")
    from scipy import stats

    half = float(stats.t.isf((1 - confidence) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return Summary(mean, mean - half, mean + half, n, f"t interval over {n} units")


def sampling_variance(values: pd.Series | None) -> float:
    """The part of the variance of a run's mean over units that PULSE's sampling alone contributes: with several
    units per input (keys ``input#seed``, the uninformative inputs), the pooled within-input variance over the
    number of units (differences between inputs are shared by every run on them, so they are not noise of a
    comparison between runs); with one unit per input, the variance over units / n (an upper bound). NaN with
    fewer than 2 units."""
    if values is None or len(values) < 2:
        return math.nan
    v = values.astype(float)
    inputs = pd.Index(v.index.astype(str)).str.split("#").str[0]
    groups = v.groupby(inputs.to_numpy())
    n, k = len(v), groups.ngroups
    if n - k < 1:
        return float(v.var(ddof=1)) / n
    within = float(((v - groups.transform("mean")) ** 2).sum()) / (n - k)
    return within / n


def pair_units(a: StudyRun, b: StudyRun, va: pd.Series, vb: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit values of two runs aligned on their shared units. Runs of different conditions are refused:
    their outputs are not the same inputs under the same degradation, so pairing them would be wrong."""
    if a.condition != b.condition:
        what = ("downscale factor" if a.factor != b.factor else "output resolution" if a.resolution != b.resolution
                else "inputs")
        raise PulseAuditError(f"runs {a.name} (×{a.factor}, {a.resolution} px) and {b.name} (×{b.factor}, "
                              f"{b.resolution} px) differ in {what}: they cannot be paired; compare them unpaired")
    shared = va.index.intersection(vb.index)
    return va.loc[shared].to_numpy(float), vb.loc[shared].to_numpy(float)


def contrast(base: StudyRun, run: StudyRun, vbase: pd.Series, vrun: pd.Series, alpha: float = 0.05,
             power: float = 0.8, confidence: float = 0.95, statistic: str = "mean") -> Contrast:
    """run − base: paired over shared units under one condition, Welch otherwise. A share ("rate") measured on
    fewer than ``MIN_RATE_UNITS`` units in either run is not tested (the t approximation is not trusted)."""
    paired = base.condition == run.condition
    a, b = pair_units(base, run, vbase, vrun) if paired else (vbase.to_numpy(float), vrun.to_numpy(float))
    if statistic == "rate" and min(np.isfinite(a).sum(), np.isfinite(b).sum()) < MIN_RATE_UNITS:
        return Contrast(float(np.nanmean(b) - np.nanmean(a)) if len(a) and len(b) else math.nan, math.nan,
                        math.nan, math.nan, math.nan, math.nan, math.nan, int(min(len(a), len(b))), math.nan,
                        "paired t-test over shared inputs" if paired else "Welch t-test",
                        f"a share on fewer than {MIN_RATE_UNITS} inputs per run: too few to test")
    return paired_contrast(a, b, alpha, power, confidence) if paired else welch_contrast(a, b, alpha, power,
                                                                                          confidence)


@dataclass(frozen=True)
class ConditionTrend:
    """The dose–response of one metric within one condition."""

    condition: tuple[str, int, int]
    design: str
    runs: tuple[str, ...]
    doses: tuple[float, ...]
    values: tuple[float, ...]  # each run's mean over units
    trend: Trend
    permutation_p: float = math.nan  # between design: distribution-free check of the t-test
    units_searched: int = 0  # units its runs offered: generators with a dose, or (shift) the units every run searched


def condition_trend(runs: Sequence[StudyRun], values: Sequence[pd.Series | None], alpha: float = 0.05,
                    power: float = 0.8, confidence: float = 0.95, searched: Sequence[pd.Index] | None = None
                    ) -> ConditionTrend:
    """Trend of one metric over the runs of one condition that have a dose and a value.

    Composition design: OLS over generators of each generator's mean (t-test, permutation check).
    Shift design: per-unit slopes over the doses on the shared units (t-test over units). ``searched`` (each
    run's :meth:`Headline.searched`) gives how many units the runs offered, so that units without a value show.
    """
    conditions = {run.condition for run in runs}
    if len(conditions) != 1:
        raise PulseAuditError("a trend is computed within one condition (same inputs, factor and resolution)")
    kept = [(run, v) for run, v in zip(runs, values) if v is not None and math.isfinite(run.dose) and len(v)]
    designs = {run.design for run, _ in kept} or {"composition"}
    if len(designs) > 1:
        raise PulseAuditError(f"one condition mixes dose designs {sorted(designs)}: study them separately")
    design = designs.pop()
    doses = np.array([run.dose for run, _ in kept], float)
    means = np.array([float(v.mean()) for _, v in kept], float)
    names = tuple(run.name for run, _ in kept)
    if design == "shift":
        shared = sorted(set.intersection(*(set(v.index) for _, v in kept))) if kept else []
        matrix = np.array([[v.loc[u] for _, v in kept] for u in shared], float).reshape(len(shared), len(kept))
        trend = paired_trend(doses, matrix, alpha, power, confidence)
        offered = [set(index) for run, index in zip(runs, searched or ()) if run.name in names]
        return ConditionTrend(runs[0].condition, design, names, tuple(doses), tuple(means), trend,
                              units_searched=len(set.intersection(*offered)) if offered else len(shared))
    trend = generator_trend(doses, means, alpha, power, confidence)
    offered_runs = sum(math.isfinite(run.dose) for run in runs)
    return ConditionTrend(runs[0].condition, design, names, tuple(doses), tuple(means), trend,
                          permutation_trend(doses, means), offered_runs)


PRIOR_FIELDS = {"aligned": "samples_skin_tone_aligned", "detector": "samples_skin_tone"}
"""Generator-card fields holding the skin tone (``ita_mean_deg``) of the generator's own samples, by instrument,
preferred first: the aligned face frame (``skin-tone-aligned``, every sample measured: the instrument the study reads
outputs with) and dlib's detector (``skin-tone``, only samples with a detected face: rough dark samples are
often missed, which selects their mean towards lighter ones)."""
PRIOR_INSTRUMENTS = {"aligned": "aligned face frame: every sample measured, as the outputs are",
                     "detector": "detector-based: samples with a detected face only"}


def card_prior_ita(card: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Mean ITA° of a generator's own samples per instrument of :data:`PRIOR_FIELDS` (None where its card has
    none, or a field of another JSON type: a card is a user's file)."""
    values = {}
    for instrument, key in PRIOR_FIELDS.items():
        field = card.get(key) if isinstance(card, Mapping) else None
        value = field.get("ita_mean_deg") if isinstance(field, Mapping) else None
        values[instrument] = finite_number(value)
    return values


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number (not a flag, not an integer beyond float range)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _prior_values(runs: Sequence[StudyRun], names: Sequence[str], instrument: str) -> np.ndarray:
    known = {r.name: (r.info.get("prior_ita") or {}).get(instrument) for r in runs}
    return np.array([np.nan if known.get(n) is None else known[n] for n in names], float)


def prior_instrument(runs: Sequence[StudyRun], names: Sequence[str]) -> str:
    """The first instrument of :data:`PRIOR_FIELDS` whose card value every run named has (one instrument for every
    prior slope compared with another), else the last (detector-based: slopes over the runs that have one)."""
    return next((i for i in PRIOR_FIELDS if np.isfinite(_prior_values(runs, names, i)).all()), list(PRIOR_FIELDS)[-1])


def prior_slope(runs: Sequence[StudyRun], names: Sequence[str], doses: Sequence[float], instrument: str) -> float:
    """OLS slope (per dose unit) of the prior ITA of the runs ``names`` (at ``doses``) by ``instrument`` on the dose,
    over those with a card value; NaN with fewer than two distinct doses valued."""
    x, y = np.asarray(doses, float), _prior_values(runs, names, instrument)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if np.unique(x).size < 2:
        return math.nan
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def conditions(runs: Sequence[StudyRun]) -> list[tuple[str, int, int]]:
    """The conditions of ``runs`` in order of first appearance."""
    return list(dict.fromkeys(run.condition for run in runs))
