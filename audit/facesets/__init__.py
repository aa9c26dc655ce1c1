"""Face-set registry: ``--dataset`` specs such as ``fairface:PATH`` or ``demo`` → a labelled FaceSet.

Loaders are imported only when used. Every loader returns a :class:`LoadedFaceSet`: a
:class:`~audit.core.records.FaceSet` plus the files it could not label (``skipped``, each with a
reason, for the harness to record as failed items) and the options it was loaded with.
Shared helpers for the loaders (CSV rows with line numbers, bounded text files, label errors,
vocabularies, cards) live here too.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pulse_engine.errors import PulseAuditError, one_line, short_repr
from pulse_engine.registry import Entry, Registry

from ..core.records import FaceSet

CARDS_DIR = Path(__file__).resolve().parents[2] / "datasets"


@dataclass(frozen=True)
class SkippedFile:
    """A file of the face set that could not be turned into a labelled item.

    Attributes:
        item_id: the id it would have had (its path relative to the set's root).
        path: the file.
        reason: one line saying why (e.g. ``file name has 3 fields, expected age_gender_race_datetime``).
    """

    item_id: str
    path: Path
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", one_line(self.reason))  # it becomes a failed row's error


@dataclass
class LoadedFaceSet(FaceSet):
    """A FaceSet as loaded from disk, plus the files that were skipped (for the harness to record
    as failed items) and the options it was loaded with, including resolved layout details such as
    CelebA's image folder (for ``run.json``)."""

    skipped: list[SkippedFile] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FaceSetFormat(Entry):
    """One ``--dataset`` format (:class:`pulse_engine.registry.Entry`): its loader ``module:function`` (taking
    ``root`` and the options as keywords) and the option names it accepts."""

    options: tuple[str, ...] = ()
    needs_path: bool = True

    @property
    def form(self) -> str:
        return f"{self.name}:PATH" if self.needs_path else self.name


FORMATS: Registry[FaceSetFormat] = Registry("dataset format", __name__, noun="dataset", entries=(
    FaceSetFormat("fairface", "FairFace CSV + images; race (7), race4, gender, age (9 bins)",
                  ".fairface:load_fairface", ("split",)),
    FaceSetFormat("utkface", "UTKFace [age]_[gender]_[race]_[datetime].jpg file names",
                  ".utkface:load_utkface"),
    FaceSetFormat("celeba", "CelebA / CelebAMask-HQ 40 binary attributes (list_attr_celeba.txt)",
                  ".celeba:load_celeba"),
    FaceSetFormat("folder", "any folder with a CSV manifest (path + attribute columns)",
                  ".folder:load_folder", ("labels_source",)),
    FaceSetFormat("demo", "the embedded demo set (labels predicted by a model)",
                  ".demo:load_demo_set", needs_path=False),
))


def load_faceset(spec: str, **options: str | None) -> LoadedFaceSet:
    """Load ``fairface:PATH``, ``utkface:PATH``, ``celeba:PATH``, ``folder:PATH`` or ``demo``.

    Args:
        spec: format name, a colon, the dataset's root folder (``~`` expanded); ``demo`` takes none.
        options: format options, e.g. ``split="train"`` for FairFace; ``None`` values are ignored.

    Raises:
        PulseAuditError: unknown format or option, missing path, or a loader's one-line error.
    """
    entry, path = FORMATS.parse(spec)
    name, colon = entry.name, ":" in spec
    given = {key: str(value) for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(entry.options))
    if unknown:
        allowed = ", ".join(entry.options) or "none"
        raise PulseAuditError(f"dataset {name} has no option {unknown[0]!r}; its options: {allowed}")
    if not entry.needs_path:
        if colon:
            raise PulseAuditError(f"dataset {name} takes no path; write just {name!r}")
        return _as_loaded(FORMATS.function(entry)(**given), given)
    if not path:
        raise PulseAuditError(f"dataset {name} needs a path: {name}:PATH")
    root = Path(path).expanduser()
    if not root.exists():
        raise PulseAuditError(f"dataset {name}: {root} does not exist")
    return _as_loaded(FORMATS.function(entry)(root, **given), given)


def _as_loaded(faceset: FaceSet, options: dict[str, str]) -> LoadedFaceSet:
    if isinstance(faceset, LoadedFaceSet):
        faceset.options = {**faceset.options, **options}
        return faceset
    return LoadedFaceSet(faceset.name, faceset.root, faceset.attributes, faceset.items, faceset.card,
                         faceset.licence, faceset.citation, faceset.default_group_by, options=dict(options))


# ---- helpers shared by the loaders -------------------------------------------------------------

def card_path(name: str) -> Path | None:
    """``datasets/<name>/README.md`` of a source checkout, or None (e.g. in an installed wheel)."""
    card = CARDS_DIR / name / "README.md"
    return card if card.is_file() else None


def normal_id(path: str) -> str:
    """The item id of a listed image path: ``/`` separators, ``.`` and ``x/..`` removed
    (``img/../img/a.png`` → ``img/a.png``), so that one spelling names one file."""
    return Path(os.path.normpath(path)).as_posix()


def file_key(path: Path | str) -> tuple[int, int] | str:
    """What identifies the file at ``path``: its (device, inode), so that a hard link, a symbolic link or another
    spelling of a listed file is the same key; its resolved path when it cannot be examined (e.g. missing) or the
    file system gives no inode number (0: Python promises only that a non-zero one identifies a file)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        info = None
    if info is not None and info.st_ino:
        return info.st_dev, info.st_ino
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return os.path.abspath(path)


def label_error(where: str, attribute: str, value: str, valid: Sequence[str]) -> PulseAuditError:
    """The one-line error for a label outside the vocabulary; ``where`` is e.g. ``FILE line 12``. The value
    and the vocabulary come from the user's files, so both are shown shortened (:func:`short_repr`)."""
    shown = ", ".join(short_repr(v) for v in valid[:_SHOWN_VALUES])
    more = f" and {len(valid) - _SHOWN_VALUES} more" if len(valid) > _SHOWN_VALUES else ""
    name = attribute if len(attribute) <= 40 and attribute.isprintable() else short_repr(attribute)
    return PulseAuditError(f"{where}: unknown {name} value {short_repr(value)}; valid: {shown}{more}")


_SHOWN_VALUES = 12  # vocabulary values a label error lists


def read_text_bounded(path: Path, limit: int) -> str:
    """The UTF-8 text of ``path``, read no further than ``limit`` bytes: a larger file, a file that is not
    UTF-8 or one that cannot be read is a one-line PulseAuditError (its memory never depends on the file)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise PulseAuditError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from exc
    if len(raw) > limit:
        raise PulseAuditError(f"{path}: larger than the {limit:,} bytes such a file may have")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PulseAuditError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def csv_rows(path: Path, required: Sequence[str]) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Open a CSV with a header line: its column names and an iterator of (line number, row).

    Line numbers count the header as line 1. Cells are stripped of surrounding white space; a UTF-8
    byte-order mark is ignored. A missing required column, a row of another length, text that is
    not UTF-8 or a malformed CSV is a PulseAuditError.
    """
    handle = path.open(newline="", encoding="utf-8-sig")
    reader = csv.reader(handle)
    try:
        header = [cell.strip() for cell in next(reader, [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        handle.close()
        raise PulseAuditError(_csv_problem(path, 1, exc)) from exc
    missing = [column for column in required if column not in header]
    if missing:
        handle.close()
        raise PulseAuditError(f"{path}: no {missing[0]!r} column in the header line of {len(header)} columns"
                              f" ({'found: ' + short_repr(header) if header else 'an empty file'})")
    if len(set(header)) != len(header):
        handle.close()
        raise PulseAuditError(f"{path}: the header line repeats a column name")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        with handle:
            while True:
                try:
                    cells = next(reader, None)
                except (UnicodeDecodeError, csv.Error) as exc:
                    raise PulseAuditError(_csv_problem(path, reader.line_num + 1, exc)) from exc
                if cells is None:
                    return
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    raise PulseAuditError(f"{path} line {reader.line_num}: {len(cells)} fields, "
                                          f"the header has {len(header)}")
                yield reader.line_num, {k: v.strip() for k, v in zip(header, cells)}

    return header, rows()


def _csv_problem(path: Path, line: int, exc: Exception) -> str:
    """Decoding happens in blocks, so a UTF-8 error has no reliable line number."""
    if isinstance(exc, UnicodeDecodeError):
        return f"{path}: not UTF-8 text (save it as UTF-8)"
    return f"{path} line {line}: malformed CSV ({exc})"


_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def vocabulary(values: Iterable[str]) -> tuple[str, ...]:
    """Distinct non-empty values, sorted numerically when all are numbers, else alphabetically."""
    distinct = {value for value in values if value}
    if distinct and all(_NUMBER.fullmatch(value) for value in distinct):
        return tuple(sorted(distinct, key=float))
    return tuple(sorted(distinct))

