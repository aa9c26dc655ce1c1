"""Self-contained HTML: templates from ``reports/templates``, images inlined as data URIs."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image

TEMPLATES = Path(__file__).resolve().parent / "templates"


def data_uri(image: Image.Image) -> str:
    """A PNG data URI for ``image`` (no external files, no network)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with autoescaping."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["data_uri"] = data_uri
    return env.get_template(template).render(**context)
