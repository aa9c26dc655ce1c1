"""Run PULSE over image files and write its outputs: the work behind ``pulse-audit upsample``."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pulse_engine.errors import InputImageError, one_line
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.search import ProgressFn, SearchConfig, SearchResult, search_samples

from ..facesets import file_key
from ..run.inputs import check_factor, prepare_file
from ..run.run_store import safe_id
from ..vision.images import to_image

TABLE = "results.csv"
RESULT_COLUMNS = ("input", "sample", "output", "success", "lr_l2", "best_step", "steps", "restarts_used",
                  "seed", "batch_seconds", "error")


@dataclass
class UpsampledItem:
    """One input file with its output folder name (unique, inside ``--out``; also the seed key),
    its LR version, optional HR truth, and one result per sample."""

    path: Path
    name: str
    low: torch.Tensor
    truth: torch.Tensor | None
    results: list[SearchResult] = field(default_factory=list)


@dataclass
class Prepared:
    """Inputs ready to search, and the files that could not be used with the reason for each."""

    items: list[UpsampledItem]
    failures: list[tuple[Path, str]]


def output_names(paths: Sequence[Path]) -> list[str]:
    """One folder name per input, unique and a single safe path component of bounded length: the
    file's stem when that is safe and no other input shares it, else a sanitised form of its path
    with a hash (so ``a/face.png`` and ``b/face.png``, or ``...png``, never collide or escape)."""
    stems = Counter(path.stem for path in paths)
    names: list[str] = []
    taken = {TABLE}
    for path in paths:
        name = safe_id(path.stem if stems[path.stem] == 1 else path.as_posix())
        while name in taken:
            name = safe_id(f"{name}#{len(names)}")
        taken.add(name)
        names.append(name)
    return names


def prepare_inputs(paths: Sequence[Path], resolution: int, factor: int, lr_given: bool = False,
                   crop: str = "none") -> Prepared:
    """Load every input; an unusable file, or one listed again (under another spelling, through a symbolic
    link or as a hard link: :func:`~audit.facesets.file_key`), becomes a failure record with a one-line reason,
    never a crash; the first listing of a file is the one upsampled.

    All usable inputs must give LR images of one size (a mixed set is an error).
    """
    if not lr_given:
        check_factor(resolution, factor)
    items, failures, unique = [], [], {}
    for path in map(Path, map(os.path.normpath, paths)):
        same = unique.setdefault(file_key(path), path)
        if same is not path:
            failures.append((path, one_line(f"{path}: the same file as {same}, which is upsampled once")))
    kept = list(unique.values())
    for path, name in zip(kept, output_names(kept)):
        try:
            truth, low = prepare_file(path, resolution, factor, lr_given, crop)
        except InputImageError as exc:
            failures.append((path, one_line(str(exc))))
        else:
            items.append(UpsampledItem(path, name, low, truth))
    sides = {item.low.shape[-1] for item in items}
    if len(sides) > 1:
        raise InputImageError(f"LR inputs have different sizes {sorted(sides)}; upsample them separately")
    return Prepared(items, failures)


def search_items(generator: SearchableGenerator, items: Sequence[UpsampledItem], config: SearchConfig,
                 samples: int = 1, batch_size: int = 16, progress: ProgressFn | None = None) -> None:
    """Search ``samples`` outputs per item in shared batches, filling ``item.results``.

    Sample k of an input uses the item key ``"<name>#<k>"`` (``name`` is its output folder, the file
    stem when unique) so seeds are stable across runs.
    """
    grouped = search_samples(generator, [item.low for item in items], [item.name for item in items], samples,
                             config, batch_size, progress)
    for item, results in zip(items, grouped):
        item.results = results


def write_outputs(prepared: Prepared, out: Path) -> Path:
    """Write ``<out>/<name>/{lr,truth,sample<k>}.png`` and ``<out>/results.csv`` (failed inputs
    get a row with their error); returns the CSV path."""
    out.mkdir(parents=True, exist_ok=True)
    table = out / TABLE
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for item in prepared.items:
            folder = out / item.name
            folder.mkdir(exist_ok=True)
            to_image(item.low).save(folder / "lr.png")
            if item.truth is not None:
                to_image(item.truth).save(folder / "truth.png")
            for k, result in enumerate(item.results):
                name = folder / f"sample{k}.png"
                to_image(result.image).save(name)
                writer.writerow({"input": str(item.path), "sample": k, "output": str(name.relative_to(out)),
                                 "success": result.success, "lr_l2": f"{result.lr_l2:.6g}",
                                 "best_step": result.best_step, "steps": result.steps,
                                 "restarts_used": result.restarts_used, "seed": result.seed,
                                 "batch_seconds": f"{result.seconds:.3f}", "error": ""})
        for path, message in prepared.failures:
            writer.writerow({"input": str(path), "error": message})
    return table
