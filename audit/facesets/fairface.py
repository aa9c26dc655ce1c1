"""FairFace (Kärkkäinen & Joo, WACV 2021): label CSVs plus the images they list.

Layout: ``ROOT/fairface_label_val.csv`` and/or ``ROOT/fairface_label_train.csv`` with the header
``file,age,gender,race,service_test`` and relative image paths (``val/1.jpg``), the images under
``ROOT/val/`` and ``ROOT/train/``. Item ids are the CSV's ``file`` values.
"""

from __future__ import annotations

from pathlib import Path

from pulse_engine.errors import PulseAuditError, one_line, short_repr

from ..core.records import AttributeSpec, FaceItem
from ..core.vocabulary import AGE_BIN_LOWER, AGE_BINS, GENDERS, RACE4, RACE7, RACE7_TO_RACE4
from . import LoadedFaceSet, card_path, csv_rows, label_error, normal_id

SPLITS = {"val": ("val",), "train": ("train",), "both": ("train", "val")}
LICENCE = "CC BY 4.0 (FairFace labels and images, per the FairFace README)"
CITATION = ("Kärkkäinen, K. and Joo, J. FairFace: Face Attribute Dataset for Balanced Race, Gender, and "
            "Age for Bias Measurement and Mitigation. WACV 2021, pp. 1548-1558.")

ATTRIBUTES = {
    "race": AttributeSpec("race", RACE7, "annotated", notes=(
        "perceived race, judged from the photo by crowd annotators; not self-identified")),
    "race4": AttributeSpec("race4", RACE4, "annotated", notes=(
        "derived from the annotated race: East Asian and Southeast Asian → Asian; Latino_Hispanic and "
        "Middle Eastern have no race4 class and are left unlabelled")),
    "gender": AttributeSpec("gender", GENDERS, "annotated", notes=(
        "binary perceived gender, judged from the photo by annotators")),
    "age": AttributeSpec("age", AGE_BINS, "annotated", notes=(
        "perceived age in 9 bins (years), judged from the photo by annotators")),
}
_VOCABULARIES = {"race": RACE7, "gender": GENDERS, "age": AGE_BINS}


def age_bin(years: int) -> str:
    """FairFace's age bin of an age in whole years (≥ 0); 70 and over → ``more than 70``."""
    if years < 0:
        raise ValueError(f"age must be >= 0 years, got {years}")
    index = max(i for i, lower in enumerate(AGE_BIN_LOWER) if years >= lower)
    return AGE_BINS[index]


def load_fairface(root: Path, split: str = "val") -> LoadedFaceSet:
    """Load FairFace from ``root``.

    Args:
        root: the folder holding the label CSVs and the ``train/`` / ``val/`` image folders.
        split: ``val`` (default; 10,954 images in the release), ``train`` or ``both``.

    Raises:
        PulseAuditError: unknown split, missing CSV, bad header, unknown label (with its line),
            a file listed twice, or none of the first listed images present.
    """
    if root.is_file():
        raise PulseAuditError(f"FairFace: {root} is a file; pass the folder holding the label CSVs")
    if split not in SPLITS:
        raise PulseAuditError(f"unknown FairFace split {short_repr(split)}; valid: {', '.join(SPLITS)}")
    items: list[FaceItem] = []
    seen: dict[str, str] = {}
    for part in SPLITS[split]:
        csv_path = root / f"fairface_label_{part}.csv"
        if not csv_path.is_file():
            found = sorted(p.name for p in root.glob("fairface_label_*.csv")) if root.is_dir() else []
            raise PulseAuditError(f"FairFace: {csv_path} not found (found: {', '.join(found) or 'no label CSV'}); "
                                  "pass --split to choose another split")
        _, rows = csv_rows(csv_path, ("file", "age", "gender", "race"))
        for line, row in rows:
            where = f"{csv_path} line {line}"
            labels = {}
            for attribute, valid in _VOCABULARIES.items():
                value = row[attribute]
                if value and value not in valid:
                    raise label_error(where, attribute, value, valid)
                labels[attribute] = value
            labels["race4"] = RACE7_TO_RACE4.get(labels["race"], "")
            if not row["file"]:
                raise PulseAuditError(f"{where}: empty file column")
            item_id = normal_id(row["file"])
            if item_id in seen:
                raise PulseAuditError(f"{where}: {short_repr(item_id)} is already listed at {seen[item_id]}")
            seen[item_id] = where
            items.append(FaceItem(item_id, root / item_id, labels))
    _check_images_present(root, items)
    return LoadedFaceSet(name="fairface", root=root, attributes=dict(ATTRIBUTES), items=items,
                         card=card_path("fairface"), licence=LICENCE, citation=CITATION,
                         options={"split": split})


def _check_images_present(root: Path, items: list[FaceItem], probe: int = 20) -> None:
    """Catch a wrong root early: when none of the first ``probe`` listed images exists.
    (Single missing images are left to the harness, which records them as failed items.)"""
    head = items[:probe]
    if head and not any(item.path.is_file() for item in head):
        raise PulseAuditError(f"FairFace: images not found, e.g. {one_line(str(head[0].path))}; put the train/ "
                              f"and val/ image folders beside the label CSVs in {root}")
