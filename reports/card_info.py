"""What a model card needs that no run can know (owners, intended use, …): a small YAML file the user fills.

Nothing here is ever invented: a field left empty is shown as "[More Information Needed]" (the Hugging Face
template's convention). ``ensure_info`` writes the commented template when the file is missing.

The file is untrusted text: it is read up to :data:`MAX_INFO_BYTES`, scanned for nesting deeper than
:data:`MAX_DEPTH` and for anchors, aliases and tags (refused) before PyYAML composes it with its
``BaseLoader`` (every scalar stays a string, so ``version: 1.10`` is not a number), and every field is
type-checked against :data:`SCHEMA`. Each problem is one line naming the file (and the line when known).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pulse_engine.errors import PulseAuditError

MISSING = "[More Information Needed]"

TEMPLATE = """\
# Model card information for `pulse-audit card`: what the audit runs cannot know.
# Fill in what you know and leave "" or [] where you do not; the card then says "[More Information Needed]".
# Format: YAML (key: value, nested keys, "- " lists, quoted strings, | blocks, # comments).
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
RISK_KEYS = ("name", "mitigation")
MAX_INFO_BYTES = 256 * 1024
"""Largest card information file read (the filled template is a few kilobytes)."""
MAX_DEPTH = 8
"""Deepest nesting of mappings and lists accepted (the template needs 3)."""
_OPENS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
          yaml.FlowSequenceStartToken)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
_REFUSED = {yaml.AnchorToken: "an anchor", yaml.AliasToken: "an alias", yaml.TagToken: "a tag"}


def empty_info() -> dict[str, Any]:
    """Every field, empty."""
    info: dict[str, Any] = {part: {k: [] if t is list else "" for k, t in fields.items()}
                            for part, fields in SCHEMA.items()}
    return info | {name: [] for name in LISTS}


def _kind(value: Any) -> str:
    """What a parsed value is, in the file's terms (never the value itself, which may be huge)."""
    return "a mapping (key: value lines)" if isinstance(value, dict) else \
        "a list (\"- \" lines)" if isinstance(value, list) else "text"


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value.strip()
    raise PulseAuditError(f"{where}: expected text, got {_kind(value)}")


def _texts(value: Any, where: str) -> list[str]:
    if value == "":
        return []
    if not isinstance(value, list):
        raise PulseAuditError(f"{where}: expected a list (\"- \" lines, or [] when empty), got {_kind(value)}")
    texts = [_text(item, f"{where} item {i}") for i, item in enumerate(value, 1)]
    return [text for text in texts if text]


def _risks(value: Any, where: str) -> list[dict[str, str]]:
    if value == "":
        return []
    if not isinstance(value, list):
        raise PulseAuditError(f"{where}: expected a list of risks (\"- name: …\" lines), got {_kind(value)}")
    out = []
    for i, entry in enumerate(value, 1):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or set(entry) - set(RISK_KEYS):
            raise PulseAuditError(f"{where} item {i}: expected text or a mapping with 'name' and optionally "
                                  "'mitigation'")
        risk = {key: _text(entry.get(key, ""), f"{where} item {i}: {key}") for key in RISK_KEYS}
        if risk["name"]:
            out.append(risk)
    return out


def parse_info(data: Any, where: str) -> dict[str, Any]:
    """Check the parsed file (scalars as strings) against :data:`SCHEMA` and :data:`LISTS`; unknown keys
    are errors (they are typos); empty values keep the field empty."""
    info = empty_info()
    if data in (None, ""):
        return info
    if not isinstance(data, dict):
        raise PulseAuditError(f"{where}: expected the template's keys at the top level, got {_kind(data)}")
    for part, value in data.items():
        if part in LISTS:
            info[part] = _risks(value, f"{where}: {part}") if part == "ethical_considerations" else \
                _texts(value, f"{where}: {part}")
            continue
        if part not in SCHEMA:
            raise PulseAuditError(f"{where}: unknown key {str(part)[:40]!r}; known: {', '.join([*SCHEMA, *LISTS])}")
        if value == "":
            continue
        if not isinstance(value, dict):
            raise PulseAuditError(f"{where}: {part}: expected a mapping of {', '.join(SCHEMA[part])}, "
                                  f"got {_kind(value)}")
        for key, item in value.items():
            kind = SCHEMA[part].get(key)
            if kind is None:
                raise PulseAuditError(f"{where}: unknown key {part}.{str(key)[:40]}; known: {', '.join(SCHEMA[part])}")
            info[part][key] = _texts(item, f"{where}: {part}.{key}") if kind is list else \
                _text(item, f"{where}: {part}.{key}")
    return info


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A PyYAML error as one short line (its own text spans several lines and quotes the input)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = str(getattr(exc, "problem", None) or exc or type(exc).__name__).splitlines()[0][:120]
    return f"{where}not valid YAML ({problem})"


def load_yaml(text: str) -> Any:
    """Parse ``text`` with scalars kept as strings, after refusing (one line, ``ValueError``) nesting
    deeper than :data:`MAX_DEPTH` and anchors, aliases or tags; PyYAML errors become ``ValueError``."""
    try:
        depth = 0
        for token in yaml.scan(text, Loader=yaml.BaseLoader):
            depth += isinstance(token, _OPENS) - isinstance(token, _CLOSES)
            if depth > MAX_DEPTH:
                raise ValueError(f"line {token.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            if type(token) in _REFUSED:
                raise ValueError(f"line {token.start_mark.line + 1}: {_REFUSED[type(token)]} is not allowed here")
        return yaml.load(text, Loader=yaml.BaseLoader)  # BaseLoader builds only str, list and dict
    except yaml.YAMLError as exc:
        raise ValueError(_yaml_problem(exc)) from exc


def ensure_info(path: Path) -> tuple[dict[str, Any], bool]:
    """(info, created): read ``path``, or write the template there and return empty info."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TEMPLATE)
        return empty_info(), True
    try:
        if not path.is_file():
            raise ValueError("not a regular file")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_INFO_BYTES + 1)
        if len(raw) > MAX_INFO_BYTES:
            raise ValueError(f"larger than {MAX_INFO_BYTES // 1024} KiB; a card information file is a few KiB")
        data = load_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PulseAuditError(f"{path}: not UTF-8 text") from exc
    except (OSError, ValueError) as exc:
        raise PulseAuditError(f"{path}: {exc}") from exc
    return parse_info(data, str(path)), False
