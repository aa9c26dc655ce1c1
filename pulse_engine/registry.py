"""One registry type for every pluggable piece: generators (here), and audit's classifiers, face sets and
upsamplers.

A piece is named on the command line as ``NAME[:ARG]`` (``dcgan-file:FOLDER``, ``fairface:PATH``,
``skin-tone``); :meth:`Registry.parse` splits that spec and refuses an unknown name in one line that
lists the known ones. Each :class:`Entry` names its code as ``module:function`` relative to the
registry's package and is imported only when used (:meth:`Registry.function`), so that listing the
registry, or ``pulse-audit doctor``, never imports a heavy or absent optional package. An entry says
what it still needs (:meth:`Entry.missing`: one line per missing asset, naming the file and where it
goes), which ``doctor`` prints.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import PulseAuditError, short_repr


@dataclass(frozen=True)
class Entry:
    """One registered piece.

    Attributes:
        name: the ``NAME`` of ``NAME[:ARG]``.
        summary: one line for listings.
        loader: ``module:function`` (relative to the registry's package) that builds or loads the piece.
    """

    name: str
    summary: str
    loader: str

    @property
    def form(self) -> str:
        """How a spec of this entry is written, for messages (e.g. ``fairface:PATH``)."""
        return self.name

    def missing(self, arg: str = "") -> list[str]:
        """What this entry still needs to work (with ``arg`` when given): one line each; empty when ready."""
        return []


E = TypeVar("E", bound=Entry)


class Registry(Mapping[str, E], Generic[E]):
    """Entries of one kind by name, in registration order; ``kind`` names them in messages ("unknown
    generator …"), ``noun`` (default ``kind``) names one entry ("dataset demo is not available …")."""

    def __init__(self, kind: str, package: str, entries: Iterable[E], noun: str = "") -> None:
        self.kind, self.package, self.noun = kind, package, noun or kind
        self._entries = {entry.name: entry for entry in entries}

    def __getitem__(self, name: str) -> E:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def parse(self, spec: str) -> tuple[E, str]:
        """``NAME[:ARG]`` → (its entry, ``ARG`` or ""); an unknown name is a one-line error listing the known."""
        name, _, arg = str(spec).partition(":")
        if name not in self._entries:
            where = f" in {short_repr(spec, 200)}" if arg else ""
            known = ", ".join(entry.form for entry in self._entries.values())
            raise PulseAuditError(f"unknown {self.kind} {short_repr(name, 60)}{where}; known: {known}")
        return self._entries[name], arg

    def function(self, entry: E, target: str | None = None) -> Callable[..., Any]:
        """The function ``target`` (default: the entry's ``loader``) names, imported now; a module missing from
        this installation is a one-line error naming the entry."""
        module_name, _, function_name = (target or entry.loader).partition(":")
        try:
            module = importlib.import_module(module_name, self.package)
        except ModuleNotFoundError as exc:
            if exc.name != importlib.util.resolve_name(module_name, self.package):
                raise  # a dependency of the module is missing: its own message says which
            raise PulseAuditError(f"{self.noun} {entry.name} is not available in this installation "
                                  f"(module {exc.name} is missing)") from exc
        return getattr(module, function_name)

