"""``pulse-audit report RUN``: ``RUN/report/{report.json, report.html, report.md}`` from one report dict.

The JSON holds every number; the HTML (self-contained: inline CSS, plots as data URIs, a Content Security
Policy that allows no network request) and the Markdown are rendered from the same dict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from reports import plots
from reports.analysis import Settings, build_report
from reports.gallery import group_grids
from reports.html import render
from reports.run_data import Run, load_run

FILES = ("report.json", "report.html", "report.md")


def monk_colours(categories: list[str]) -> list[str] | None:
    """The Monk swatch colours from the skin-tone classifier (None when its optional dependencies are absent)."""
    try:
        from audit.classifiers.skin_tone import MONK_HEX, MONK_NAMES
    except ImportError:
        return None
    lookup = dict(zip(MONK_NAMES, MONK_HEX))
    return [lookup.get(c, "#bbbbbb") for c in categories]


def preservation_rows(section: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The by-group preservation rows of an attribute section."""
    return [r for r in section["by_group"] if r["metric"] == "preservation"]


def attribute_figures(section: Mapping[str, Any]) -> dict[str, Image.Image]:
    """Transition heatmap and per-group preservation of one attribute."""
    title = f"{section['attribute']} ({section['classifier']})"
    return {"heatmap": plots.transition_heatmap(section["transition"]["categories"], section["transition"]["counts"],
                                                f"{title}: input → output counts"),
            "rates": plots.group_rates({"preservation": preservation_rows(section)},
                                       f"{title}: label preserved, by input group", "preserved")}


def report_figures(report: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """Every figure of a report, drawn from the report dict (and, for the sample grids, the run's PNGs)."""
    shifts = {s["key"]: plots.shift_distributions(s["histogram"], f"{s['name']} by group",
                                                  f"{s['name']} ({s['unit'].strip() or 'unitless'})")
              if s["histogram"]["series"] else None for s in report["shifts"]}
    monk = report["monk"]
    return {"attributes": {a["key"]: attribute_figures(a) for a in report["attributes"]}, "shifts": shifts,
            "monk": plots.monk_strip(monk["categories"], monk["inputs"], monk["outputs"],
                                     monk_colours(monk["categories"])) if monk else None,
            "grids": group_grids(run, report["samples"])}


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """Strict JSON (NaN was already turned into null)."""
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def write_report(run_dir: Path, out: Path | None = None, settings: Settings = Settings(),
                 oracle_dir: Path | None = None) -> dict[str, Path]:
    """Compute and write the report of ``run_dir`` into ``out`` (default ``run_dir/report``)."""
    run = load_run(run_dir)
    oracle = load_run(oracle_dir) if oracle_dir else None
    report = build_report(run, settings, oracle)
    out = Path(out) if out else run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    paths = {name.split(".")[1]: out / name for name in FILES}
    write_json(report, paths["json"])
    figures = report_figures(report, run)
    paths["html"].write_text(render("report.html.j2", r=report, figures=figures))
    paths["md"].write_text(render("report.md.j2", r=report))
    return paths
