"""Run PULSE over image files and write its outputs: the work behind ``pulse-audit upsample``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pulse_engine.errors import InputImageError
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.search import ProgressFn, SearchConfig, SearchResult, search_samples

from .images import prepare_pair, to_image

RESULT_COLUMNS = ("input", "sample", "output", "success", "lr_l2", "best_step", "steps", "restarts_used",
                  "seed", "seconds", "error")


@dataclass
class UpsampledItem:
    """One input file with its LR version, optional HR truth, and one result per sample."""

    path: Path
    low: torch.Tensor
    truth: torch.Tensor | None
    results: list[SearchResult] = field(default_factory=list)


@dataclass
class Prepared:
    """Inputs ready to search, and the files that could not be used with the reason for each."""

    items: list[UpsampledItem]
    failures: list[tuple[Path, str]]


def prepare_inputs(paths: Sequence[Path], resolution: int, factor: int, lr_given: bool = False,
                   crop: str = "none") -> Prepared:
    """Load every input; an unusable file becomes a failure record, never a crash.

    All usable inputs must give LR images of one size (a mixed set is an error).
    """
    items, failures = [], []
    for path in paths:
        try:
            truth, low = prepare_pair(Path(path), resolution, factor, lr_given, crop)
        except InputImageError as exc:
            failures.append((Path(path), str(exc)))
        else:
            items.append(UpsampledItem(Path(path), low, truth))
    sides = {item.low.shape[-1] for item in items}
    if len(sides) > 1:
        raise InputImageError(f"LR inputs have different sizes {sorted(sides)}; upsample them separately")
    return Prepared(items, failures)


def search_items(generator: SearchableGenerator, items: Sequence[UpsampledItem], config: SearchConfig,
                 samples: int = 1, batch_size: int = 16, progress: ProgressFn | None = None) -> None:
    """Search ``samples`` outputs per item in shared batches, filling ``item.results``.

    Sample k of input ``stem`` uses the item key ``"<stem>#<k>"`` so seeds are stable across runs.
    """
    grouped = search_samples(generator, [item.low for item in items], [item.path.stem for item in items], samples,
                             config, batch_size, progress)
    for item, results in zip(items, grouped):
        item.results = results


def write_outputs(prepared: Prepared, out: Path) -> Path:
    """Write ``<out>/<stem>/{lr,truth,sample<k>}.png`` and ``<out>/results.csv`` (failed inputs
    get a row with their error); returns the CSV path."""
    out.mkdir(parents=True, exist_ok=True)
    table = out / "results.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for item in prepared.items:
            folder = out / item.path.stem
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
                                 "seconds": f"{result.seconds:.3f}", "error": ""})
        for path, message in prepared.failures:
            writer.writerow({"input": str(path), "error": message})
    return table
