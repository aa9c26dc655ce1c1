"""CelebA (Liu et al., ICCV 2015) and CelebAMask-HQ (Lee et al., CVPR 2020): 40 binary attributes.

Supported layouts under ROOT (the first that matches wins):

* CelebA: ``list_attr_celeba.txt`` (or ``Anno/list_attr_celeba.txt``) with the images in
  ``img_align_celeba/`` (also ``img_align_celeba/img_align_celeba/`` as unpacked from Kaggle,
  ``Img/img_align_celeba/``, or the unaligned ``img_celeba/`` / ``Img/img_celeba/``).
* CelebAMask-HQ (the 30,000-image CelebA-HQ): ``CelebAMask-HQ-attribute-anno.txt`` with the
  images in ``CelebA-HQ-img/`` (``0.jpg`` … ``29999.jpg``).

The attribute file: line 1 the image count, line 2 the attribute names, then one line per image,
``FILE v1 v2 …`` with each value 1 or -1. ``Male`` becomes ``gender`` (Male/Female); every other
attribute keeps its CelebA name with the values ``yes`` / ``no``. Item ids are the file names.
"""

from __future__ import annotations

from pathlib import Path

from pulse_engine.errors import PulseAuditError, short_repr

from ..core.records import AttributeSpec, FaceItem
from . import LoadedFaceSet, card_path, label_error, read_text_bounded

LAYOUTS = (
    ("celeba", ("list_attr_celeba.txt", "Anno/list_attr_celeba.txt"),
     ("img_align_celeba/img_align_celeba", "img_align_celeba", "Img/img_align_celeba", "img_celeba",
      "Img/img_celeba")),
    ("celeba-hq", ("CelebAMask-HQ-attribute-anno.txt",), ("CelebA-HQ-img",)),
)
VALUES = {"1": "yes", "-1": "no"}
GENDER = {"1": "Male", "-1": "Female"}
MAX_ATTRIBUTE_BYTES = 64 * 2**20  # attribute files larger than this are refused (CelebA's own is ~26 MB)
LICENCE = ("non-commercial research purposes only (CelebA agreement; CelebA-HQ and CelebAMask-HQ "
           "inherit it); image copyright stays with the owners")
CITATION = ("Liu, Z., Luo, P., Wang, X. and Tang, X. Deep Learning Face Attributes in the Wild. ICCV 2015."
            " For CelebA-HQ also: Karras, T. et al. Progressive Growing of GANs, ICLR 2018; Lee, C.-H. et "
            "al. MaskGAN (CelebAMask-HQ), CVPR 2020.")
_NOTES = "binary, annotated by a labelling team (Liu et al. 2015); subjective and perceived, not self-reported"
_EXTRA_NOTES = {
    "Young": "no age threshold was defined for annotators",
    "Pale_Skin": "not a skin-tone scale: a yes/no judgement, true for few images",
    "Attractive": "a subjective judgement; do not treat it as a demographic group",
}


def load_celeba(root: Path) -> LoadedFaceSet:
    """Load CelebA or CelebAMask-HQ from ``root`` (layouts in the module docstring).

    Raises:
        PulseAuditError: no known layout, a malformed attribute file (with its line number), a value
            other than 1 / -1, a count on line 1 that disagrees with the lines, or no image folder.
    """
    for name, attr_candidates, image_candidates in LAYOUTS:  # noqa: B007 (the found layout is used below)
        attr_file = next((root / c for c in attr_candidates if (root / c).is_file()), None)
        if attr_file is not None:
            break
    else:
        wanted = ", ".join(c for _, attrs, _ in LAYOUTS for c in attrs)
        raise PulseAuditError(f"CelebA: no attribute file in {root} (looked for {wanted})")
    names, rows = _parse_attributes(attr_file)
    if not rows:
        raise PulseAuditError(f"{attr_file}: lists no images")
    image_dir = next((root / c for c in image_candidates if (root / c / rows[0][0]).is_file()), None)
    if image_dir is None:
        raise PulseAuditError(f"CelebA: image {short_repr(rows[0][0])} not found in any of "
                              f"{', '.join(image_candidates)} under {root}")
    keys = ["gender" if a == "Male" else a for a in names]
    maps = [GENDER if a == "Male" else VALUES for a in names]
    items = [FaceItem(file, image_dir / file, {k: m[v] for k, m, v in zip(keys, maps, values)})
             for file, values in rows]
    attributes = {}
    for attribute in names:
        if attribute == "Male":
            notes = "from CelebA's Male attribute (1 → Male, -1 → Female); " + _NOTES
            attributes["gender"] = AttributeSpec("gender", ("Male", "Female"), "annotated", notes=notes)
        else:
            extra = _EXTRA_NOTES.get(attribute)
            attributes[attribute] = AttributeSpec(attribute, ("yes", "no"), "annotated",
                                                  notes=_NOTES + (f"; {extra}" if extra else ""))
    return LoadedFaceSet(name=name, root=root, attributes=attributes, items=items, card=card_path("celeba"),
                         licence=LICENCE, citation=CITATION,
                         options={"images": image_dir.relative_to(root).as_posix()})


def _parse_attributes(path: Path) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The attribute names and (file name, values as "1"/"-1") per image of a CelebA attribute file."""
    lines = read_text_bounded(path, MAX_ATTRIBUTE_BYTES).splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise PulseAuditError(f"{path} line 1: expected the image count, found {short_repr(lines[0])}"
                              if lines else f"{path}: empty file")
    names = lines[1].split()
    if not names or len(set(names)) != len(names):
        raise PulseAuditError(f"{path} line 2: expected distinct attribute names")
    rows: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise PulseAuditError(f"{path} line {number}: {len(fields) - 1} values, expected {len(names)}")
        if not set(fields[1:]) <= VALUES.keys():
            attribute, value = next((a, v) for a, v in zip(names, fields[1:]) if v not in VALUES)
            raise label_error(f"{path} line {number}", attribute, value, tuple(VALUES))
        if fields[0] in seen:
            raise PulseAuditError(f"{path} line {number}: {short_repr(fields[0])} is listed twice")
        seen.add(fields[0])
        rows.append((fields[0], fields[1:]))
    if int(lines[0]) != len(rows):
        raise PulseAuditError(f"{path} line 1: says {int(lines[0])} images but {len(rows)} are listed; "
                              "fix the count if you trimmed the file")
    return names, rows
