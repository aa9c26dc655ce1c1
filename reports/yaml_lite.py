"""A small YAML subset, enough for model-card front matter and the user's card information file
(PyYAML is not a dependency).

``dump`` writes block-style YAML that any YAML 1.1/1.2 parser reads back to the same value: mappings,
lists, strings (always double-quoted, with JSON escapes, which YAML shares), numbers, booleans and null.

``load`` reads the subset the card template uses: ``key: value`` mappings nested by indentation, ``- item``
lists (of scalars or of mappings), plain / single-quoted / double-quoted scalars, ``|`` and ``>`` block
scalars, ``[]`` / ``{}`` / flow lists of plain scalars, and ``#`` comments. Plain scalars stay strings except
``null`` / ``~`` (None) and ``true`` / ``false``. Anything else (anchors, tags, flow mappings, tabs) is a
``ValueError`` naming the line.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


# ------------------------------------------------------------------------------------------------ dump
def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        mantissa, e, exponent = repr(value).partition("e")
        return (mantissa if "." in mantissa else mantissa + ".0") + e + exponent  # YAML 1.1 floats need a dot
    return json.dumps(str(value), ensure_ascii=False)


def _key(key: Any) -> str:
    return str(key) if _KEY.match(str(key)) else json.dumps(str(key), ensure_ascii=False)


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        out = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_key(key)}:")
                out += _lines(item, indent + 2 if isinstance(item, dict) else indent)
            else:
                out.append(f"{pad}{_key(key)}: {_lines(item, 0)[0]}")
        return out
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        out = []
        for item in value:
            inner = _lines(item, indent + 2)
            out.append(f"{pad}- {inner[0].lstrip()}")
            out += inner[1:]
        return out
    return [pad + _scalar(value)]


def dump(value: Any) -> str:
    """Block-style YAML for ``value`` (dicts, lists, str, int, float, bool, None), ending in a newline."""
    return "\n".join(_lines(value, 0)) + "\n"


# ------------------------------------------------------------------------------------------------ load
class _Reader:
    def __init__(self, text: str) -> None:
        self.raw = text.splitlines()
        for number, line in enumerate(self.raw, 1):
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise ValueError(f"line {number}: tabs are not allowed for indentation")
        self.pos = 0
        self.current = 0  # the line whose value is being read
        self.override: dict[int, tuple[int, str]] = {}  # "- key: v" re-read as a mapping line

    def peek(self) -> tuple[int, str] | None:
        """(indent, content) of the next meaningful line, skipping blanks, comments and '---'."""
        while self.pos < len(self.raw):
            if self.pos in self.override:
                return self.override[self.pos]
            line = self.raw[self.pos]
            body = line.strip()
            if body and not body.startswith("#") and body != "---":
                return len(line) - len(line.lstrip()), body
            self.pos += 1
        return None

    def error(self, message: str, at: int | None = None) -> ValueError:
        return ValueError(f"line {(self.pos if at is None else at) + 1}: {message}")

    def block(self, indent: int) -> Any:
        head = self.peek()
        if head is None or head[0] < indent:
            return None
        if head[1] == "-" or head[1].startswith("- "):
            return self.sequence(head[0])
        return self.mapping(head[0])

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (head := self.peek()) is not None and head[0] == indent:
            key, rest = self.split_key(head[1])
            if key in out:
                raise self.error(f"duplicate key {key!r}")
            self.override.pop(self.pos, None)
            self.current, self.pos = self.pos, self.pos + 1
            out[key] = self.value(rest, indent)
        if head is not None and head[0] > indent:
            raise self.error("unexpected indentation")
        return out

    def sequence(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (head := self.peek()) is not None and head[0] == indent and (head[1] == "-" or
                                                                           head[1].startswith("- ")):
            rest = head[1][1:].lstrip()
            if rest and not rest.startswith("#") and self.is_key(rest):
                self.override[self.pos] = (indent + len(head[1]) - len(rest), rest)
                out.append(self.mapping(indent + len(head[1]) - len(rest)))
                continue
            self.override.pop(self.pos, None)
            self.current, self.pos = self.pos, self.pos + 1
            out.append(self.value(rest, indent))
        return out

    def value(self, rest: str, indent: int) -> Any:
        rest = _strip_comment(rest)
        if rest in ("|", "|-", ">", ">-"):
            return self.block_scalar(indent, rest[0] == ">", rest.endswith("-"))
        if rest:
            return self.scalar(rest)
        head = self.peek()
        if head is not None and (head[0] > indent or head[0] == indent and head[1].startswith("- ")):
            return self.block(head[0])
        return None

    def block_scalar(self, indent: int, folded: bool, strip: bool) -> str:
        lines = []
        while self.pos < len(self.raw):
            line = self.raw[self.pos]
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            lines.append(line)
            self.pos += 1
        while lines and not lines[-1].strip():
            lines.pop()
        cut = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
        lines = [x[cut:] for x in lines]
        text = " ".join(lines) if folded else "\n".join(lines)
        return text if strip else text + "\n"

    def is_key(self, text: str) -> bool:
        try:
            self.split_key(text)
        except ValueError:
            return False
        return True

    def split_key(self, text: str) -> tuple[str, str]:
        if text[0] in "\"'":
            key, end = _quoted(text, 0)
            if not text[end:].startswith(":"):
                raise self.error("expected ':' after a quoted key")
            return key, text[end + 1:].strip()
        match = re.match(r"^([^:#]+?):(\s+|$)", text)
        if not match:
            raise self.error(f"expected 'key: value', got {text!r}")
        return match.group(1).strip(), text[match.end():].strip()

    def scalar(self, text: str) -> Any:
        if text[0] in "&*!{" and text != "{}":
            raise self.error(f"unsupported YAML construct {text[:20]!r} (anchors, tags, flow mappings)", self.current)
        if text in ("{}", "[]"):
            return {} if text == "{}" else []
        if text.startswith("["):
            if not text.endswith("]"):
                raise self.error("a flow list must close on its line", self.current)
            return [self.scalar(part.strip()) for part in text[1:-1].split(",") if part.strip()]
        if text[0] in "\"'":
            value, end = _quoted(text, 0)
            if _strip_comment(text[end:]):
                raise self.error(f"text after a quoted string: {text[end:]!r}", self.current)
            return value
        return {"null": None, "~": None, "true": True, "false": False}.get(text, text)


def _quoted(text: str, start: int) -> tuple[str, int]:
    """A quoted scalar starting at ``start``: (value, index after the closing quote)."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            if quote == "'" and text[i + 1:i + 2] == "'":
                i += 2
                continue
            body = text[start + 1:i]
            return (json.loads(f'"{body}"') if quote == '"' else body.replace("''", "'")), i + 1
        i += 1
    raise ValueError(f"unterminated string: {text!r}")


def _strip_comment(text: str) -> str:
    """Remove a trailing ``# comment`` outside quotes."""
    if text[:1] in ("'", '"'):
        return text.strip()
    return re.split(r"(?:^|\s)#", text, maxsplit=1)[0].strip()


def load(text: str) -> Any:
    """Parse the subset described in the module docstring (an empty document is None)."""
    reader = _Reader(text)
    value = reader.block(0)
    if reader.peek() is not None:
        raise reader.error("unexpected content (check the indentation)")
    return value
