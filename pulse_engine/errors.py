"""Exceptions that carry a user-facing, one-line message, and a bounded repr for putting
untrusted values into such messages."""

from __future__ import annotations

import reprlib


class _ShortRepr(reprlib.Repr):
    """reprlib, plus bytes and tensors summarised without rendering them whole."""

    def repr_bytes(self, value: bytes, level: int) -> str:
        return repr(value[:self.maxstring]) + (f"…({len(value)} bytes)" if len(value) > self.maxstring else "")

    repr_bytearray = repr_bytes

    def repr_Tensor(self, value: object, level: int) -> str:  # reprlib dispatches on the type name
        return f"tensor(shape={tuple(getattr(value, 'shape', ()))}, dtype={getattr(value, 'dtype', '?')})"

    repr_Parameter = repr_Tensor


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 40, 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = _SHORT.maxfrozenset = 4


def short_repr(value: object, limit: int = 80) -> str:
    """``repr`` of a value read from an untrusted file, at most ``limit`` characters and one line.

    Nested containers are cut after two levels and four items, long strings after 40 characters
    (``reprlib``), so neither the time nor the memory spent depends on the value's size; a value
    whose repr fails (e.g. an integer too long to print) is shown by its type name.
    """
    try:
        text = _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - any failure of a hostile __repr__ becomes the type name
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit - 1] + "…"


class PulseAuditError(Exception):
    """Base class: the CLI prints ``str(error)`` as one line, without a traceback."""


class ConfigError(PulseAuditError, ValueError):
    """Invalid settings (an option out of range, an unknown name); a ValueError too, for library callers."""


class WeightsError(PulseAuditError):
    """A weights file is missing, truncated, of another architecture, or unsafe to load."""


class InputImageError(PulseAuditError):
    """An input image cannot be used (unreadable, wrong shape, wrong size)."""


MAX_MESSAGE_CHARS = 600
"""Longest message :func:`one_line` keeps (a longer one keeps its start and end: e.g. a path's head and the reason)."""


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters: every character that is not printable (line breaks,
    ESC and other control characters, bidirectional overrides) written as its Python escape (``\\n``, ``\\x1b``,
    ``\\u202e``), and a longer text cut in its middle."""
    if not text.isprintable():
        text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]
