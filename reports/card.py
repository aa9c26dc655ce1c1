"""``pulse-audit card RUN [RUN...]``: a model card in the nine sections of Mitchell et al. (2019).

Written as a Hugging Face style ``README.md`` (YAML front matter with ``model-index`` results), as
``card.html`` and as Model Card Toolkit (schema 0.0.2) ``model_card.json``. Numbers come from each run's report
dict (:mod:`reports.analysis`); what no run can know comes from the user's info file (:mod:`reports.card_info`).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt
from PIL import Image

from pulse_engine.errors import PulseAuditError
from reports import plots
from reports.analysis import Settings, build_report
from reports.card_info import MISSING, ensure_info
from reports.html import data_uri, render
from reports.report import preservation_rows
from reports.run_data import load_run

SECTIONS = ("Model Details", "Intended Use", "Factors", "Metrics", "Evaluation Data", "Training Data",
            "Quantitative Analyses", "Ethical Considerations", "Caveats and Recommendations")
MCT_SCHEMA_VERSION = "0.0.2"


def _metric(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["metric"] == metric), None)


def evaluation(report: dict[str, Any]) -> dict[str, Any]:
    """What a card shows of one run: provenance, per-attribute preservation (overall, by group, intersectional),
    shifts, findings and warnings."""
    attributes = [{"key": a["key"], "attribute": a["attribute"], "classifier": a["classifier"], "truth": a["truth"],
                   "provenance": a["provenance"], "overall": _metric(a["overall"], "preservation"),
                   "by_group": preservation_rows(a), "warnings": a["warnings"],
                   "intersectional": a["intersectional"]} for a in report["attributes"]]
    shifts = [{"key": s["key"], "name": s["name"], "unit": s["unit"], "meaning": s["meaning"],
               "overall": _metric(s["overall"], "mean" if s["signed"] else "median"),
               "statistic": "mean" if s["signed"] else "median",
               "by_group": [r for r in s["table"] if r["metric"] == ("mean" if s["signed"] else "median")]}
              for s in report["shifts"]]
    return {"run": report["run"], "labels": report["labels"], "classifiers": report["classifiers"],
            "attributes": attributes, "shifts": shifts, "findings": report["findings"],
            "n_tests": report["tests"][0]["family_size"] if report["tests"] else 0,
            "adjustment": report["tests"][0]["adjustment"] if report["tests"] else ""}


def check_one_model(reports: Sequence[dict[str, Any]]) -> None:
    """A card describes one model: every run must have the same upsampler and generator."""
    labels = {r["run"]["model"]["label"] for r in reports}
    if len(labels) > 1:
        raise PulseAuditError(f"the runs audit different models ({', '.join(sorted(labels))}); a card describes one "
                              "model: use `pulse-audit compare` for several")


def card_dict(reports: Sequence[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """The card's content (rendered to Markdown, HTML and MCT JSON)."""
    check_one_model(reports)
    model = reports[0]["run"]["model"]
    evaluations = [evaluation(r) for r in reports]
    limits = [f"{c['name']}: {c['limits']}" for c in reports[0]["classifiers"] if c.get("limits")]
    label_notes = sorted({f"{lab['attribute']} labels of {e['run']['dataset']['name']} are {lab['source']}"
                          + (f" by {lab['model']}" if lab["model"] else "")
                          + (f" ({lab['notes']})" if lab["notes"] else "") for e in evaluations for lab in e["labels"]})
    warnings = [f"{e['run']['dataset']['name']}, {a['key']}: {w}" for e in evaluations for a in e["attributes"]
                for w in a["warnings"]]
    return {"name": info["model"]["name"] or model["label"], "info": info, "missing": MISSING, "model": model,
            "toolkit": reports[0]["toolkit"], "generated": reports[0]["generated"], "settings": reports[0]["settings"],
            "evaluations": evaluations, "sections": SECTIONS, "classifier_limits": limits,
            "label_notes": label_notes, "warnings": warnings,
            "attributes": sorted({a["attribute"] for e in evaluations for a in e["attributes"]}),
            "group_by": sorted({", ".join(e["run"]["config"].get("group_by", [])) for e in evaluations})}


def model_index(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Hugging Face ``model-index``: one result per evaluated run, metrics overall and per group."""
    results = []
    for e in card["evaluations"]:
        metrics = []
        for a in e["attributes"]:
            rows = ([dict(a["overall"], group="overall")] if a["overall"] else []) + a["by_group"]
            metrics += [{"type": "preservation_rate", "name": f"{a['key']} preservation, {r['group']}",
                         "value": r["value"]} for r in rows if r["value"] is not None]
        for s in e["shifts"]:
            if s["overall"] and s["overall"]["value"] is not None:
                metrics.append({"type": s["key"].split("/")[0], "name": f"{s['name']} ({s['statistic']}, overall)",
                                "value": s["overall"]["value"]})
        factor = e["run"]["model"]["factor"]
        results.append({"task": {"type": "image-to-image", "name": f"face upsampling ×{factor}"},
                        "dataset": {"type": e["run"]["dataset"]["name"], "name": e["run"]["dataset"]["name"]},
                        "metrics": metrics})
    return [{"name": card["name"], "results": results}]


def front_matter(card: dict[str, Any]) -> str:
    """YAML front matter of the README (licence only when the user stated one)."""
    data: dict[str, Any] = {}
    if card["info"]["model"]["licence"]:
        data["license"] = card["info"]["model"]["licence"]
    data["tags"] = ["pulse-audit", "bias-audit", "face-super-resolution"]
    data["model-index"] = model_index(card)
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---\n"


def graphics(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Preservation-by-group plots, one per run and attribute."""
    return [{"name": f"{e['run']['dataset']['name']}: {a['key']} preservation by group",
             "image": plots.group_rates({"preservation": a["by_group"]}, f"{a['key']} ({e['run']['dataset']['name']})",
                                        "preserved")}
            for e in card["evaluations"] for a in e["attributes"]]


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _prune(value: Any) -> Any:
    """Drop empty strings, lists and dicts (MCT fields are optional; nothing is filled in for the user)."""
    if isinstance(value, dict):
        value = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in value.items() if v not in ("", None, [], {})}
    if isinstance(value, list):
        return [v for v in map(_prune, value) if v not in ("", None, [], {})]
    return value


def performance_metrics(card: dict[str, Any]) -> list[dict[str, Any]]:
    """MCT performance metrics (values and bounds as strings, as schema 0.0.2 has them)."""
    out = []
    for e in card["evaluations"]:
        for a in e["attributes"]:
            rows = ([dict(a["overall"], group="overall")] if a["overall"] else []) + a["by_group"]
            for r in rows:
                if r["value"] is None:
                    continue
                metric = {"type": f"preservation rate ({a['key']})", "value": f"{r['value']:.4g}",
                          "slice": f"{e['run']['dataset']['name']}: {a['attribute']}={r['group']}"}
                if r["ci_low"] is not None and r["ci_high"] is not None:
                    metric["confidence_interval"] = {"lower_bound": f"{r['ci_low']:.4g}",
                                                     "upper_bound": f"{r['ci_high']:.4g}"}
                out.append(metric)
    return out


def mct_json(card: dict[str, Any], images: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The card as Model Card Toolkit JSON (schema 0.0.2 field names only)."""
    info, model = card["info"], card["model"]
    gen = model["generator"] or {}
    licences = [{"identifier": info["model"]["licence"]}] if info["model"]["licence"] else \
        [{"custom_text": gen["licence"]}] if gen.get("licence") else []
    owners = [{"name": info["model"]["developers"], "contact": info["model"]["contact"]}]
    data = [{"name": e["run"]["dataset"]["name"], "description": f"evaluation: {e['run']['inputs']} inputs; "
             + "; ".join(e["run"]["dataset"]["sampling"]),
             "sensitive": {"sensitive_data": [lab["attribute"] for lab in e["labels"]]}} for e in card["evaluations"]]
    if gen.get("training_data"):
        data.append({"name": "generator training data", "description": gen["training_data"]})
    considerations = {
        "users": [{"description": u} for u in info["intended_use"]["primary_users"]],
        "use_cases": [{"description": u} for u in info["intended_use"]["primary_uses"]],
        "limitations": [{"description": x} for x in [*card["classifier_limits"], *card["warnings"],
                                                     *info["caveats"]]],
        "ethical_considerations": [{"name": r["name"], "mitigation_strategy": r["mitigation"]}
                                   for r in info["ethical_considerations"]]}
    return _prune({
        "schema_version": MCT_SCHEMA_VERSION,
        "model_details": {"name": card["name"], "overview": info["model"]["description"], "owners": owners,
                          "version": {"name": info["model"]["version"], "date": info["model"]["date"]},
                          "licenses": licences, "references": [{"reference": r} for r in info["model"]["references"]],
                          "citations": [{"citation": info["model"]["citation"]}],
                          "path": ", ".join(w["path"] for w in gen.get("weights", []))},
        "model_parameters": {"model_architecture": f"{model['upsampler']}" + (f" over {gen['family']} generator "
                                                                             f"{gen['name']}" if gen else ""),
                             "data": data, "input_format": f"low-resolution RGB face, ×{model['factor']} below output",
                             "output_format": f"RGB face image, {model['resolution']}×{model['resolution']} px"},
        "quantitative_analysis": {"performance_metrics": performance_metrics(card),
                                  "graphics": {"description": "preservation of each attribute by input group",
                                               "collection": [{"name": g["name"], "image": _b64(g["image"])}
                                                              for g in images]}},
        "considerations": considerations})


def write_card(run_dirs: Sequence[Path], out: Path | None = None, info_path: Path | None = None,
               settings: Settings | None = None) -> tuple[dict[str, Path], bool]:
    """Write README.md, card.html and model_card.json (``settings``: default :class:`Settings`); returns (paths,
    whether the info template was created)."""
    settings = settings or Settings()
    runs = [load_run(p) for p in run_dirs]
    out = Path(out) if out else runs[0].root / "card"
    info, created = ensure_info(Path(info_path) if info_path else out / "card.yaml")
    card = card_dict([build_report(run, settings) for run in runs], info)
    images = graphics(card)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "README.md", "html": out / "card.html", "json": out / "model_card.json"}
    body = render("card.md.j2", c=card)
    paths["md"].write_text(front_matter(card) + body)
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(body)
    paths["html"].write_text(render("card.html.j2", c=card, body=html,
                                    images=[dict(g, uri=data_uri(g["image"])) for g in images]))
    paths["json"].write_text(json.dumps(mct_json(card, images), indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return paths, created
