"""The audit run: face set → stratified sample → inputs → upsampler → classifiers → run store.

:func:`run_audit` is the work behind ``pulse-audit run``. The driver (this module) plans the run's
chunks, an engine computes them (:mod:`audit.run.pipeline` in this process; each chunk on an
:class:`audit.run.chunk_worker.ChunkWorker`, which never touches the store), and the driver alone writes
what they return: a chunk's images, then its rows as one atomic part, so a killed run started again with
the same options continues where it stopped (see :mod:`audit.run.run_store`). Each chunk classifies the true
HR image of its faces once and every output with each classifier (separate models, never the
generator), on the 8-bit images that the store writes as PNG.

Fixed chunks: chunk c is inputs [c·n, (c+1)·n) of the run's full, ordered list of inputs (skipped
files, then the sampled faces, then the UCPR inputs, each list chunked on its own), with n =
``batch_size // samples`` (at least 1): membership depends only on the options and the item order,
never on what is stored. A search's last bits depend on which images share its batch, so this is what
makes every session and every engine search exactly the same batches: a resumed run, a local run and
a distributed run store the same rows. A chunk with some rows stored is searched whole again, and only
its missing (item, sample) rows are stored (each exactly once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from pulse_engine.device import resolve_device
from pulse_engine.errors import ConfigError, InputImageError, PulseAuditError
from pulse_engine.search import SearchConfig

from ..classifiers import build_classifier
from ..core.records import FaceItem, FaceSet, Upsampler
from ..core.schema import RECORD_DEVICE, RECORD_ENGINE, RECORD_SEARCH_THREADS
from ..upsamplers import TRUTH_UPSAMPLERS, UPSAMPLERS, build_upsampler
from ..vision.images import CROP_MODES
from .chunk_worker import ChunkResult, ChunkTask, ChunkWorker, Job, WorkerSpec
from .inputs import (
    UCPR_PREFIX,
    average_faces,
    check_factor,
    failure_stamp,
    group_key,
    load_aligner,
    load_faceset,
    prepare_face,
    sample_faces,
    ucpr_inputs,
)
from .pipeline import Engine, run_local, run_sequential, search_process_pays
from .provenance import run_inputs, run_provenance
from .ray_engine import RayOptions, check_ray, ray_engine
from .run_store import RunStore, changes_since, stored_sessions, this_session
from .search_process import SearchProcess
from .source_check import check_stored_sources

ProgressFn = Callable[[int, int], None]
"""Called with (rows stored, rows to store in this session) after each chunk."""
T = TypeVar("T")
ENGINES = ("local", "sequential", "ray")
"""``local``: this machine, the search (in a child process) overlapping the classification and encoding of
the previous chunk; ``sequential``: this process, one stage after the other (a reference for measurements);
``ray``: Ray actors (:mod:`audit.run.ray_engine`, with ``ray_address``, ``workers`` and ``gpus_per_worker``)."""
SESSION_OPTIONS = ("out", "new_run", "engine", "ray_address", "workers", "gpus_per_worker", "threads", "allow_mixed")
"""Options that may differ between the sessions of one run (not part of its fingerprint; the search threads are
checked with the code's versions instead, see :meth:`RunStore.open`)."""
REFERENCE_THREADS = 2
"""The threads of the runs behind committed numbers (the demo, ``reports/examples``, the skew diagnosis): a search's
last bits depend on them, so pinning them makes those numbers the same on any machine's CPU."""
MAX_THREADS = 1024
"""A thread count read from ``run.json`` above this is ignored (a damaged or hostile record)."""
AUDIT_SEARCH = SearchConfig(restarts=3)
"""The search settings of an audit: :class:`SearchConfig`'s defaults (PULSE's), except that an output which misses
eps is retried up to 3 times with fresh seeds (PULSE makes one attempt)."""
SEARCH_OPTIONS = tuple(f.name for f in dataclasses.fields(SearchConfig))
"""Search settings given as top-level options (``steps = 30``) or in a ``[search]`` table; ``seed`` also seeds
the sampling."""
FINGERPRINT_SEARCH = ("seed", "restarts", "steps", "eps", "loss", "learning_rate", "sphere_radius")
"""Search settings always in the fingerprint (flat, as before the search was nested); the others only when not at
their defaults, so a run made before they were options still resumes, and one made with them set does not resume
without them."""
KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "a list of names"}


def _fits(value: Any, default: Any) -> bool:
    """Whether an option value has the type of its default (an integer is fine for a number)."""
    if default is None:
        return True  # SearchConfig's optional settings: SearchConfig checks what it needs
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default)
    return isinstance(value, (int, float)) if isinstance(default, float) else isinstance(value, type(default))


def _checked(name: str, value: Any, default: Any) -> Any:
    """``value`` as option ``name`` holds it (a number as float, a list as tuple), or a one-line error."""
    if isinstance(value, list) and (isinstance(default, tuple) or default is None):
        value = tuple(value)
    if not _fits(value, default):
        raise ConfigError(f"option {name} must be {KINDS[type(default)]}, got {value!r}")
    return float(value) if isinstance(default, float) else value


@dataclass(frozen=True)
class AuditConfig:
    """Every option of an audit run (the ``pulse-audit run`` options, and the keys of ``--config``).

    Lists (``classifiers``, ``group_by``) also accept a comma-separated string; ``per_group`` 0
    keeps every item; ``resolution`` 0 means the generator's; ``ucpr`` 0 disables the UCPR inputs;
    ``new_run`` discards the rows already stored in ``out`` and starts a new run there; ``engine`` is
    where chunks are computed (:data:`ENGINES`; every engine stores the same rows); ``threads`` torch's CPU threads
    for the searches and torch classifiers (0: :func:`search_threads`); ``allow_mixed`` resumes a run whose earlier
    sessions used other code, package versions, device type or threads (refused otherwise). ``search`` holds the PULSE
    search settings (:data:`AUDIT_SEARCH` by default); :meth:`from_mapping` also takes them as top-level keys.
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
    search: SearchConfig = AUDIT_SEARCH
    ucpr: int = 0
    ucpr_size: int = 4
    align: bool = False
    crop: str = "center"
    batch_size: int = 16
    device: str = "auto"
    out: str = "runs/audit"
    new_run: bool = False
    engine: str = "local"
    ray_address: str = ""
    workers: int = 0
    gpus_per_worker: float = 0.0
    threads: int = 0
    allow_mixed: bool = False

    def __post_init__(self) -> None:
        for name in ("classifiers", "group_by"):
            value = getattr(self, name)
            parts = value.split(",") if isinstance(value, str) else list(value)
            object.__setattr__(self, name, tuple(str(p).strip() for p in parts if str(p).strip() not in ("", "none")))
        if not isinstance(self.search, SearchConfig):
            raise ConfigError(f"option search must be a SearchConfig, got {self.search!r}")
        for f in dataclasses.fields(self):
            if f.name != "search":
                object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name), f.default))

    @property
    def seed(self) -> int:
        """The run's base seed: of the sampling and of the search."""
        return self.search.seed

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> AuditConfig:
        """Options from a TOML file of top-level ``key = value`` lines (``per-group`` or ``per_group``; search
        settings there or in a ``[search]`` table), then ``overrides`` (e.g. the options given on the command
        line)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable TOML file ({exc})") from exc
        return cls.from_mapping({**data, **overrides}, str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "options") -> AuditConfig:
        """Options from ``data``: the fields, with the search settings as top-level keys and/or a ``search``
        mapping (or :class:`SearchConfig`); top-level search keys win. Keys may use ``-`` for ``_``."""
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        nested = data.pop("search", AUDIT_SEARCH)
        if isinstance(nested, Mapping):
            nested = {str(k).replace("-", "_"): v for k, v in nested.items()}
            unknown = sorted(set(nested) - set(SEARCH_OPTIONS))
            if unknown:
                raise ConfigError(f"{where}: unknown search setting {unknown[0]!r}; known: {', '.join(SEARCH_OPTIONS)}")
            nested = dataclasses.replace(AUDIT_SEARCH, **_search_values(nested))
        elif not isinstance(nested, SearchConfig):
            raise ConfigError(f"{where}: search must be a table of search settings, got {nested!r}")
        known = [f.name for f in dataclasses.fields(cls) if f.name != "search"]
        unknown = sorted(set(data) - set(known) - set(SEARCH_OPTIONS))
        if unknown:
            names = ", ".join(known + list(SEARCH_OPTIONS))
            raise ConfigError(f"{where}: unknown option {unknown[0]!r}; known: {names}")
        flat = _search_values({k: v for k, v in data.items() if k in SEARCH_OPTIONS})
        return cls(**{k: v for k, v in data.items() if k in known}, search=dataclasses.replace(nested, **flat))

    def replace(self, **overrides: Any) -> AuditConfig:
        """A copy with ``overrides`` (search settings as top-level keys too)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return AuditConfig.from_mapping({**fields, **overrides})

    def validate(self) -> None:
        """One-line errors for invalid combinations, before any work starts."""
        UPSAMPLERS.parse(self.upsampler)
        checks = [(self.samples >= 1 and self.batch_size >= 1, "--samples and --batch-size must be at least 1"),
                  (self.per_group >= 0 and self.ucpr >= 0, "--per-group and --ucpr must be ≥ 0"),
                  (self.ucpr_size >= 1, "--ucpr-size must be ≥ 1"),
                  (self.crop in CROP_MODES, f"--crop must be one of {', '.join(CROP_MODES)}"),
                  (self.engine in ENGINES, f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}"),
                  (self.workers >= 0 and self.gpus_per_worker >= 0, "--workers and --gpus-per-worker must be ≥ 0"),
                  (0 <= self.threads <= MAX_THREADS, f"--threads must be between 0 and {MAX_THREADS}"),
                  (self.engine == "ray" or not (self.ray_address or self.workers or self.gpus_per_worker),
                   "--ray-address, --workers and --gpus-per-worker need --engine ray"),
                  (not (self.upsampler in TRUTH_UPSAMPLERS and self.ucpr),
                   f"the {self.upsampler} upsampler has no truth for UCPR inputs")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def fingerprint(self) -> dict[str, Any]:
        """The options that must match for a run to be resumed (all but :data:`SESSION_OPTIONS`), flat: the
        search settings of :data:`FINGERPRINT_SEARCH`, and the others where they differ from their defaults."""
        search, default = dataclasses.asdict(self.search), dataclasses.asdict(SearchConfig())
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in SESSION_OPTIONS and f.name != "search"}
        return options | {k: v for k, v in search.items() if k in FINGERPRINT_SEARCH or v != default[k]}


def _search_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Search settings checked against the types of :class:`SearchConfig`'s defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
    return {name: _checked(name, value, defaults[name]) for name, value in data.items()}


class Audit:
    """One audit session: plans the run's fixed chunks and stores what an engine computes from them."""

    def __init__(self, config: AuditConfig, faceset: FaceSet, upsampler: Upsampler, store: RunStore,
                 aligner: Any = None, progress: ProgressFn | None = None) -> None:
        self.config, self.faceset, self.upsampler = config, faceset, upsampler
        self.store, self.aligner, self.progress = store, aligner, progress
        self.done = self.total = self.chunks = 0

    def report(self, rows: int) -> None:
        """Count stored rows and tell the progress callback."""
        self.done += rows
        if self.progress is not None:
            self.progress(self.done, self.total)

    def write(self, result: ChunkResult) -> None:
        """Store one chunk's result: its images first, then its rows as one part (the driver is the store's
        only writer)."""
        for relative, data in result.images.items():
            self.store.write_image(relative, data)
        before = len(self.store.done)
        self.store.append(result.rows)
        self.report(len(self.store.done) - before)

    def pending(self, item_id: str, samples: int) -> list[int]:
        return [k for k in range(samples) if (item_id, k) not in self.store.done]

    def face_job(self, item: FaceItem) -> Job:
        job = Job("face", item.item_id, self.pending(item.item_id, self.config.samples), dict(item.labels),
                  str(item.path))
        try:
            job.input = prepare_face(item, self.upsampler.resolution, self.config.factor, self.config.crop,
                                     self.aligner)
        except InputImageError as exc:
            job.error, job.stamp = str(exc), failure_stamp(exc)
        return job

    def tasks(self, units: Sequence[T], samples: int, key: Callable[[T], str], job: Callable[[T], Job]
              ) -> Iterator[ChunkTask]:
        """Chunk c holds ``units[c·n : (c+1)·n]`` (n = ``batch_size // samples``, at least 1), whatever is
        stored; a chunk with rows still missing becomes a task with all its units (``job`` prepares each)."""
        size = max(1, self.config.batch_size // samples)
        for start in range(0, len(units), size):
            members = units[start:start + size]
            self.chunks += 1
            if any(self.pending(key(unit), samples) for unit in members):
                yield ChunkTask(self.chunks - 1, samples, [job(unit) for unit in members])

    def plan(self, items: Sequence[FaceItem], skipped: Sequence[Job]) -> Iterator[ChunkTask]:
        """Every task of the run in order: skipped files, faces, then UCPR inputs."""
        def same(job: Job) -> Job:
            return job

        yield from self.tasks(skipped, self.config.samples, lambda job: job.item_id, same)
        yield from self.tasks(items, self.config.samples, lambda item: item.item_id, self.face_job)
        if self.config.ucpr:
            yield from self.tasks(list(self.ucpr_jobs(items)), self.config.ucpr, lambda job: job.item_id, same)

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
    if config.engine == "ray":
        check_ray(config.ray_address)  # before anything loads: a missing Ray or an unreachable cluster is one line
    faceset = load_faceset(config.dataset)
    config = dataclasses.replace(config, group_by=faceset.grouping(config.group_by))
    if not config.group_by and (config.per_group or config.ucpr):
        raise PulseAuditError(f"face set {faceset.name} has no attribute to group by; name one with --group-by")
    items, sampling = sample_faces(faceset, config.group_by, config.per_group, config.seed)
    spec = worker_spec(config, faceset)
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        with contextlib.ExitStack() as stack:
            chunks = math.ceil(len(items) / max(1, config.batch_size // config.samples)) + bool(config.ucpr)
            searcher = (stack.enter_context(SearchProcess(spec))  # loads while this process loads the rest
                        if config.engine == "local" and search_process_pays(spec, chunks) else None)
            return _run(config, faceset, items, sampling, spec, searcher, progress)
    finally:
        torch.set_num_threads(caller_threads)  # the caller's process keeps its own setting


def _run(config: AuditConfig, faceset: FaceSet, items: list[FaceItem], sampling: Any, spec: WorkerSpec,
         searcher: SearchProcess | None, progress: ProgressFn | None) -> Path:
    """The rest of :func:`run_audit`, once the face set is sampled (and a search process started)."""
    device = resolve_device(config.device)
    upsampler = build_upsampler(config.upsampler, config.generator, config.folder or None, config.search,
                                device, config.resolution or None, config.batch_size)
    if config.resolution not in (0, upsampler.resolution):
        raise PulseAuditError(f"--resolution {config.resolution}: pulse outputs the generator's "
                              f"{upsampler.resolution} px; --resolution is for the other upsamplers")
    check_factor(upsampler.resolution, config.factor)
    classifiers = [build_classifier(name, str(device)) for name in config.classifiers]
    aligner = load_aligner() if config.align else None
    provenance = lambda: run_provenance(faceset, upsampler, classifiers, sampling, config.seed)  # noqa: E731
    inputs = run_inputs(faceset, items, upsampler, classifiers, aligner)
    worker = ChunkWorker(upsampler, classifiers, dict(spec.label_sources), config.group_by)
    engine = make_engine(config, spec, worker, searcher)
    with RunStore.open(Path(config.out), config.fingerprint(), provenance, inputs, config.new_run,
                       session_settings(config, spec.threads), config.allow_mixed) as store:
        check_stored_sources(store.root, items, getattr(upsampler, "folder", None))
        audit = Audit(config, faceset, upsampler, store, aligner, progress)
        skipped = [Job("skipped", s.item_id, audit.pending(s.item_id, config.samples), {}, str(s.path), error=s.reason)
                   for s in getattr(faceset, "skipped", [])]
        audit.total = audit.pending_rows(items, skipped)
        audit.report(0)
        engine(audit.plan(items, skipped), audit.write)
    return Path(config.out)


def worker_spec(config: AuditConfig, faceset: FaceSet) -> WorkerSpec:
    """What a chunk worker of this run is built from, elsewhere (:meth:`ChunkWorker.from_spec`)."""
    return WorkerSpec(config.upsampler, config.generator, config.folder or None, config.search,
                      config.device, config.resolution or None, config.batch_size, config.classifiers,
                      tuple((name, spec.source) for name, spec in faceset.attributes.items()), config.group_by,
                      search_threads(config))


def changes_since_run(config: AuditConfig) -> list[str]:
    """How this session would differ from the sessions of the run already in ``config.out`` in code, package
    versions or search threads (what resuming refuses without ``allow_mixed``); empty for a new folder."""
    sessions = stored_sessions(Path(config.out))
    return changes_since(sessions, this_session(session_settings(config, search_threads(config, sessions))))


def session_settings(config: AuditConfig, threads: int) -> dict[str, Any]:
    """What a session records beside its code's versions: the engine, the device type its searches run on and
    their CPU threads."""
    if config.engine == "ray":  # actors get a GPU only with gpus_per_worker; "auto" resolves to the CPU without one
        device = "cuda" if config.gpus_per_worker else "cpu" if config.device == "auto" else config.device
    else:
        device = str(resolve_device(config.device))
    return {RECORD_ENGINE: config.engine, RECORD_DEVICE: device.split(":")[0], RECORD_SEARCH_THREADS: threads}


def search_threads(config: AuditConfig, sessions: Sequence[Mapping[str, Any]] | None = None) -> int:
    """The CPU threads of every search and classification of this session, on every engine (a search's last bits
    depend on them): ``threads`` when given, else those of the run's last session (a resumed run keeps them, so
    its rows are those of a run made in one session), else torch's default (this machine's cores). ``sessions``:
    the stored run's, when the caller has read them already."""
    if config.threads:
        return config.threads
    if not config.new_run:
        stored = stored_sessions(Path(config.out)) if sessions is None else sessions
        usable = [t for t in (s.get(RECORD_SEARCH_THREADS) for s in stored) if type(t) is int and 1 <= t <= MAX_THREADS]
        if usable:
            return usable[-1]
    return torch.get_num_threads()


def make_engine(config: AuditConfig, spec: WorkerSpec, worker: ChunkWorker, searcher: SearchProcess | None = None
                ) -> Engine:
    """The engine ``config.engine`` names: ``sequential`` runs ``worker`` in this process, ``local`` too but
    with the search in ``searcher`` (a child process built from ``spec``) when given; ``ray`` builds its
    workers from ``spec`` on Ray actors."""
    if config.engine == "ray":
        return ray_engine(RayOptions(config.ray_address, config.workers, config.gpus_per_worker), spec)
    if config.engine == "sequential":
        return partial(run_sequential, worker)
    return partial(run_local, worker, searcher)

