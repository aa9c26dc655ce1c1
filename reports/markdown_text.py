"""Untrusted text (dataset and model names, labels, card fields) made inert in Markdown documents.

Registered as the Jinja filters ``md`` (inline text; ``cell`` is the same escape, named for table cells)
and ``md_code`` (a code span).
Both drop control characters (NUL, C0/C1 except that newlines and tabs become spaces) and the
bidirectional overrides that can make text read differently from how it is stored. ``md`` then
writes ``<``, ``>`` and ``&`` as HTML entities (so user HTML is shown, never interpreted) and
backslash-escapes the characters that open Markdown structure: emphasis, code, links and images,
table cells, headings, strike-through, and a list or heading marker at the start of the text.
"""

from __future__ import annotations

import re
from typing import Any

_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile("[\t\n\r]+")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_ESCAPED = frozenset("\\`*_[]|#~")
_LEADING = re.compile(r"^(\s*)([-+=]|\d+[.)])(?=\s|$)")


def plain(value: Any) -> str:
    """``value`` as one line of text without control or bidirectional-override characters."""
    return _INVISIBLE.sub("", _SPACES.sub(" ", "" if value is None else str(value)))


def md(value: Any) -> str:
    """``value`` as inert inline Markdown (also safe inside a table cell)."""
    text = "".join(_ENTITIES.get(ch) or ("\\" + ch if ch in _ESCAPED else ch) for ch in plain(value))
    return _LEADING.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text, count=1)


def md_code(value: Any) -> str:
    """``value`` as a Markdown code span, fenced by more backticks than it contains in a row."""
    text = plain(value)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


FILTERS = {"md": md, "cell": md, "md_code": md_code}
