"""Inputs of an audit: the faces drawn from the face set (seeded stratified sample), their true HR
images at the upsampler's resolution and LR versions, and the uninformative inputs of the UCPR
protocol (per-group average faces at 4×4).

Pipeline for one face, the same for ``pulse-audit run`` and ``pulse-audit upsample``: read
(:func:`audit.vision.images.read_rgb`: bounded, 8-bit RGB, EXIF orientation applied, transparency over
white, optional central square crop) → optional alignment (``audit.vision.align.align_face``, imported only
when asked for) → Lanczos resize to R → HR truth (3, R, R) in [0, 1] → LR (3, R/f, R/f) with
``pulse_engine``'s antialiased bicubic operator (the same operator PULSE's loss uses). An input that
already is low-resolution (``upsample --lr``) is used as read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pulse_engine.downsample import BicubicDownsample, factor_between
from pulse_engine.errors import InputImageError, PulseAuditError

from ..core.records import FaceItem, FaceSet, UpsampleInput
from ..core.schema import SOURCE_STAMP
from ..vision.images import FileStamp, StampedImageError, read_rgb, read_rgb_stamped, stamp_of, to_tensor
from .sampling import GROUP_JOIN, stratified_sample

Aligner = Callable[[Image.Image, int], Image.Image]
"""Turns a photo into an aligned square face crop of the given side (pixels)."""
UCPR_SIDE = 4
UCPR_PREFIX = "ucpr/"


@dataclass(frozen=True)
class FFHQAligner:
    """An :data:`Aligner`: ``align_face`` (``audit.vision.align``) on uint8 arrays; ``weights`` are the model
    files it reads (dlib's 68-point landmark model), whose SHA-256 a resumed run must match."""

    align_face: Callable[[np.ndarray, int], np.ndarray]
    weights: tuple[Path, ...]

    def __call__(self, image: Image.Image, size: int) -> Image.Image:
        return Image.fromarray(np.asarray(self.align_face(np.asarray(image), size), dtype=np.uint8), "RGB")


def load_aligner() -> FFHQAligner:
    """FFHQ-style alignment as an :data:`Aligner`, or a one-line error saying what is missing (the
    landmark model file is looked up now, not at the first face)."""
    try:
        align_face = importlib.import_module("audit.vision.align").align_face
        faces = importlib.import_module("audit.vision.faces")
    except (ImportError, AttributeError) as exc:
        raise PulseAuditError(f"--align needs face alignment (audit.vision.align.align_face with dlib landmarks), "
                              f"which is unavailable: {exc}") from exc
    return FFHQAligner(align_face, (faces.model_file(faces.PREDICTOR_68),))


def check_factor(resolution: int, factor: int) -> None:
    """Raise a one-line error unless the integer ``factor`` divides R and leaves a usable LR side."""
    if factor < 1 or resolution % factor or (3 * factor) // 2 >= resolution:
        raise PulseAuditError(f"--factor {factor} does not divide the {resolution} px output into a usable "
                              f"LR image (choose a divisor of {resolution} below {2 * resolution // 3})")


def low_of(truth: torch.Tensor, factor: int) -> torch.Tensor:
    """The LR version (3, R/f, R/f) of a (3, R, R) image, clamped to [0, 1]."""
    return BicubicDownsample(factor)(truth[None].float())[0].clamp(0, 1)


def hr_image(path: Path, resolution: int, crop: str = "center", aligner: Aligner | None = None) -> torch.Tensor:
    """The true HR image (3, R, R) in [0, 1] of one file; :class:`InputImageError` when unusable."""
    return hr_image_stamped(path, resolution, crop, aligner)[0]


def hr_image_stamped(path: Path, resolution: int, crop: str = "center",
                     aligner: Aligner | None = None) -> tuple[torch.Tensor, FileStamp]:
    """:func:`hr_image` and the :class:`~audit.vision.images.FileStamp` of the file it was made from."""
    image, stamp = read_rgb_stamped(path, "center" if aligner is not None else crop)
    if aligner is not None:
        try:
            image = aligner(image, resolution)
        except (InputImageError, ValueError, RuntimeError) as exc:  # missing weights stay fatal
            raise StampedImageError(f"{path}: alignment failed: {exc}", stamp) from exc
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.LANCZOS)
    return to_tensor(image), stamp


def hr_face(item: FaceItem, resolution: int, crop: str = "center", aligner: Aligner | None = None) -> torch.Tensor:
    """The true HR image (3, R, R) in [0, 1] of one face; :class:`InputImageError` when unusable."""
    return hr_image(item.path, resolution, crop, aligner)


def prepare_face(item: FaceItem, resolution: int, factor: int, crop: str = "center",
                 aligner: Aligner | None = None) -> UpsampleInput:
    """The upsampler input of one face (id, LR, truth, the source file's stamp as ``source_*`` columns);
    :class:`InputImageError` when unusable."""
    truth, stamp = hr_image_stamped(item.path, resolution, crop, aligner)
    return UpsampleInput(item.item_id, low_of(truth, factor), truth, stamp.columns(SOURCE_STAMP))


def failure_stamp(error: InputImageError) -> dict[str, str | int | None]:
    """The ``source_*`` stamp columns of what was met at the path of a face whose input could not be made
    (:func:`prepare_face` raised ``error``), for its failed rows; {} when its path could not be examined."""
    stamp = stamp_of(error)
    return stamp.columns(SOURCE_STAMP) if stamp is not None else {}


def prepare_file(path: Path, resolution: int, factor: int, lr_given: bool = False,
                 crop: str = "none") -> tuple[torch.Tensor | None, torch.Tensor]:
    """One input file as (HR truth or None, LR input), both (3, side, side) in [0, 1].

    Args:
        path: the image.
        resolution: the generator's output side R.
        factor: downscale factor for HR inputs (checked by :func:`check_factor` beforehand).
        lr_given: the file already is the LR input; its side must divide R.
        crop: ``none`` or ``center`` (see :func:`audit.vision.images.read_rgb`).
    """
    if not lr_given:
        truth = hr_image(path, resolution, crop)
        return truth, low_of(truth, factor)
    image = read_rgb(path, crop)
    side = image.size[0]
    try:
        factor_between(resolution, side)
    except ValueError as exc:
        raise InputImageError(f"{path}: a {side} px LR input does not divide the generator's "
                              f"{resolution} px output") from exc
    return None, to_tensor(image)


def group_key(labels: Mapping[str, str], group_by: Sequence[str]) -> str:
    """The group of a face: its labels of the ``group_by`` attributes joined by `` × `` (as in
    :mod:`audit.run.sampling`), e.g. ``Black × Female``."""
    return GROUP_JOIN.join(str(labels.get(attr, "")) for attr in group_by)


def average_faces(items: Iterable[FaceItem], group_by: Sequence[str], resolution: int, crop: str = "center",
                  aligner: Aligner | None = None) -> dict[str, torch.Tensor]:
    """Per-group mean of the HR faces at R, (3, R, R) in [0, 1], streamed (memory: one image per group).

    Unusable images are left out; a group with no usable image has no average.
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for item in items:
        try:
            truth = hr_face(item, resolution, crop, aligner).double()
        except InputImageError:
            continue
        key = group_key(item.labels, group_by)
        sums[key] = sums[key] + truth if key in sums else truth
        counts[key] = counts.get(key, 0) + 1
    return {key: (sums[key] / counts[key]).float() for key in sorted(sums)}


def ucpr_inputs(averages: Mapping[str, torch.Tensor], side: int = UCPR_SIDE) -> list[UpsampleInput]:
    """Uninformative inputs: each average face downscaled to ``side``×``side`` (factor R/side; the
    benchmark's 4×4 by default), id ``ucpr/<group>``, no truth. The average itself is not a true HR
    image of anyone. How uninformative a side is depends on R: 4×4 is ×16 for a 64 px generator but
    only ×8 for a 32 px one, where it still carries the face's colour."""
    inputs = []
    for group, average in averages.items():
        resolution = average.shape[-1]
        if resolution % side or side >= resolution:
            raise PulseAuditError(f"--ucpr-size {side} does not divide the {resolution} px output into a "
                                  "smaller image")
        check_factor(resolution, resolution // side)
        inputs.append(UpsampleInput(UCPR_PREFIX + group, low_of(average, resolution // side), None))
    return inputs


def load_faceset(spec: str) -> FaceSet:
    """``audit.facesets.load_faceset``, imported on first use."""
    return importlib.import_module("audit.facesets").load_faceset(spec)


def sample_faces(faceset: FaceSet, group_by: Sequence[str], per_group: int,
                 seed: int) -> tuple[list[FaceItem], dict[str, Any]]:
    """The seeded stratified sample of :mod:`audit.run.sampling` (``per_group`` faces per group of
    ``group_by``; 0 keeps every face) and its report for ``run.json``."""
    if per_group == 0:
        return list(faceset.items), {"per_group": 0, "items": len(faceset.items)}
    result = stratified_sample(faceset, group_by, per_group, seed)
    groups = [{"group": g.name, "requested": g.requested, "available": g.available, "selected": g.selected}
              for g in result.groups]
    return list(result.items), {"by": list(result.by), "per_group": result.per_group, "items": len(result.items),
                                "groups": groups, "summary": result.summary()}
