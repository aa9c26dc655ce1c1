"""The plan of a study: the runs to make (or reuse) and the baseline, from a TOML file or from code.

A study TOML holds the options shared by every run at the top level (the keys of ``pulse-audit run
--config``, see :class:`audit.run.harness.AuditConfig`) and a ``[study]`` table::

    dataset = "demo"
    classifiers = "skin-tone,identity"
    group-by = "skin_tone"

    [study]
    baseline = "balanced"          # a run name or a generator name (default: the first run)

    [[study.runs]]
    name = "light-x16"
    generator = "dcgan-file:datasets/generators/light-skewed"
    factor = 16
    dose = 0.85                    # optional: overrides the dose read from the generator card
    design = "composition"         # optional: "composition" (trained generators) or "shift" (one family)

Each run's options are the shared ones with its own table's keys on top; its folder is ``OUT/runs/<name>``
(an existing finished run there is resumed, i.e. reused).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulse_engine.errors import PulseAuditError

from ..run.harness import AuditConfig

DESIGNS = ("composition", "shift")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: its name, its audit options, and an optional dose/design override."""

    name: str
    config: AuditConfig
    dose: float | None = None
    design: str | None = None


@dataclass(frozen=True)
class StudyPlan:
    runs: tuple[PlannedRun, ...]
    baseline: str = ""

    def folder(self, out: Path, run: PlannedRun) -> Path:
        return Path(out) / "runs" / run.name


def _option_keys(table: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("-", "_"): v for k, v in table.items()}


def plan_from_mapping(data: dict[str, Any], out: Path, where: str = "study plan") -> StudyPlan:
    """A plan from parsed TOML (see the module docstring); bad entries are one-line errors naming ``where``."""
    data = dict(data)
    study = data.pop("study", None)
    if not isinstance(study, dict) or not isinstance(study.get("runs"), list) or not study["runs"]:
        raise PulseAuditError(f"{where}: needs a [study] table with at least one [[study.runs]] entry")
    unknown = sorted(set(study) - {"runs", "baseline"})
    if unknown:
        raise PulseAuditError(f"{where}: unknown key {unknown[0]!r} in [study]; known: baseline, runs")
    shared = _option_keys(data)
    runs, seen = [], set()
    for i, entry in enumerate(study["runs"]):
        if not isinstance(entry, dict):
            raise PulseAuditError(f"{where}: study.runs[{i}] must be a table")
        entry = _option_keys(entry)
        name = str(entry.pop("name", ""))
        if not NAME.match(name) or name in seen:
            raise PulseAuditError(f"{where}: study.runs[{i}] needs a unique name of letters, digits, '.', '_', '-' "
                                  f"(got {name!r})")
        seen.add(name)
        dose, design = entry.pop("dose", None), entry.pop("design", None)
        if dose is not None and (isinstance(dose, bool) or not isinstance(dose, (int, float))
                                 or not math.isfinite(dose)):
            raise PulseAuditError(f"{where}: run {name}: dose must be a number, got {dose!r}")
        if design is not None and design not in DESIGNS:
            raise PulseAuditError(f"{where}: run {name}: design must be one of {DESIGNS}, got {design!r}")
        options = {**shared, **entry, "out": str(Path(out) / "runs" / name)}
        config = AuditConfig.from_mapping(options, f"{where}, run {name}")
        runs.append(PlannedRun(name, config, None if dose is None else float(dose), design))
    return StudyPlan(tuple(runs), str(study.get("baseline", "")))


def read_plan(path: Path, out: Path) -> StudyPlan:
    """The plan of a study TOML file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PulseAuditError(f"{path}: not a readable TOML file ({exc})") from exc
    return plan_from_mapping(data, out, str(path))
