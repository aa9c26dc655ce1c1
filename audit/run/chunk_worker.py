"""The compute of an audit run, one chunk at a time: upsample, classify, encode — never store.

A :class:`ChunkTask` is one chunk of a run's inputs (its membership fixed by the run's options and the
order of its items, see :mod:`audit.run.harness`), each :class:`Job` with the samples whose rows are still
missing. A :class:`ChunkWorker`, built once from the upsampler, the classifiers and the face set's label
provenance (or from a picklable :class:`WorkerSpec`, e.g. in another process), turns a task into a
:class:`ChunkResult`: the result rows (dicts) and the PNG bytes they reference, keyed by their path
relative to the run folder. Tasks and results are plain picklable data; the worker never touches the run
store, so whoever drives it (the harness, in this process or across a cluster) stays its only writer.

The work has two stages, :meth:`ChunkWorker.search` (the upsampler, on the whole chunk: every input is
searched, even one whose rows are all stored, so the batch is always the same) and
:meth:`ChunkWorker.finish` (classify the true and output images, encode the PNGs, make the rows), so that
a driver can overlap the search of one chunk with the finishing of the previous one;
:meth:`ChunkWorker.run` does both in turn.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from pulse_engine.device import resolve_device
from pulse_engine.search import SearchConfig

from ..classifiers import build_classifier
from ..core.records import Classifier, Prediction, UpsampleInput, UpsampleOutput, Upsampler
from ..core.schema import (
    ERROR,
    GROUP,
    INPUT_KIND,
    ITEM,
    PATH_LR,
    PATH_OUT,
    PATH_SOURCE,
    PATH_TRUTH,
    SAMPLE,
    T_CLASSIFY,
    T_UPSAMPLE,
    label_column,
    label_source_column,
    upsampler_column,
)
from ..upsamplers import ERROR_KEY, build_upsampler, output_error
from ..vision.images import to_image
from .inputs import group_key
from .rows import comparisons, fidelity, safe_predict, side_columns
from .run_store import image_path, png_bytes


@dataclass
class Job:
    """One input of a chunk, or the error that prevents it, with the samples whose rows are still to store
    (empty for an input whose rows are all stored: it is still searched, so that its chunk's batch stays the
    same)."""

    kind: str
    item_id: str
    samples: list[int]
    labels: dict[str, str] = field(default_factory=dict)
    source: str = ""
    input: UpsampleInput | None = None
    error: str = ""
    stamp: dict[str, Any] = field(default_factory=dict)
    """The source file's stamp columns when no input could be made from it (else they are ``input.source``)."""


@dataclass
class ChunkTask:
    """One chunk: ``index`` (its place in the run, the same in every session), the outputs searched per
    input (``samples``) and its jobs, in item order."""

    index: int
    samples: int
    jobs: list[Job]

    def rows_wanted(self) -> int:
        """Rows this chunk still has to store."""
        return sum(len(job.samples) for job in self.jobs)


@dataclass
class ChunkResult:
    """What a worker returns for a :class:`ChunkTask`: the rows to append (each with ``item_id`` and
    ``sample``), the PNG bytes they reference (run-relative path → bytes, to write before the rows), and the
    wall seconds of its stages (``search``, ``classify``, ``encode``; measurements, not stored)."""

    index: int
    rows: list[dict[str, Any]]
    images: dict[str, bytes]
    seconds: dict[str, float]


@dataclass
class Searched:
    """A task after the upsampler: its outputs per searched job (jobs with an input and no error)."""

    task: ChunkTask
    ready: list[Job]
    outputs: list[list[UpsampleOutput]]
    seconds: float

    @staticmethod
    def ready_jobs(task: ChunkTask) -> list[Job]:
        """The jobs of ``task`` that are searched: those with an input and no error."""
        return [job for job in task.jobs if job.input is not None and not job.error]

    @classmethod
    def of(cls, task: ChunkTask, outputs: list[list[UpsampleOutput]], seconds: float) -> Searched:
        """``task`` after a search made elsewhere returned ``outputs`` (per ready job) in ``seconds``."""
        return cls(task, cls.ready_jobs(task), outputs, seconds)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to build a :class:`ChunkWorker` elsewhere (picklable): the upsampler's options
    (as :func:`audit.upsamplers.build_upsampler` takes them), the classifier specs, the face set's label
    sources (attribute → ``annotated``/``predicted``, in the face set's order) and the grouping; ``device``
    as the user gave it (``auto`` is resolved where the worker is built); ``threads`` the torch CPU threads the
    worker's process uses (0: that process's default), which every engine sets alike so that they store the same
    rows (a search's last bits depend on how its reductions are split between threads)."""

    upsampler: str
    generator: str
    folder: str | None
    search: SearchConfig
    device: str
    resolution: int | None
    batch_size: int
    classifiers: tuple[str, ...]
    label_sources: tuple[tuple[str, str], ...]
    group_by: tuple[str, ...]
    threads: int = 0


class ChunkWorker:
    """Turns chunk tasks into rows and PNG bytes (see the module docstring)."""

    def __init__(self, upsampler: Upsampler, classifiers: Sequence[Classifier], label_sources: Mapping[str, str],
                 group_by: Sequence[str]) -> None:
        self.upsampler, self.classifiers = upsampler, list(classifiers)
        self.label_sources, self.group_by = dict(label_sources), tuple(group_by)

    @classmethod
    def from_spec(cls, spec: WorkerSpec, classify: bool = True) -> ChunkWorker:
        """Build the upsampler (loading the generator) and, with ``classify``, the classifiers that ``spec``
        names (without, the worker can only :meth:`search`)."""
        device = resolve_device(spec.device)
        upsampler = build_upsampler(spec.upsampler, spec.generator, spec.folder, spec.search, device,
                                    spec.resolution, spec.batch_size)
        classifiers = [build_classifier(name, str(device)) for name in spec.classifiers] if classify else []
        return cls(upsampler, classifiers, dict(spec.label_sources), spec.group_by)

    def run(self, task: ChunkTask) -> ChunkResult:
        """Both stages in turn."""
        return self.finish(self.search(task))

    def search(self, task: ChunkTask) -> Searched:
        """Upsample every usable input of the chunk (:meth:`Searched.of`), ``task.samples`` outputs each."""
        ready = Searched.ready_jobs(task)
        began = time.perf_counter()
        outputs = self.upsampler.upsample([job.input for job in ready], task.samples) if ready else []
        return Searched(task, ready, outputs, time.perf_counter() - began)

    def finish(self, searched: Searched) -> ChunkResult:
        """Classify, encode and make the rows of the samples still wanted: failed rows first (inputs that
        could not be read, then outputs that could not be made), then one row per usable output.
        ``t_upsample_s`` is the chunk's search time per output searched, ``t_classify_s`` its
        classification time per usable output."""
        task, ready = searched.task, searched.ready
        t_upsample = searched.seconds / max(1, len(ready) * task.samples)
        rows = [self.base_row(job, k) | {ERROR: job.error} for job in task.jobs if job.error for k in job.samples]
        pairs = [(job, k, outs[k]) for job, outs in zip(ready, searched.outputs) for k in job.samples]
        rows += [self.base_row(job, k) | self.diagnostics(o) | {ERROR: output_error(o)}
                 for job, k, o in pairs if output_error(o)]
        usable = [(job, k, o) for job, k, o in pairs if not output_error(o)]
        jobs = list({id(job): job for job, _, _ in usable}.values())
        began = time.perf_counter()
        with_truth = [job for job in jobs if job.input.truth is not None]
        truth_images = [to_image(job.input.truth) for job in with_truth]
        out_images = [to_image(o.image) for _, _, o in usable]
        truths = {job.item_id: preds for job, preds in zip(with_truth, self.classify(truth_images))}
        outs = self.classify(out_images)
        classify_seconds = time.perf_counter() - began
        t_classify = classify_seconds / max(1, len(usable))
        began = time.perf_counter()
        images: dict[str, bytes] = {}
        truth_png = dict(zip((job.item_id for job in with_truth), truth_images))
        inputs = {job.item_id: self.input_images(job, truth_png.get(job.item_id), images) for job in jobs}
        for i, (job, k, out) in enumerate(usable):
            row = self.base_row(job, k) | inputs[job.item_id] | {ERROR: ""}
            row[PATH_OUT] = encode(image_path(job.item_id, f"out_{k}"), out_images[i], images)
            row |= self.diagnostics(out) | {T_UPSAMPLE: t_upsample, T_CLASSIFY: t_classify}
            out_preds = outs[i]
            row |= side_columns("out", self.classifiers, out_preds)
            if job.item_id in truths:
                row |= side_columns("in", self.classifiers, truths[job.item_id])
                row |= comparisons(self.classifiers, truths[job.item_id], out_preds)
            if job.input.truth is not None:
                row |= fidelity(out.image, job.input.truth)
            rows.append(row)
        seconds = {"search": searched.seconds, "classify": classify_seconds, "encode": time.perf_counter() - began}
        return ChunkResult(task.index, rows, images, seconds)

    def base_row(self, job: Job, sample: int) -> dict[str, Any]:
        """Ids, kind, group, dataset labels with their provenance, and the source file."""
        row: dict[str, Any] = {ITEM: job.item_id, SAMPLE: sample, INPUT_KIND: job.kind,
                               GROUP: group_key(job.labels, self.group_by) if job.labels else "",
                               PATH_SOURCE: job.source, **(job.input.source if job.input is not None else job.stamp)}
        for name, source in self.label_sources.items():
            row[label_column(name)] = job.labels.get(name, "")
            row[label_source_column(name)] = source
        return row

    @staticmethod
    def diagnostics(output: UpsampleOutput) -> dict[str, Any]:
        """An output's diagnostics as ``ups_*`` columns (a failed one's error goes to ``error`` instead)."""
        return {upsampler_column(key): v for key, v in output.diagnostics.items() if key != ERROR_KEY}

    def input_images(self, job: Job, truth: Image.Image | None, images: dict[str, bytes]) -> dict[str, str]:
        """Encode the truth (if any) and LR images of a job into ``images``; their run-relative paths."""
        return {PATH_TRUTH: encode(image_path(job.item_id, "truth"), truth, images) if truth is not None else "",
                PATH_LR: encode(image_path(job.item_id, "lr"), to_image(job.input.low), images)}

    def classify(self, images: Sequence[Image.Image]) -> list[list[Prediction]]:
        """Per image, one Prediction per classifier (of the 8-bit RGB version that is stored)."""
        arrays = [np.asarray(image) for image in images]
        per_classifier = [safe_predict(c, arrays) if arrays else [] for c in self.classifiers]
        return [[predictions[i] for predictions in per_classifier] for i in range(len(arrays))]


def encode(relative: str, image: Image.Image, images: dict[str, bytes]) -> str:
    """PNG-encode ``image`` into ``images[relative]``; returns ``relative``."""
    images[relative] = png_bytes(image)
    return relative
