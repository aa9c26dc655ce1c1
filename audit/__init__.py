"""pulse-audit: harness, command line, classifiers and metrics for auditing face upsamplers.

The notebook API (:mod:`audit.commands.api`) is importable from here; it is loaded on first use, so that
``import audit.commands.cli`` and the lower floors do not pay for the reporting imports::

    from audit import AuditConfig, run_audit, load_run, attribute_audits, analyze
"""

from __future__ import annotations

from typing import Any

__all__ = ["AuditConfig", "Run", "Settings", "analyze", "attribute_audits", "build_report", "load_run",
           "run_audit"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from audit.commands import api

        return getattr(api, name)
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
