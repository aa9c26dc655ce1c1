"""UTKFace (Zhang, Song & Qi, CVPR 2017): labels in the file names.

Names are ``[age]_[gender]_[race]_[datetime].jpg``, or ``….jpg.chip.jpg`` in the aligned-and-cropped
release: age in years (0–116 in the release), gender 0 male / 1 female, race 0 White, 1 Black,
2 Asian, 3 Indian, 4 Others, datetime ``yyyymmddHHMMSSFFF``. Images are found recursively under the
root (so ``UTKFace/``, ``crop_part1/`` and the in-the-wild ``part1/``…``part3/`` all work); item ids
are paths relative to the root. A name that does not parse is skipped with a reason, not fatal, and so is a second
name of a file already found (a symbolic or hard link: one device and inode), so that one file is one item.
"""

from __future__ import annotations

from pathlib import Path

from pulse_engine.errors import PulseAuditError

from ..core.records import AttributeSpec, FaceItem
from . import LoadedFaceSet, SkippedFile, card_path, file_key, vocabulary
from .fairface import AGE_BINS, GENDERS, age_bin

RACES = ("White", "Black", "Asian", "Indian", "Others")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_AGE = 120  # years; larger ages are treated as malformed names
LICENCE = "non-commercial research purposes only (UTKFace terms); image copyright stays with the owners"
CITATION = ("Zhang, Z., Song, Y. and Qi, H. Age Progression/Regression by Conditional Adversarial "
            "Autoencoder. CVPR 2017.")
_LABEL_NOTES = ("labels come from the file name as released; the UTKFace page does not document who "
                "assigned them (often described as algorithm-estimated and human-checked; unverified)")


def parse_name(name: str) -> tuple[dict[str, str], str]:
    """Labels from a UTKFace file name, and "" — or empty labels and the reason it is malformed.

    Returns labels ``age_years`` (whole years as a string), ``age`` (FairFace bin), ``gender`` and
    ``race``.
    """
    stem = name
    for suffix in (".chip.jpg", *IMAGE_SUFFIXES):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    fields = stem.split("_")
    if len(fields) != 4:
        return {}, f"file name has {len(fields)} underscore-separated fields, expected age_gender_race_datetime"
    age, gender, race, stamp = fields
    if not age.isdigit() or int(age) > MAX_AGE:
        return {}, f"age field {age!r} is not a whole number of years in 0-{MAX_AGE}"
    if gender not in ("0", "1"):
        return {}, f"gender field {gender!r} is not 0 (male) or 1 (female)"
    if not (race.isdigit() and int(race) < len(RACES)):
        return {}, f"race field {race!r} is not one of 0-{len(RACES) - 1}"
    if not stamp.isdigit():
        return {}, f"date-time field {stamp!r} is not digits (yyyymmddHHMMSSFFF)"
    years = int(age)
    return {"age_years": str(years), "age": age_bin(years), "gender": GENDERS[int(gender)],
            "race": RACES[int(race)]}, ""


def load_utkface(root: Path) -> LoadedFaceSet:
    """Load every image under ``root`` (recursively; hidden files ignored), sorted by relative path.

    Malformed names, and names of a file already found under another name (in path order), go to ``skipped`` with
    a reason.

    Raises:
        PulseAuditError: ``root`` is not a folder, holds no images, or no name parses.
    """
    if not root.is_dir():
        raise PulseAuditError(f"UTKFace: {root} is not a folder")
    paths = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())
    if not paths:
        raise PulseAuditError(f"UTKFace: no .jpg/.png images under {root}")
    items: list[FaceItem] = []
    skipped: list[SkippedFile] = []
    seen: dict[tuple[int, int] | str, str] = {}
    for path in paths:
        item_id = path.relative_to(root).as_posix()
        labels, reason = parse_name(path.name)
        first = seen.setdefault(file_key(path), item_id)
        if first != item_id:
            skipped.append(SkippedFile(item_id, path, f"the same file as {first} (a link), which is audited once"))
        elif reason:
            skipped.append(SkippedFile(item_id, path, reason))
        else:
            items.append(FaceItem(item_id, path, labels))
    if not items:
        raise PulseAuditError(f"UTKFace: no image under {root} has a UTKFace name, e.g. "
                              f"{skipped[0].item_id}: {skipped[0].reason}")
    attributes = {
        "race": AttributeSpec("race", RACES, "annotated", notes=(
            "5 coarse classes; Others lumps e.g. Hispanic, Latino and Middle Eastern faces. " + _LABEL_NOTES)),
        "gender": AttributeSpec("gender", GENDERS, "annotated", notes="binary. " + _LABEL_NOTES),
        "age": AttributeSpec("age", AGE_BINS, "annotated", notes=(
            "age_years put into FairFace's 9 bins (70 and over → 'more than 70')")),
        "age_years": AttributeSpec("age_years", vocabulary(i.labels["age_years"] for i in items), "annotated",
                                   notes="whole years; the vocabulary lists the ages present. " + _LABEL_NOTES),
    }
    return LoadedFaceSet(name="utkface", root=root, attributes=attributes, items=items,
                         card=card_path("utkface"), licence=LICENCE, citation=CITATION, skipped=skipped)
