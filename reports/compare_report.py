"""Writes a comparison (:mod:`reports.compare`) as ``compare.json``, a self-contained ``compare.html`` and
``compare.md``, all from the same dict."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reports import plots
from reports.analysis import Settings
from reports.compare import compare_runs
from reports.html import render
from reports.report import write_json
from reports.run_data import load_run


def compare_figures(comparison: dict[str, Any]) -> dict[str, Any]:
    """Per attribute: preservation by group, one series per run; per shift: distributions, one line per run."""
    attributes = {a["key"]: plots.group_rates({r["label"]: r["by_group"] for r in a["runs"]},
                                              f"{a['key']}: label preserved, by input group", "preserved")
                  for a in comparison["side_by_side"]["attributes"]}
    shifts = {key: plots.shift_distributions(h, f"{h['name']} on shared inputs", f"{h['name']} ({h['unit'].strip()})")
              for key, h in comparison["histograms"].items() if h["series"]}
    return {"attributes": attributes, "shifts": shifts}


def write_compare(run_dirs: Sequence[Path], out: Path, settings: Settings = Settings()) -> dict[str, Path]:
    """Compare the runs and write OUT/compare.{json,html,md}."""
    comparison = compare_runs([load_run(p) for p in run_dirs], settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "html": out / "compare.html", "md": out / "compare.md"}
    write_json(comparison, paths["json"])
    paths["html"].write_text(render("compare.html.j2", c=comparison, figures=compare_figures(comparison)))
    paths["md"].write_text(render("compare.md.j2", c=comparison))
    return paths
