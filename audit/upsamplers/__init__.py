"""The upsamplers an audit can run, behind :class:`audit.core.records.Upsampler`.

- ``pulse``: PULSE's latent search over any ``pulse_engine`` generator, K seeded samples per input.
- ``bicubic`` / ``nearest``: plain interpolation of the LR input to R (deterministic baselines).
- ``oracle``: returns the true HR image; a classifier reads it exactly as the truth, so its noise floor is 0
  by construction (useful only as a plumbing check).
- ``jpeg``: the true HR image re-saved as JPEG (quality :data:`JPEG_QUALITY`): a re-encoding baseline that
  changes nothing a person would notice, so the classifiers' disagreement with the truth on it is their real
  measurement noise. Together with ``bicubic`` at the run's factor (the truth through the downsample–upsample
  path, a re-rendering baseline) it is the noise floor to give ``pulse-audit report --baseline``.
- ``folder``: outputs made elsewhere (GFPGAN, CodeFormer, a diffusion model…), matched by file name.

An output that cannot be produced for one row (e.g. a missing file) is returned as a *failed*
output (:func:`failed_output`): an empty image with ``diagnostics["error"]`` set, never a crash.
Every successful output carries ``lr_l2``: the mean squared error, [0, 1] units, between the
output downscaled with PULSE's bicubic operator and the LR input (PULSE's consistency measure).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pulse_engine.device import resolve_device
from pulse_engine.downsample import downsample, factor_between
from pulse_engine.errors import InputImageError, PulseAuditError
from pulse_engine.generators import folder_generators, load_generator
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.registry import Entry, Registry
from pulse_engine.search import SearchConfig, search_samples

from ..core.records import UpsampleInput, UpsampleOutput, Upsampler
from ..vision.images import MISSING, read_rgb_stamped, stamp_of, to_image, to_tensor

JPEG_QUALITY = 90
GENERATORS_DIR = Path(__file__).resolve().parents[2] / "datasets" / "generators"
"""The generators committed with the toolkit (``dcgan-file`` and ``shifted`` folders, with their cards)."""
ERROR_KEY = "error"
FOLDER_EXTENSIONS = (".png", ".jpg", ".jpeg")


def committed_generators(unusable: list[str] | None = None) -> list[str]:
    """``NAME:FOLDER`` specs of the generators committed in :data:`GENERATORS_DIR` (whole paths); with
    ``unusable``, a card that cannot be read is listed there instead of raising (see ``folder_generators``)."""
    return folder_generators(GENERATORS_DIR, unusable)


def failed_output(message: str, diagnostics: Mapping[str, Any] | None = None) -> UpsampleOutput:
    """An output that could not be made: empty image, ``diagnostics["error"] = message`` (and ``diagnostics``)."""
    return UpsampleOutput(torch.empty(0), {**(diagnostics or {}), ERROR_KEY: message})


def output_error(output: UpsampleOutput) -> str:
    """The error of a failed output ("" for a usable one)."""
    return str(output.diagnostics.get(ERROR_KEY, ""))


def lr_consistency(image: torch.Tensor, low: torch.Tensor) -> float:
    """Mean squared error ([0, 1] units) between ``image`` (3, R, R) downscaled and ``low`` (3, h, h);
    NaN when R is not a multiple of h."""
    try:
        factor = factor_between(image.shape[-1], low.shape[-1])
    except ValueError:
        return float("nan")
    return float((downsample(image[None].float(), factor)[0] - low.float()).pow(2).mean())


class PulseUpsampler(Upsampler):
    """PULSE over a generator; sample k of input ``item_id`` uses the seed key ``"<item_id>#<k>"``.

    Args:
        generator: any searchable generator (its resolution is R).
        config: the search settings (seed, restarts, steps, …).
        batch_size: images searched together.
        on_steps: optional callback receiving completed image-steps.
    """

    name = "pulse"

    def __init__(self, generator: SearchableGenerator, config: SearchConfig, batch_size: int = 16,
                 on_steps: Callable[[int], None] | None = None) -> None:
        self.generator, self.config, self.batch_size, self.on_steps = generator, config, batch_size, on_steps
        self.resolution = generator.resolution

    def upsample(self, inputs: Sequence[UpsampleInput], samples: int) -> list[list[UpsampleOutput]]:
        grouped = search_samples(self.generator, [inp.low for inp in inputs], [inp.item_id for inp in inputs],
                                 samples, self.config, self.batch_size, self.on_steps)
        return [[UpsampleOutput(r.image, {"success": r.success, "lr_l2": r.lr_l2, "best_step": r.best_step,
                                          "steps": r.steps, "restarts_used": r.restarts_used, "seed": r.seed,
                                          "batch_seconds": r.seconds}) for r in results] for results in grouped]


class _Deterministic(Upsampler):
    """Base of upsamplers with one output per input, repeated for every sample."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution

    def make(self, inp: UpsampleInput) -> torch.Tensor:
        """The (3, R, R) output for one input, in [0, 1]."""
        raise NotImplementedError

    def upsample(self, inputs: Sequence[UpsampleInput], samples: int) -> list[list[UpsampleOutput]]:
        rows = []
        for inp in inputs:
            began = time.perf_counter()
            image = self.make(inp)
            diagnostics = {"lr_l2": lr_consistency(image, inp.low), "seconds": time.perf_counter() - began}
            rows.append([UpsampleOutput(image.clone(), dict(diagnostics)) for _ in range(samples)])
        return rows


class InterpolateUpsampler(_Deterministic):
    """torch interpolation of the LR input to R: ``bicubic`` (align_corners=False, no antialias,
    clamped to [0, 1]) or ``nearest``."""

    def __init__(self, mode: str, resolution: int) -> None:
        super().__init__(resolution)
        self.name = mode

    def make(self, inp: UpsampleInput) -> torch.Tensor:
        size = (self.resolution, self.resolution)
        low = inp.low[None].float()
        if self.name == "bicubic":
            out = F.interpolate(low, size=size, mode="bicubic", align_corners=False, antialias=False)
        else:
            out = F.interpolate(low, size=size, mode="nearest")
        return out[0].clamp(0, 1)


class OracleUpsampler(_Deterministic):
    """Returns the true HR image exactly (the classifiers' noise floor)."""

    name = "oracle"

    def make(self, inp: UpsampleInput) -> torch.Tensor:
        if inp.truth is None:
            raise PulseAuditError(f"oracle upsampler: input {inp.item_id!r} has no true HR image "
                                  "(uninformative UCPR inputs have none)")
        return inp.truth.clone()


class JpegUpsampler(_Deterministic):
    """The true HR image re-saved as JPEG (baseline 4:2:0 chroma subsampling, ``quality``) and decoded."""

    name = "jpeg"

    def __init__(self, resolution: int, quality: int = JPEG_QUALITY) -> None:
        super().__init__(resolution)
        self.quality = quality

    def make(self, inp: UpsampleInput) -> torch.Tensor:
        if inp.truth is None:
            raise PulseAuditError(f"jpeg upsampler: input {inp.item_id!r} has no true HR image "
                                  "(uninformative UCPR inputs have none)")
        buffer = io.BytesIO()
        to_image(inp.truth).save(buffer, "JPEG", quality=self.quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return to_tensor(decoded.convert("RGB"))


def folder_candidates(folder: Path, item_id: str, sample: int) -> list[Path]:
    """Files that may hold sample ``sample`` of ``item_id``: ``<stem>_<k>.<ext>``, and for k = 0
    also ``<stem>.<ext>`` (stem = the item id's last path component without extension)."""
    stem = Path(item_id).stem
    names = [f"{stem}_{sample}"] + ([stem] if sample == 0 else [])
    return [folder / f"{name}{ext}" for name in names for ext in FOLDER_EXTENSIONS]


def folder_output(folder: Path, item_id: str, sample: int) -> Path | None:
    """The file the ``folder`` upsampler reads for sample ``sample`` of ``item_id``: the first of
    :func:`folder_candidates` that is a regular file (a FIFO or folder of that name is not), None if none is."""
    return next((path for path in folder_candidates(folder, item_id, sample) if path.is_file()), None)


class FolderUpsampler(Upsampler):
    """Outputs made elsewhere, read from ``folder`` (:func:`folder_output`) and resized (Lanczos) to R when
    needed. Each output's diagnostics name its file and its stamp (``file``, ``file_sha256``, ``file_bytes``, …:
    :class:`~audit.vision.images.FileStamp`), so that a resumed run can tell whether a stored row's output
    file changed, or appeared.

    A missing, unreadable or non-square output becomes a failed output for that row only; it still names
    what was met (``file`` "" and the stamp :data:`~audit.vision.images.MISSING` when there was no file).
    """

    name = "folder"

    def __init__(self, folder: Path, resolution: int) -> None:
        if not Path(folder).is_dir():
            raise PulseAuditError(f"folder upsampler: {folder} is not a folder")
        self.folder, self.resolution = Path(folder), resolution

    def read(self, item_id: str, sample: int) -> UpsampleOutput:
        found = folder_output(self.folder, item_id, sample)
        if found is None:
            stem = Path(item_id).stem
            return failed_output(f"no output for {item_id!r} sample {sample} in {self.folder} "
                                 f"(expected {stem}_{sample}.png" + (f" or {stem}.png)" if sample == 0 else ")"),
                                 {"file": "", **MISSING.columns("file_")})
        try:
            image, stamp = read_rgb_stamped(found)
        except InputImageError as exc:
            met = stamp_of(exc)
            return failed_output(str(exc), {"file": found.name, **(met.columns("file_") if met else {})})
        side = image.size[0]
        if side != self.resolution:
            image = image.resize((self.resolution, self.resolution), Image.LANCZOS)
        return UpsampleOutput(to_tensor(image), {"file": found.name, **stamp.columns("file_"), "source_px": side})

    def upsample(self, inputs: Sequence[UpsampleInput], samples: int) -> list[list[UpsampleOutput]]:
        rows = []
        for inp in inputs:
            outs = [self.read(inp.item_id, k) for k in range(samples)]
            for out in outs:
                if not output_error(out):
                    out.diagnostics["lr_l2"] = lr_consistency(out.image, inp.low)
            rows.append(outs)
        return rows


@dataclass(frozen=True)
class UpsamplerSettings:
    """What :func:`build_upsampler` passes to every upsampler's builder (each uses what it needs)."""

    generator_spec: str = "dcgan-digiface"
    folder: Path | str | None = None
    search_config: SearchConfig | None = None
    device: torch.device | str = "cpu"
    resolution: int | None = None
    batch_size: int = 16

    def side(self) -> int:
        """Output side R: ``resolution``, else the generator's."""
        return self.resolution or load_generator(self.generator_spec, "cpu").resolution


def _pulse(settings: UpsamplerSettings) -> Upsampler:
    generator = load_generator(settings.generator_spec, resolve_device(str(settings.device)))
    return PulseUpsampler(generator, settings.search_config or SearchConfig(), settings.batch_size)


def _bicubic(settings: UpsamplerSettings) -> Upsampler:
    return InterpolateUpsampler("bicubic", settings.side())


def _nearest(settings: UpsamplerSettings) -> Upsampler:
    return InterpolateUpsampler("nearest", settings.side())


def _oracle(settings: UpsamplerSettings) -> Upsampler:
    return OracleUpsampler(settings.side())


def _jpeg(settings: UpsamplerSettings) -> Upsampler:
    return JpegUpsampler(settings.side())


def _folder(settings: UpsamplerSettings) -> Upsampler:
    if not settings.folder:
        raise PulseAuditError("the folder upsampler needs --folder DIR (outputs named <item stem>[_<k>].png)")
    return FolderUpsampler(Path(str(settings.folder)).expanduser(), settings.side())


@dataclass(frozen=True)
class UpsamplerEntry(Entry):
    """One upsampler (:class:`pulse_engine.registry.Entry`; ``loader`` takes :class:`UpsamplerSettings`)."""

    needs_truth: bool = False  # reads the true HR image, so it cannot upsample uninformative UCPR inputs


UPSAMPLERS: Registry[UpsamplerEntry] = Registry("upsampler", "audit", (
    UpsamplerEntry("pulse", "PULSE's latent search over --generator", ".upsamplers:_pulse"),
    UpsamplerEntry("bicubic", "bicubic interpolation of the LR input", ".upsamplers:_bicubic"),
    UpsamplerEntry("nearest", "nearest-neighbour interpolation of the LR input", ".upsamplers:_nearest"),
    UpsamplerEntry("oracle", "the true HR image (noise floor 0 by construction)", ".upsamplers:_oracle", True),
    UpsamplerEntry("jpeg", f"the true HR image re-saved as JPEG q{JPEG_QUALITY}", ".upsamplers:_jpeg", True),
    UpsamplerEntry("folder", "outputs made elsewhere, matched by file name (--folder)", ".upsamplers:_folder"),
))
TRUTH_UPSAMPLERS = tuple(name for name, entry in UPSAMPLERS.items() if entry.needs_truth)
"""Upsamplers that need the true HR image (none for uninformative UCPR inputs)."""


def build_upsampler(name: str, generator_spec: str = "dcgan-digiface", folder: Path | str | None = None,
                    search_config: SearchConfig | None = None, device: torch.device | str = "cpu",
                    resolution: int | None = None, batch_size: int = 16) -> Upsampler:
    """Build an upsampler by name.

    Args:
        name: one of :data:`UPSAMPLERS`.
        generator_spec: ``NAME[:WEIGHTS]``; ``pulse`` searches it; the others only take its resolution
            as R unless ``resolution`` is given.
        folder: the outputs folder (``folder`` only).
        search_config: PULSE settings (``pulse`` only; default PULSE's).
        device: where PULSE searches.
        resolution: output side R in pixels for non-PULSE upsamplers (default: the generator's).
        batch_size: images searched together (``pulse`` only).
    """
    entry, _ = UPSAMPLERS.parse(name)
    settings = UpsamplerSettings(generator_spec, folder, search_config, device, resolution, batch_size)
    return UPSAMPLERS.function(entry)(settings)
