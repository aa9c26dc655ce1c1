"""What a model card needs that no run can know (owners, intended use, …): a small YAML file the user fills.

Nothing here is ever invented: a field left empty is shown as "[More Information Needed]" (the Hugging Face
template's convention). ``ensure_info`` writes the commented template when the file is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pulse_engine.errors import PulseAuditError
from reports import yaml_lite

MISSING = "[More Information Needed]"

TEMPLATE = """\
# Model card information for `pulse-audit card`: what the audit runs cannot know.
# Fill in what you know and leave "" or [] where you do not; the card then says "[More Information Needed]".
# Format: a small YAML subset (key: value, nested keys, "- " lists, quoted strings, | blocks, # comments).
model:
  name: ""           # default: the upsampler and generator named in run.json
  version: ""
  date: ""           # release date of this version, YYYY-MM-DD
  description: ""    # one paragraph: what the model does
  developers: ""     # people or organisation who made the model
  contact: ""
  licence: ""        # SPDX identifier of the model's licence, e.g. "MIT" (the generator card's text is shown too)
  paper: ""
  citation: ""
  references: []     # links, one "- https://…" per line
intended_use:
  primary_uses: []
  primary_users: []
  out_of_scope: []
factors:
  relevant: []       # factors beyond the audited attributes that may change the model's behaviour
  environment: ""    # capture conditions, devices, pre-processing of real inputs
training_data:
  description: ""    # beyond the generator card's one line
  preprocessing: ""
ethical_considerations: []   # "- name: …" with an indented "mitigation: …"
caveats: []
recommendations: []
"""

SCHEMA: dict[str, dict[str, type]] = {
    "model": {"name": str, "version": str, "date": str, "description": str, "developers": str, "contact": str,
              "licence": str, "paper": str, "citation": str, "references": list},
    "intended_use": {"primary_uses": list, "primary_users": list, "out_of_scope": list},
    "factors": {"relevant": list, "environment": str},
    "training_data": {"description": str, "preprocessing": str},
}
LISTS = ("ethical_considerations", "caveats", "recommendations")


def empty_info() -> dict[str, Any]:
    """Every field, empty."""
    info: dict[str, Any] = {part: {k: [] if t is list else "" for k, t in fields.items()}
                            for part, fields in SCHEMA.items()}
    return info | {name: [] for name in LISTS}


def _strings(value: Any, where: str) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise PulseAuditError(f"{where}: expected a list of texts")
    return [str(v).strip() for v in value if str(v).strip()]


def _risks(value: Any, where: str) -> list[dict[str, str]]:
    out = []
    for entry in value or []:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or set(entry) - {"name", "mitigation"}:
            raise PulseAuditError(f"{where}: each entry needs 'name' and optionally 'mitigation'")
        if str(entry.get("name") or "").strip():
            out.append({"name": str(entry["name"]).strip(), "mitigation": str(entry.get("mitigation") or "").strip()})
    return out


def parse_info(data: Any, where: str) -> dict[str, Any]:
    """Validate the parsed file against the template's fields (unknown keys are errors: they are typos)."""
    info, data = empty_info(), data or {}
    if not isinstance(data, dict):
        raise PulseAuditError(f"{where}: expected the template's keys at the top level")
    for part, value in data.items():
        if part in LISTS:
            info[part] = _risks(value, f"{where}: {part}") if part == "ethical_considerations" else \
                _strings(value, f"{where}: {part}")
            continue
        if part not in SCHEMA:
            raise PulseAuditError(f"{where}: unknown key {part!r}; known: {', '.join([*SCHEMA, *LISTS])}")
        for key, item in (value or {}).items():
            kind = SCHEMA[part].get(key)
            if kind is None:
                raise PulseAuditError(f"{where}: unknown key {part}.{key}; known: {', '.join(SCHEMA[part])}")
            info[part][key] = _strings(item, f"{where}: {part}.{key}") if kind is list else \
                ("" if item is None else str(item).strip())
    return info


def ensure_info(path: Path) -> tuple[dict[str, Any], bool]:
    """(info, created): read ``path``, or write the template there and return empty info."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TEMPLATE)
        return empty_info(), True
    try:
        data = yaml_lite.load(path.read_text())
    except (OSError, ValueError) as exc:
        raise PulseAuditError(f"{path}: {exc}") from exc
    return parse_info(data, str(path)), False
