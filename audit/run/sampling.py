"""Seeded stratified sampling of a face set (``--per-group N`` over one attribute or an intersection).

Each item gets a rank key SHA-256(seed, item id); a group's sample is its ``per_group`` items with the
smallest keys. This is a uniform sample without replacement that depends only on the seed and the
item ids: not on file order, Python or numpy versions, or on which other groups exist. Raising
``per_group`` with the same seed keeps every item already drawn and adds more.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pulse_engine.errors import PulseAuditError

from ..core.records import FaceItem, FaceSet

GROUP_JOIN = " × "


@dataclass(frozen=True)
class GroupCount:
    """One stratum: its values (in the order of ``by``) and how many items were asked for, exist and
    were drawn (``selected = min(requested, available)``)."""

    values: tuple[str, ...]
    requested: int
    available: int
    selected: int

    @property
    def short(self) -> int:
        """How many items the group lacks (0 when it was filled)."""
        return self.requested - self.selected

    @property
    def name(self) -> str:
        """The values joined, e.g. ``Black × Female``."""
        return GROUP_JOIN.join(self.values)


@dataclass
class SampleResult:
    """A stratified sample.

    Attributes:
        by: the attributes that define the groups.
        per_group: items requested per group.
        seed: the seed used.
        items: the drawn items, group by group (groups in vocabulary order), each group sorted by item id.
        groups: one count per group of the full cross product of the vocabularies, empty groups included.
        unlabelled: label combinations with at least one missing value ("" shown as ``?``) → number of
            items excluded for it.
    """

    by: tuple[str, ...]
    per_group: int
    seed: int
    items: list[FaceItem]
    groups: list[GroupCount]
    unlabelled: dict[tuple[str, ...], int] = field(default_factory=dict)

    @property
    def shortfalls(self) -> list[GroupCount]:
        """The groups that got fewer than ``per_group`` items."""
        return [group for group in self.groups if group.short]

    def group_of(self, item: FaceItem) -> tuple[str, ...]:
        """The group values of an item."""
        return tuple(item.labels.get(attribute, "") for attribute in self.by)

    def summary(self) -> list[str]:
        """Human-readable lines: the request, each short group, and the unlabelled exclusions."""
        head = (f"{len(self.items)} items: {self.per_group} per group of {GROUP_JOIN.join(self.by)} "
                f"({len(self.groups)} groups, seed {self.seed})")
        lines = [head]
        lines += [f"short: {g.name}: {g.selected} of {g.requested} (only {g.available} available)"
                  for g in self.shortfalls]
        lines += [f"excluded, label missing: {GROUP_JOIN.join(v or '?' for v in values)}: {count} items"
                  for values, count in sorted(self.unlabelled.items())]
        return lines


def rank_key(seed: int, item_id: str) -> bytes:
    """The item's position in the seeded random order (smaller first)."""
    return hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()


def stratified_sample(faceset: FaceSet, by: Sequence[str], per_group: int, seed: int) -> SampleResult:
    """Draw up to ``per_group`` items from every group of ``by`` (one attribute, or several for
    their intersection, e.g. ``("race", "gender")``).

    Items with a missing label ("") for any attribute of ``by`` are excluded and counted in
    ``unlabelled``. Groups with fewer items than requested give all they have and are listed in
    ``shortfalls``.

    Raises:
        PulseAuditError: no or unknown attribute, ``per_group`` < 1, a repeated item id, or a label
            outside its attribute's vocabulary.
    """
    by = tuple(by)
    if not by:
        raise PulseAuditError("stratified sampling needs at least one attribute")
    for attribute in by:
        if attribute not in faceset.attributes:
            raise PulseAuditError(f"face set {faceset.name} has no attribute {attribute!r}; it has: "
                                  + ", ".join(faceset.attributes))
    if len(set(by)) != len(by):
        raise PulseAuditError(f"attribute repeated in {GROUP_JOIN.join(by)}")
    if per_group < 1:
        raise PulseAuditError(f"--per-group must be at least 1, got {per_group}")

    members: dict[tuple[str, ...], list[FaceItem]] = defaultdict(list)
    unlabelled: dict[tuple[str, ...], int] = defaultdict(int)
    seen: set[str] = set()
    vocabularies = {attribute: set(faceset.attributes[attribute].values) for attribute in by}
    for item in faceset.items:
        if item.item_id in seen:
            raise PulseAuditError(f"face set {faceset.name}: item {item.item_id!r} appears twice")
        seen.add(item.item_id)
        values = tuple(item.labels.get(attribute, "") for attribute in by)
        if "" in values:
            unlabelled[values] += 1
            continue
        for attribute, value in zip(by, values):
            if value not in vocabularies[attribute]:
                raise PulseAuditError(f"face set {faceset.name}: item {item.item_id!r} has {attribute} "
                                      f"{value!r}, not in its vocabulary")
        members[values].append(item)

    items: list[FaceItem] = []
    groups: list[GroupCount] = []
    for values in itertools.product(*(faceset.attributes[attribute].values for attribute in by)):
        pool = members.get(values, [])
        drawn = sorted(pool, key=lambda item: (rank_key(seed, item.item_id), item.item_id))[:per_group]
        items += sorted(drawn, key=lambda item: item.item_id)
        groups.append(GroupCount(values, per_group, len(pool), len(drawn)))
    return SampleResult(by, per_group, seed, items, groups, dict(unlabelled))
