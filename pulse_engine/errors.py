"""Exceptions that carry a user-facing, one-line message."""


class PulseAuditError(Exception):
    """Base class: the CLI prints ``str(error)`` as one line, without a traceback."""


class WeightsError(PulseAuditError):
    """A weights file is missing, truncated, of another architecture, or unsafe to load."""


class InputImageError(PulseAuditError):
    """An input image cannot be used (unreadable, wrong shape, wrong size)."""
