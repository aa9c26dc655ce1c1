"""The power of a study's dose–response design, and how to size it (slopes per dose unit).

The composition design asks for the power to detect the *expected output* slope: the generators' own prior slope
(:func:`audit.metrics.study.prior_slope`: the mean ITA of their samples, from their cards, on the dose) times the
attenuation PULSE applies to a prior shift, measured by a shift design at the same factor (its output slope / its
prior slope). The scatter of
generators around the line splits into sampling noise (shrinks with more outputs per input) and between-generator
variation (shrinks only with more generators); :func:`design_power` sizes the design from that split with
:func:`audit.stats.trend.slope_power`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from audit.stats.estimate import detectable_ncp
from audit.stats.trend import slope_power

EXTRA_GENERATORS = (0, 2, 4, 6, 8, 12, 18)
"""Sizing table: generators added, half at each end of the dose range."""
SAMPLE_MULTIPLIERS = (1, 2, 4)
"""Sizing table: outputs per unit input × this."""


def detectable_slope(se: float, df: float, alpha: float, power: float) -> float:
    """The slope (or difference) a two-sided t-test with this standard error and ``df`` detects with ``power`` at
    level ``alpha`` (e.g. a family's Bonferroni level α/m)."""
    return detectable_ncp(df, alpha, power) * se


@dataclass(frozen=True)
class Attenuation:
    """How much of a prior shift reaches the outputs: output slope / prior slope, with the interval of the output
    slope divided by the prior slope."""

    ratio: float
    low: float
    high: float
    output_slope: float
    prior_slope: float


def shift_attenuation(output_slope: float, ci_low: float, ci_high: float, prior: float) -> Attenuation | None:
    """The attenuation of a shift design whose output slope is ``output_slope`` (interval ``ci_low`` to ``ci_high``)
    and whose generators' prior slope is ``prior`` (all per dose unit); None without a finite, non-zero prior."""
    if not math.isfinite(prior) or prior == 0:
        return None
    return Attenuation(output_slope / prior, ci_low / prior, ci_high / prior, output_slope, prior)


@dataclass(frozen=True)
class DesignPower:
    """The composition design's power at the expected output slope, and its sizing table.

    Attributes:
        expected, expected_low: prior slope × attenuation ratio, and × the attenuation interval's end nearer 0.
        sampling_sd, between_sd: the generators' scatter around the line split into sampling noise (mean sampling
            variance of their means) and between-generator variation (the rest of the residual variance).
        power_expected, power_expected_low: power of the slope test at ``expected`` / ``expected_low``.
        sizing: per (generators added at the ends, outputs multiplier) the design's size and power.
        generators_needed: the fewest generators in the sizing table reaching the power goal with today's outputs.
    """

    expected: float
    expected_low: float
    sampling_sd: float
    between_sd: float
    power_expected: float
    power_expected_low: float
    sizing: list[dict[str, float]]
    generators_needed: int | None


def design_power(prior: float, shift: Attenuation, doses: Sequence[float], residual_sd: float,
                 sampling_variances: Sequence[float], alpha: float, power: float) -> DesignPower:
    """:class:`DesignPower` of a composition design at ``doses`` (one per generator) whose generators' prior slope
    is ``prior``, whose scatter around the line has SD ``residual_sd`` (sampling variance of each generator's mean:
    ``sampling_variances``), tested at level ``alpha``, sized for ``power``."""
    x = np.array(doses, float)
    sampling = float(np.nanmean(np.array(sampling_variances, float)))
    residual = residual_sd ** 2
    between = max(residual - sampling, 0.0) if math.isfinite(sampling) else residual
    sampling = sampling if math.isfinite(sampling) else 0.0
    expected, low = prior * shift.ratio, prior * min(shift.low, shift.high)
    ends = (x.min(), x.max())
    sizing = []
    for extra in EXTRA_GENERATORS:
        layout = np.concatenate([x, np.repeat(ends, extra // 2)])
        for k in SAMPLE_MULTIPLIERS:
            sizing.append({"generators": len(layout), "added_at_ends": extra, "samples_multiplier": k,
                           "power": slope_power(expected, between + sampling / k, layout, alpha)})
    needed = next((row["generators"] for row in sizing if row["samples_multiplier"] == 1 and row["power"] >= power),
                  None)
    return DesignPower(expected, low, math.sqrt(sampling), math.sqrt(between),
                       slope_power(expected, residual, x, alpha), slope_power(low, residual, x, alpha), sizing, needed)
