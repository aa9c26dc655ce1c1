"""Report sections about the instruments: what each attribute can and cannot show, the headline per group
(search success beside every metric, identity preservation), how many faces each detector missed and how far
that could move ΔITA, and the skin-tone validation run on this run's own images.

Numbers come from :mod:`audit.metrics` (:mod:`audit.metrics.headline`, :mod:`audit.metrics.missing`) and
:func:`audit.classifiers.skin_tone_validation.validate_skin_tone`; this module only selects columns and
assembles JSON-ready dicts for the report templates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audit.core.schema import DELTA_ITA, DELTA_ITA_ALIGNED, ITEM, PATH_OUT, PATH_TRUTH, face_column
from audit.metrics.headline import headline_frame
from audit.metrics.missing import detection_rates, missing_sensitivity
from audit.metrics.study import SAME_PERSON
from pulse_engine.errors import InputImageError
from reports.run_data import Run, classifier_cards, model_info
from reports.tables import clean, records

SKIN_TONE, ALIGNED = "skin-tone", "skin-tone-aligned"
VALIDATION_FACES = 8
"""Truth images (and as many outputs) of the run the per-report validation uses."""
VALIDATION_SHIFTS = ((-8.0, 0.0), (8.0, 0.0), (-6.0, 4.0))
RACE_HOWTO = ("`pulse-audit doctor` lists the race classifiers and what each needs: `gear` (`make models`), "
              "`fairface:WEIGHTS` or `deepface:WEIGHTS` (user-supplied weights); then run again with "
              "`--classifiers skin-tone,identity,fairface:PATH`.")


def _classifiers_with(run: Run, attribute: str) -> list[str]:
    return [c["name"] for c in classifier_cards(run) if attribute in c.get("attributes", {})]


def scope_section(run: Run) -> dict[str, Any]:
    """What the run can and cannot show: one entry per kind of attribute, with the classifiers that measured it,
    and the notices for the top of the report (no race classifier; grouped by race without measuring race)."""
    names = [c["name"] for c in classifier_cards(run)]
    skin = [n for n in names if n in (SKIN_TONE, ALIGNED)]
    race = _classifiers_with(run, "race")
    identity = [n for n in names if n == "identity"]
    model = model_info(run)
    factor, resolution = model["factor"], model["resolution"]
    low = resolution // factor if resolution and factor else None
    pinned = (f" At ×{factor} the {low}×{low} px input fixes the face's average colour within eps, so a "
              "skin-colour measure mostly sees that constraint; what the search changes is the shape of the face, "
              "which only perceived race or identity can show." if factor and factor <= 8 and low else "")
    attributes = [
        {"attribute": "skin colour (ITA°, Monk)", "measured_by": skin,
         "can": "the colour of cheek and forehead pixels: whether outputs are lighter or darker than the original",
         "cannot": "face shape, perceived race or identity; constitutive skin colour (lighting is not corrected)"
                   + pinned},
        {"attribute": "perceived race", "measured_by": race,
         "can": "whether the output is read as a different race than the original, including changes of face shape "
                "that keep the average colour",
         "cannot": "self-identified race; its error differs by group, so its noise floor matters"},
        {"attribute": "identity", "measured_by": identity,
         "can": f"whether the output is still the same person (embedding distance < {SAME_PERSON})",
         "cannot": "in which direction a face changed; a different person can keep race and skin colour"}]
    notices = []
    if not race:
        notices.append("No perceived-race classifier was run, so this report cannot show whether outputs look like "
                       "a different race (the PULSE failure that keeps average colour and changes the face). "
                       + RACE_HOWTO)
    if "race" in run.grouped_by:
        if "race" not in run.group_names:
            notices.append("The run is grouped by race, but no face of this face set has a race label: inputs "
                           "could not be grouped by race.")
        elif not race:
            notices.append("Inputs are grouped by their race label, but the outputs' race was never measured: "
                           "the groups say who went in, nothing says what race came out.")
    return clean({"attributes": attributes, "notices": notices, "race_classifiers": race})


def headline_section(run: Run, settings: Any, groups: list[str] | None = None) -> dict[str, Any] | None:
    """Per group and overall: search success (share of outputs that met eps) beside ΔITA and identity
    preservation, each with its interval (:mod:`audit.metrics.headline`); ``groups`` overrides the run's group
    columns (a baseline run is summarised by the audited run's groups)."""
    group_by = run.group_by if groups is None else [g for g in groups if g in run.faces]
    frame = headline_frame(run.faces, group_by or None, settings.n_boot, settings.seed, settings.confidence)
    if frame is None:
        return None
    overall = frame.overall.reset_index()
    overall.insert(0, "group", "all")
    rows = records(frame.by_group, group_by) if group_by else []
    table = records(overall) + rows
    return clean({"metrics": list(frame.metrics), "groups": ["all"] + sorted({r["group"] for r in rows}),
                  "cells": {f"{r['group']}|{r['metric']}": r for r in table}, "same_person": SAME_PERSON})


def missing_section(run: Run, settings: Any) -> dict[str, Any] | None:
    """Detection rate of the skin-tone detector on originals and outputs per group, and how far mean ΔITA could
    move if the pairs it missed were not missing at random (worst-case bounds over the observed ΔITA range, the
    tipping offset at which the mean's sign flips, and the mean at a few offsets)."""
    data = run.faces
    out_face, in_face = face_column("out", SKIN_TONE), face_column("in", SKIN_TONE)
    if out_face not in data or DELTA_ITA not in data:
        return None
    groups = run.group_by or None
    rates = {side: records(detection_rates(data, data[column].fillna(False).astype(bool), groups,
                                           settings.confidence))
             for side, column in (("outputs", out_face), ("originals", in_face)) if column in data}
    pairs = records(detection_rates(data, data[DELTA_ITA].notna(), groups))
    sensitivity = records(missing_sensitivity(data, DELTA_ITA, groups, deltas=(-20.0, -10.0, 10.0, 20.0)))
    return clean({"rates": rates, "pairs": pairs, "sensitivity": sensitivity,
                  "aligned_available": DELTA_ITA_ALIGNED in data and bool(data[DELTA_ITA_ALIGNED].notna().any())})


def _run_images(run: Run, column: str, limit: int) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """(images, problems): the stored images in ``column`` of the first ``limit`` inputs, read by
    :meth:`~reports.run_data.Run.read_image`, and a one-line reason for each that could not be read."""
    firsts = run.faces.drop_duplicates(ITEM).sort_values(ITEM).head(limit)
    out, problems = [], []
    for item, relative in zip(firsts[ITEM], firsts[column]):
        try:
            image = run.read_image(relative)
        except InputImageError as exc:
            problems.append(str(exc))
            continue
        if image is not None:
            out.append((str(item), np.asarray(image)))
    return out, problems


def validation_section(run: Run, settings: Any) -> dict[str, Any] | None:
    """:func:`validate_skin_tone` on up to :data:`VALIDATION_FACES` of this run's originals and their first
    outputs: the planted change at the run's resolution, the resolution check at 32–256 px. Faces count as in the
    generator frame only when the run used ``skin-tone-aligned``."""
    names = [c["name"] for c in classifier_cards(run)]
    if SKIN_TONE not in names and ALIGNED not in names:
        return None
    from audit.classifiers.skin_tone_validation import (
        ValidationFace,
        validate_skin_tone,
    )

    aligned = ALIGNED in names
    faces, problems = [], []
    for kind, column in (("original", PATH_TRUTH), ("output", PATH_OUT)):
        if column in run.faces:
            images, unread = _run_images(run, column, VALIDATION_FACES)
            faces += [ValidationFace(f"{kind}:{item}", image, aligned) for item, image in images]
            problems += unread
    if not faces:
        return None
    side = faces[0].image.shape[0]
    result = validate_skin_tone(faces, shifts=VALIDATION_SHIFTS, n_boot=min(settings.n_boot, 500),
                                seed=settings.seed, confidence=settings.confidence, planted_sides=(side,))
    return clean({**result, "unreadable": problems})


def baseline_section(run: Run, baseline: Run | None, settings: Any) -> dict[str, Any] | None:
    """The headline metrics of a baseline run on the same inputs (``jpeg``: re-encoded truth; ``bicubic``), by
    the audited run's groups: mean ΔITA and identity preservation there are measurement noise, not bias."""
    if baseline is None:
        return None
    section = headline_section(baseline, settings, run.group_by)
    if section is None:
        return None
    upsampler = model_info(baseline)["upsampler"]
    return {**section, "name": baseline.name, "upsampler": upsampler, "zero_by_construction": upsampler == "oracle"}


def instrument_sections(run: Run, settings: Any, baseline: Run | None = None) -> dict[str, Any]:
    """Every section of this module, under the keys the report templates read."""
    return {"scope": scope_section(run), "headline": headline_section(run, settings),
            "baseline_headline": baseline_section(run, baseline, settings),
            "missing": missing_section(run, settings), "instrument_validation": validation_section(run, settings)}
