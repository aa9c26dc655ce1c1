"""Self-contained HTML: templates from ``reports/templates``, images inlined as data URIs.

Templates named ``*.html.j2`` are autoescaped; others (``*.md.j2``) are not. Number formats of
:mod:`reports.formatting` and the Markdown escapes of :mod:`reports.markdown_text` (``md``, ``md_code``,
for every untrusted field of a ``*.md.j2`` template) are available as filters."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image

from reports import markdown_text
from reports.formatting import FILTERS

TEMPLATES = Path(__file__).resolve().parent / "templates"


def data_uri(image: Image.Image) -> str:
    """A PNG data URI for ``image`` (no external files, no network)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with autoescaping."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "html.j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["data_uri"] = data_uri
    env.filters.update(FILTERS)
    env.filters.update(markdown_text.FILTERS)
    return env.get_template(template).render(**context)
