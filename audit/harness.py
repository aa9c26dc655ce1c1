"""The audit run: face set → stratified sample → inputs → upsampler → classifiers → run store.

:func:`run_audit` is the work behind ``pulse-audit run``. Inputs are processed in chunks of about
``batch_size`` upsampler outputs; each chunk's rows are stored as one atomic part, so a killed run
started again with the same options continues where it stopped (see :mod:`audit.run_store`).
Each chunk classifies the true HR image of its faces once and every output with each classifier
(separate models, never the generator), on the 8-bit images that the store writes as PNG.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pulse_engine.device import resolve_device
from pulse_engine.errors import InputImageError, PulseAuditError
from pulse_engine.search import SearchConfig

from .classifiers import build_classifier
from .images import CROP_MODES, to_image
from .inputs import (
    UCPR_PREFIX,
    average_faces,
    check_factor,
    group_key,
    load_aligner,
    load_faceset,
    prepare_face,
    sample_faces,
    ucpr_inputs,
)
from .provenance import run_inputs, run_provenance
from .records import Classifier, FaceItem, FaceSet, Prediction, UpsampleInput, Upsampler
from .rows import comparisons, fidelity, safe_predict, side_columns
from .run_store import RunStore
from .upsamplers import TRUTH_UPSAMPLERS, UPSAMPLERS, build_upsampler, output_error

ProgressFn = Callable[[int, int], None]
"""Called with (rows stored, rows to store in this session) after each chunk."""
KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "a list of names"}


def _fits(value: Any, default: Any) -> bool:
    """Whether an option value has the type of its default (an integer is fine for a number)."""
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default)
    return isinstance(value, (int, float)) if isinstance(default, float) else isinstance(value, type(default))


@dataclass(frozen=True)
class AuditConfig:
    """Every option of an audit run (the ``pulse-audit run`` options, and the keys of ``--config``).

    Lists (``classifiers``, ``group_by``) also accept a comma-separated string; ``per_group`` 0
    keeps every item; ``resolution`` 0 means the generator's; ``ucpr`` 0 disables the UCPR inputs;
    ``new_run`` discards the rows already stored in ``out`` and starts a new run there.
    """

    dataset: str = "demo"
    upsampler: str = "pulse"
    generator: str = "dcgan-digiface"
    folder: str = ""
    resolution: int = 0
    classifiers: tuple[str, ...] = ("skin-tone", "age-gender", "identity")
    per_group: int = 200
    group_by: tuple[str, ...] = ()  # () = the face set's default (demo: skin_tone; race where labelled)
    factor: int = 8
    samples: int = 1
    seed: int = 0
    restarts: int = 3
    steps: int = 100
    eps: float = 2e-3
    loss: str = "100*L2+0.05*GEOCROSS"
    learning_rate: float = 0.4
    sphere_radius: str = "sqrt-dim"
    ucpr: int = 0
    ucpr_size: int = 4
    align: bool = False
    crop: str = "center"
    batch_size: int = 16
    device: str = "auto"
    out: str = "runs/audit"
    new_run: bool = False

    def __post_init__(self) -> None:
        for name in ("classifiers", "group_by"):
            value = getattr(self, name)
            parts = value.split(",") if isinstance(value, str) else list(value)
            object.__setattr__(self, name, tuple(str(p).strip() for p in parts if str(p).strip() not in ("", "none")))
        for f in dataclasses.fields(self):
            if not _fits(getattr(self, f.name), f.default):
                kind, value = KINDS[type(f.default)], getattr(self, f.name)
                raise PulseAuditError(f"option {f.name} must be {kind}, got {value!r}")
            if isinstance(f.default, float):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> AuditConfig:
        """Options from a TOML file of top-level ``key = value`` lines (``per-group`` or ``per_group``),
        then ``overrides`` (e.g. the options given on the command line)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PulseAuditError(f"{path}: not a readable TOML file ({exc})") from exc
        return cls.from_mapping({k.replace("-", "_"): v for k, v in data.items()}, str(path)).replace(**overrides)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "options") -> AuditConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise PulseAuditError(f"{where}: unknown option {unknown[0]!r}; known: {', '.join(known)}")
        return cls(**data)

    def replace(self, **overrides: Any) -> AuditConfig:
        return AuditConfig.from_mapping({**dataclasses.asdict(self), **overrides})

    def search_config(self) -> SearchConfig:
        """The PULSE search settings (an invalid one raises :class:`pulse_engine.errors.ConfigError`)."""
        return SearchConfig(restarts=self.restarts, seed=self.seed, steps=self.steps, eps=self.eps,
                            loss=self.loss, learning_rate=self.learning_rate, sphere_radius=self.sphere_radius)

    def validate(self) -> None:
        """One-line errors for invalid combinations, before any work starts."""
        known = ", ".join(UPSAMPLERS)
        checks = [(self.upsampler in UPSAMPLERS, f"unknown upsampler {self.upsampler!r}; known: {known}"),
                  (self.samples >= 1 and self.batch_size >= 1, "--samples and --batch-size must be at least 1"),
                  (self.per_group >= 0 and self.ucpr >= 0, "--per-group and --ucpr must be ≥ 0"),
                  (self.ucpr_size >= 1, "--ucpr-size must be ≥ 1"),
                  (self.crop in CROP_MODES, f"--crop must be one of {', '.join(CROP_MODES)}"),
                  (not (self.upsampler in TRUTH_UPSAMPLERS and self.ucpr),
                   f"the {self.upsampler} upsampler has no truth for UCPR inputs")]
        for ok, message in checks:
            if not ok:
                raise PulseAuditError(message)
        self.search_config()

    def fingerprint(self) -> dict[str, Any]:
        """The options that must match for a run to be resumed (all but the output folder and ``new_run``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("out", "new_run")}


@dataclass
class Job:
    """One input to upsample, or the error that prevents it, with the samples still to store."""

    kind: str
    item_id: str
    samples: list[int]
    labels: dict[str, str] = field(default_factory=dict)
    source: str = ""
    input: UpsampleInput | None = None
    error: str = ""


class Audit:
    """One audit session: turns jobs into stored rows."""

    def __init__(self, config: AuditConfig, faceset: FaceSet, upsampler: Upsampler, classifiers: Sequence[Classifier],
                 store: RunStore, aligner: Any = None, progress: ProgressFn | None = None) -> None:
        self.config, self.faceset, self.upsampler = config, faceset, upsampler
        self.classifiers, self.store, self.aligner, self.progress = list(classifiers), store, aligner, progress
        self.done = self.total = 0

    def report(self, rows: int) -> None:
        """Count stored rows and tell the progress callback."""
        self.done += rows
        if self.progress is not None:
            self.progress(self.done, self.total)

    def pending(self, item_id: str, samples: int) -> list[int]:
        return [k for k in range(samples) if (item_id, k) not in self.store.done]

    def face_job(self, item: FaceItem) -> Job:
        job = Job("face", item.item_id, self.pending(item.item_id, self.config.samples), dict(item.labels),
                  str(item.path))
        if job.samples:
            try:
                job.input = prepare_face(item, self.upsampler.resolution, self.config.factor, self.config.crop,
                                         self.aligner)
            except InputImageError as exc:
                job.error = str(exc)
        return job

    def run(self, jobs: Iterable[Job], samples: int) -> None:
        """Store ``jobs`` (``samples`` outputs each) in chunks of about ``batch_size`` outputs."""
        chunk: list[Job] = []
        for job in jobs:
            chunk += [job] if job.samples else []
            if len(chunk) >= max(1, self.config.batch_size // samples):
                self.report(self.store_chunk(chunk, samples))
                chunk = []
        if chunk:
            self.report(self.store_chunk(chunk, samples))

    def store_chunk(self, chunk: list[Job], samples: int) -> int:
        """Upsample, classify and store one chunk; returns the number of rows stored."""
        ready = [job for job in chunk if job.input is not None and not job.error]
        began = time.perf_counter()
        outputs = self.upsampler.upsample([job.input for job in ready], samples) if ready else []
        t_upsample = (time.perf_counter() - began) / max(1, len(ready) * samples)
        rows = [self.base_row(job, k) | {"error": job.error} for job in chunk if job.error for k in job.samples]
        pairs = [(job, k, outs[k]) for job, outs in zip(ready, outputs) for k in job.samples]
        rows += [self.base_row(job, k) | {"error": output_error(o)} for job, k, o in pairs if output_error(o)]
        usable = [(job, k, o) for job, k, o in pairs if not output_error(o)]
        jobs = list({id(job): job for job, _, _ in usable}.values())
        began = time.perf_counter()
        truths = self.classify_truths(jobs)
        outs = self.classify([o.image for _, _, o in usable])
        t_classify = (time.perf_counter() - began) / max(1, len(usable))
        inputs = {job.item_id: self.save_inputs(job) for job in jobs}
        for i, (job, k, out) in enumerate(usable):
            row = self.base_row(job, k) | inputs[job.item_id] | {"error": ""}
            row["path_out"] = self.store.save_image(job.item_id, f"out_{k}", out.image)
            row |= {f"ups_{key}": v for key, v in out.diagnostics.items()} | {"t_upsample_s": t_upsample,
                                                                           "t_classify_s": t_classify}
            out_preds = [p[i] for p in outs]
            row |= side_columns("out", self.classifiers, out_preds)
            if job.item_id in truths:
                row |= side_columns("in", self.classifiers, truths[job.item_id])
                row |= comparisons(self.classifiers, truths[job.item_id], out_preds)
            if job.input.truth is not None:
                row |= fidelity(out.image, job.input.truth)
            rows.append(row)
        self.store.append(rows)
        return len(rows)

    def classify_truths(self, jobs: Sequence[Job]) -> dict[str, list[Prediction]]:
        """Item id → one Prediction per classifier of its true HR image (inputs that have one)."""
        with_truth = [job for job in jobs if job.input is not None and job.input.truth is not None]
        predictions = self.classify([job.input.truth for job in with_truth])
        return {job.item_id: [p[j] for p in predictions] for j, job in enumerate(with_truth)}

    def base_row(self, job: Job, sample: int) -> dict[str, Any]:
        """Ids, kind, group, dataset labels with their provenance, and the source file."""
        row: dict[str, Any] = {"item_id": job.item_id, "sample": sample, "input_kind": job.kind,
                               "group": group_key(job.labels, self.config.group_by) if job.labels else "",
                               "path_source": job.source}
        for name, spec in self.faceset.attributes.items():
            row[f"label_{name}"] = job.labels.get(name, "")
            row[f"label_source_{name}"] = spec.source
        return row

    def save_inputs(self, job: Job) -> dict[str, str]:
        """Write the truth (if any) and LR images of a job; their paths relative to the run folder."""
        truth = job.input.truth
        return {"path_truth": self.store.save_image(job.item_id, "truth", truth) if truth is not None else "",
                "path_lr": self.store.save_image(job.item_id, "lr", job.input.low)}

    def classify(self, images: Sequence[Any]) -> list[list[Prediction]]:
        """Per classifier, one Prediction per image (the 8-bit RGB version that is stored)."""
        arrays = [np.asarray(to_image(image)) for image in images]
        return [safe_predict(c, arrays) if arrays else [] for c in self.classifiers]

    def ucpr_groups(self, items: Sequence[FaceItem]) -> dict[str, dict[str, str]]:
        """Group → labels, for the groups of the items labelled in every ``group_by`` attribute."""
        by = self.config.group_by
        return {group_key(i.labels, by): dict(i.labels) for i in items if all(i.labels.get(a) for a in by)}

    def pending_rows(self, items: Sequence[FaceItem], skipped: Sequence[Job]) -> int:
        """Rows this session still has to store (skipped files, faces, UCPR inputs)."""
        ucpr = self.ucpr_groups(items) if self.config.ucpr else {}
        return (sum(len(job.samples) for job in skipped)
                + sum(len(self.pending(item.item_id, self.config.samples)) for item in items)
                + sum(len(self.pending(UCPR_PREFIX + group, self.config.ucpr)) for group in ucpr))

    def ucpr_jobs(self, items: Sequence[FaceItem]) -> Iterator[Job]:
        """Per-group average faces at ``ucpr_size`` px, ``ucpr`` samples each (averaged only when needed)."""
        by, groups = self.config.group_by, self.ucpr_groups(items)
        if not any(self.pending(UCPR_PREFIX + g, self.config.ucpr) for g in groups):
            return
        members = [i for i in items if group_key(i.labels, by) in groups]
        for inp in ucpr_inputs(average_faces(members, by, self.upsampler.resolution, self.config.crop, self.aligner),
                               self.config.ucpr_size):
            labels = {a: groups[inp.item_id[len(UCPR_PREFIX):]].get(a, "") for a in by}
            yield Job("ucpr", inp.item_id, self.pending(inp.item_id, self.config.ucpr), labels, "", inp)


def run_audit(config: AuditConfig, progress: ProgressFn | None = None) -> Path:
    """Run or resume the audit ``config`` describes; returns the run folder."""
    config.validate()
    device = resolve_device(config.device)
    faceset = load_faceset(config.dataset)
    config = dataclasses.replace(config, group_by=faceset.grouping(config.group_by))
    if not config.group_by and (config.per_group or config.ucpr):
        raise PulseAuditError(f"face set {faceset.name} has no attribute to group by; name one with --group-by")
    items, sampling = sample_faces(faceset, config.group_by, config.per_group, config.seed)
    upsampler = build_upsampler(config.upsampler, config.generator, config.folder or None, config.search_config(),
                                device, config.resolution or None, config.batch_size)
    if config.resolution not in (0, upsampler.resolution):
        raise PulseAuditError(f"--resolution {config.resolution}: pulse outputs the generator's "
                              f"{upsampler.resolution} px; --resolution is for the other upsamplers")
    check_factor(upsampler.resolution, config.factor)
    classifiers = [build_classifier(spec, str(device)) for spec in config.classifiers]
    aligner = load_aligner() if config.align else None
    provenance = lambda: run_provenance(faceset, upsampler, classifiers, sampling, config.seed)  # noqa: E731
    inputs = run_inputs(faceset, items, upsampler, classifiers)
    with RunStore.open(Path(config.out), config.fingerprint(), provenance, inputs, config.new_run) as store:
        audit = Audit(config, faceset, upsampler, classifiers, store, aligner, progress)
        skipped = [Job("skipped", s.item_id, audit.pending(s.item_id, config.samples), {}, str(s.path), error=s.reason)
                   for s in getattr(faceset, "skipped", [])]
        audit.total = audit.pending_rows(items, skipped)
        audit.report(0)
        audit.run(skipped, config.samples)
        audit.run((audit.face_job(item) for item in items), config.samples)
        if config.ucpr:
            audit.run(audit.ucpr_jobs(items), config.ucpr)
    return Path(config.out)

