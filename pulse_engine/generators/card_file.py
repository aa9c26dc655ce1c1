"""The one reader of generator ``card.json`` files (``dcgan-file``, ``shifted`` and the registry's folder
listing): bounded in size and nesting, a JSON object at the top, every failure one short line.

A card comes with weights downloaded from anywhere, so it is untrusted: it is read only if it is a regular
file (opened without blocking, so a FIFO named ``card.json`` cannot hang the reader), at most
:data:`CARD_MAX_BYTES` bytes, and nested at most :data:`CARD_MAX_DEPTH` levels; :func:`card_provenance`
cuts the free-text fields a :class:`~.base.GeneratorCard` keeps to bounded lengths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..bounded_read import NotRegularFile, OverBudget, budget_chunks, open_checked
from ..errors import WeightsError

__all__ = ["CARD_MAX_BYTES", "CARD_MAX_DEPTH", "card_provenance", "read_card"]

CARD_MAX_BYTES = 1 << 20
"""Largest ``card.json`` read, in bytes (the committed cards are under 4 KB)."""
CARD_MAX_DEPTH = 32
"""Deepest nesting of JSON objects and lists accepted in a card (the committed cards nest 3 levels)."""


def read_card(path: Path, what: str, max_bytes: int = CARD_MAX_BYTES) -> dict[str, Any]:
    """The JSON object in the card file ``path``; anything else is a WeightsError of one line naming ``what``
    (e.g. "DCGAN generator card"): not a regular file, unreadable, larger than ``max_bytes``, not UTF-8 JSON,
    nested deeper than :data:`CARD_MAX_DEPTH`, or not an object at the top. Other JSON records written by this
    package (a run's ``run.json``) are read with it too, with their own ``max_bytes``."""
    try:
        card = json.loads(_read_bounded(Path(path), max_bytes))
    except OSError as exc:
        problem = f"cannot be read ({type(exc).__name__}: {exc.strerror or 'error'})"
    except NotRegularFile as exc:
        problem = str(exc)
    except OverBudget:
        problem = f"is larger than {max_bytes:,} bytes"
    except RecursionError:  # the C JSON parser's recursion guard: nested far beyond CARD_MAX_DEPTH
        problem = f"nests lists or objects more than {CARD_MAX_DEPTH} levels deep"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        problem = f"is not UTF-8 JSON ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})"
    else:
        if not isinstance(card, dict):
            problem = f"holds a JSON {type(card).__name__}, not an object"
        elif _depth_exceeds(card, CARD_MAX_DEPTH):
            problem = f"nests lists or objects more than {CARD_MAX_DEPTH} levels deep"
        else:
            return card
    raise WeightsError(f"{path} is not a usable {what}: it {problem}")


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    fd, _ = open_checked(path, max_bytes)
    with os.fdopen(fd, "rb") as handle:
        return b"".join(budget_chunks(handle.read, max_bytes))


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests lists/objects more than ``limit`` levels (an explicit stack: no
    recursion, work proportional to the value's size, which the byte limit bounds)."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth >= limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def card_provenance(card: Mapping[str, Any], name: str, licence: str = "") -> dict[str, Any]:
    """The free-text fields of a :class:`~.base.GeneratorCard` from a card, each cut to a bounded length:
    ``name`` (default ``name``), ``training_data`` (its ``summary`` when an object), ``licence`` (default
    ``licence``) and ``notes`` (a list, at most 50 entries)."""
    data = card.get("training_data") or ""
    notes = card.get("notes")
    return dict(name=str(card.get("name") or name)[:200],
                training_data=str(data.get("summary", "") if isinstance(data, dict) else data)[:2000],
                licence=str(card.get("licence", licence))[:500],
                notes=tuple(str(n)[:500] for n in notes[:50]) if isinstance(notes, list) else ())
