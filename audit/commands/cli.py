"""The ``pulse-audit`` command line.

User errors (bad input, missing weights, invalid settings: any :class:`PulseAuditError`) print one line
and exit with status 1, in one place (:class:`Commands`); status 2 is a usage error (an unknown option,
a value outside its choices); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pulse_engine.allocator import keep_large_buffers
from pulse_engine.device import resolve_device
from pulse_engine.errors import PulseAuditError
from pulse_engine.generators import REGISTRY, load_generator, parse_generator_spec
from pulse_engine.search import SearchConfig
from pulse_engine.sphere import RADIUS_RULES

from ..core.schema import ERROR, RECORD_CLASSIFIERS, RECORD_SAMPLING, SUCCESS, record_value
from ..run.harness import ENGINES, AuditConfig, run_audit
from ..stats.multitest import METHODS
from ..upsamplers import UPSAMPLERS, committed_generators
from ..vision.images import CROP_MODES
from .progress import console, image_step_progress, row_progress

DEFAULTS = AuditConfig()
SEARCH_DEFAULTS = DEFAULTS.search
USER_ERROR = 1
"""Exit status of a user error (one line on standard error)."""


class Commands(typer.core.TyperGroup):
    """The command group: a :class:`PulseAuditError` raised by any command becomes one line and exit status 1."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PulseAuditError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(USER_ERROR) from None


app = typer.Typer(
    cls=Commands, help="Audit generative face upsamplers (PULSE over pluggable generators) for demographic skew.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

INPUTS, UPSAMPLING, SEARCH, CLASSIFYING, EXECUTION, RUN_FOLDER = (
    "Inputs", "Upsampler", "PULSE search", "Classifiers", "Execution", "Run folder")
"""Option groups of ``run --help`` (Execution: where and how the work runs, e.g. batch size, device, engine)."""

# Options that `upsample` and `run` share: declared once, with AuditConfig's defaults at both
# (SEARCH_DEFAULTS: the audit's search settings, SearchConfig's defaults but 3 restarts).
Generator = Annotated[str, typer.Option(
    help="NAME[:WEIGHTS] searched by pulse, see `pulse-audit generators`; its resolution is R.",
    rich_help_panel=UPSAMPLING)]
Factor = Annotated[int, typer.Option(
    help="Downscale factor from R to the LR input.", rich_help_panel=INPUTS)]
Crop = Annotated[Literal[CROP_MODES], typer.Option(
    help="center: the central square of a non-square image; none: such an image is an error.",
    rich_help_panel=INPUTS)]
Samples = Annotated[int, typer.Option(
    help="Outputs per input (seeded; deterministic upsamplers repeat).", rich_help_panel=UPSAMPLING)]
Seed = Annotated[int, typer.Option(
    help="Base seed of the sampling and the search; per-sample seeds derive from (seed, input, sample, restart).",
    rich_help_panel=SEARCH)]
Restarts = Annotated[int, typer.Option(
    help="Maximum seeded PULSE attempts per output until LR error ≤ eps.", rich_help_panel=SEARCH)]
Steps = Annotated[int, typer.Option(help="Adam steps per attempt (PULSE: 100).", rich_help_panel=SEARCH)]
Eps = Annotated[float, typer.Option(
    help="Success threshold on mean squared LR error, [0,1] units.", rich_help_panel=SEARCH)]
Loss = Annotated[str, typer.Option(help="Loss string, terms L2, L1, GEOCROSS.", rich_help_panel=SEARCH)]
LearningRate = Annotated[float, typer.Option(
    "--learning-rate", "--lr-rate", help="Base learning rate of the search (PULSE: 0.4).", rich_help_panel=SEARCH)]
SphereRadius = Annotated[Literal[RADIUS_RULES], typer.Option(
    help="sqrt-dim (paper) or initial (reference code).", rich_help_panel=SEARCH)]
BatchSize = Annotated[int, typer.Option(
    help="Outputs searched (and, in a run, stored) together.", rich_help_panel=EXECUTION)]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=EXECUTION)]
SEARCH_OPTIONS = {"seed": Seed, "restarts": Restarts, "steps": Steps, "eps": Eps, "loss": Loss,
                  "learning_rate": LearningRate, "sphere_radius": SphereRadius}
"""The PULSE search options (fields of SearchConfig) that `upsample` and `run` share, in their --help order."""


def search_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the :data:`SEARCH_OPTIONS` (defaults :data:`SEARCH_DEFAULTS`) where its signature has the
    parameter ``search: SearchConfig``: typer reads them from the signature, and the body receives them gathered
    into that SearchConfig."""
    signature = inspect.signature(command, eval_str=True)
    parameters = list(signature.parameters.values())
    at = [p.name for p in parameters].index("search")
    parameters[at:at + 1] = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=option,
                                               default=getattr(SEARCH_DEFAULTS, name))
                             for name, option in SEARCH_OPTIONS.items()]

    @functools.wraps(command)
    def with_search(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in SEARCH_OPTIONS}
        return command(*args, search=replace(SEARCH_DEFAULTS, **values), **kwargs)

    with_search.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return with_search


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"pulse-audit {version('pulse-audit')}")
        except PackageNotFoundError:
            print("pulse-audit (not installed as a package)")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="Print the version and exit.")] = False) -> None:
    """Audit generative face upsamplers (PULSE over pluggable generators) for demographic skew."""


def _deprecated_lr(value: bool) -> bool:
    if value:
        console.print("[yellow]--lr is deprecated (it reads like a learning rate): use --inputs-are-low-res[/]",
                      soft_wrap=True)
    return value


@app.command()
@search_options
def upsample(
    inputs: Annotated[list[Path], typer.Argument(
        help="PNG/JPEG face images (HR to downscale, or LR with --inputs-are-low-res).")],
    generator: Generator = DEFAULTS.generator,
    factor: Factor = DEFAULTS.factor,
    inputs_are_low_res: Annotated[bool, typer.Option(
        help="The inputs already are low-resolution: search them as they are (--factor is ignored).",
        rich_help_panel=INPUTS)] = False,
    lr: Annotated[bool, typer.Option("--lr", hidden=True, callback=_deprecated_lr,
                                     help="Deprecated name of --inputs-are-low-res.")] = False,
    crop: Crop = DEFAULTS.crop,
    samples: Samples = DEFAULTS.samples,
    search: SearchConfig = SEARCH_DEFAULTS,
    batch_size: BatchSize = DEFAULTS.batch_size,
    device: Device = DEFAULTS.device,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/upsample"),
) -> None:
    """Upsample faces with PULSE: writes OUT/<stem>/{lr,truth,sample<k>}.png and OUT/results.csv."""
    from .upsampling import prepare_inputs, search_items, write_outputs

    model = load_generator(generator, resolve_device(device))
    prepared = prepare_inputs(inputs, model.resolution, factor, inputs_are_low_res or lr, crop)
    if not prepared.items:
        raise PulseAuditError(prepared.failures[0][1] if len(prepared.failures) == 1
                              else f"none of the {len(prepared.failures)} inputs is usable; first: "
                                   f"{prepared.failures[0][1]}")
    for _, message in prepared.failures:
        console.print(f"[yellow]skipped:[/] {escape(message)}", highlight=False, soft_wrap=True)
    with image_step_progress(len(prepared.items) * samples * search.steps, "PULSE search") as advance:
        search_items(model, prepared.items, search, samples, batch_size, advance)
    table = write_outputs(prepared, out)
    done = sum(r.success for item in prepared.items for r in item.results)
    total = sum(len(item.results) for item in prepared.items)
    console.print(f"{done}/{total} outputs downscale to their input within eps={search.eps:g}; results in {table}",
                  soft_wrap=True)


@app.command()
def generators() -> None:
    """List the generators: whether each one's weights are present (whole paths), and the committed
    generator folders (datasets/generators) that the folder entries load."""
    unusable: list[str] = []
    committed = committed_generators(unusable)
    for entry in REGISTRY.values():
        print(f"{entry.name}: {entry.summary}")
        if entry.card_format:
            mine = [spec.partition(":")[2] for spec in committed if spec.startswith(entry.name + ":")]
            print(f"  takes {entry.name}:FOLDER; committed:" if mine else f"  takes {entry.name}:FOLDER")
            for folder in mine:
                missing = ", ".join(map(str, entry.missing_files(Path(folder))))
                print(f"    {entry.name}:{folder}" + (f" (missing: {missing})" if missing else ""))
            continue
        missing, location = entry.missing_files(), entry.default_location()
        where = "built in" if location is None else str(location.resolve())
        print(f"  present: {where}" if not missing else "  missing: " + ", ".join(map(str, missing)))
    for problem in unusable:
        print(f"unusable generator folder: {problem}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    generator: Annotated[str, typer.Option(help="NAME[:WEIGHTS] of the showcase generator.")] = "dcgan-digiface",
    samples: Annotated[int, typer.Option(help="Seeds (outputs) per showcase face and factor.")] = 3,
    steps: Annotated[int, typer.Option(help="Adam steps per attempt.")] = 100,
    quick: Annotated[bool, typer.Option(help="Reduced plan (CI): fewer runs, faces, steps and classifiers.")] = False,
    showcase_only: Annotated[bool, typer.Option(help="Only the showcase portraits, no audit.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """The embedded default: showcase portraits at ×4 and ×8, then the known-answer study (demo set through
    skew-trained generators at ×4 and ×16, dcgan-digiface and oracle; reports, model cards, comparisons) whose
    page states whether the outputs follow the generators' training composition."""
    from .showcase import run_showcase

    parse_generator_spec(generator)
    model = load_generator(generator, resolve_device(device))
    # one attempt per seed (the grids show whether it met eps), so that the whole demo stays within 10 minutes
    config = SearchConfig(restarts=1, steps=30 if quick else steps)
    page = run_showcase(model, out, config, samples=1 if quick else samples, progress_factory=image_step_progress)
    console.print(f"showcase written: {page} (grids beside it)", soft_wrap=True)
    if showcase_only:
        return
    from .demo_audit import run_demo_audit

    index = run_demo_audit(out, quick, device, progress_factory=row_progress)
    console.print(f"audit written: open {index} (the study first, then showcase, reports, model cards)",
                  soft_wrap=True)


@app.command()
@search_options
def run(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(
        help="fairface:PATH, utkface:PATH, celeba:PATH, folder:PATH or demo.", rich_help_panel=INPUTS)]
        = DEFAULTS.dataset,
    per_group: Annotated[int, typer.Option(
        help="Faces drawn per group (seeded); 0 = every face.", rich_help_panel=INPUTS)] = DEFAULTS.per_group,
    group_by: Annotated[str, typer.Option(
        help="Attribute, or comma list for an intersection (race,gender); default: the face set's "
             "(demo: skin_tone; race where labelled).", rich_help_panel=INPUTS)] = ",".join(DEFAULTS.group_by),
    factor: Factor = DEFAULTS.factor,
    crop: Crop = DEFAULTS.crop,
    align: Annotated[bool, typer.Option(
        help="FFHQ-align unaligned photos (dlib landmarks) before resizing.", rich_help_panel=INPUTS)]
        = DEFAULTS.align,
    ucpr: Annotated[int, typer.Option(
        help="UCPR: outputs per group-average face (0 = none).", rich_help_panel=INPUTS)] = DEFAULTS.ucpr,
    ucpr_size: Annotated[int, typer.Option(
        help="Side of the UCPR inputs in px (the benchmark's 4; must divide R).", rich_help_panel=INPUTS)]
        = DEFAULTS.ucpr_size,
    upsampler: Annotated[Literal[tuple(UPSAMPLERS)], typer.Option(
        help="pulse, bicubic, nearest, oracle (true HR image), jpeg (re-encoded truth) or folder.",
        rich_help_panel=UPSAMPLING)] = DEFAULTS.upsampler,
    generator: Generator = DEFAULTS.generator,
    folder: Annotated[str, typer.Option(
        help="Folder upsampler: outputs named <item stem>[_<k>].png.", rich_help_panel=UPSAMPLING)] = DEFAULTS.folder,
    resolution: Annotated[int, typer.Option(
        help="Output side R in px for non-pulse upsamplers (0: the generator's).", rich_help_panel=UPSAMPLING)]
        = DEFAULTS.resolution,
    samples: Samples = DEFAULTS.samples,
    search: SearchConfig = SEARCH_DEFAULTS,
    classifiers: Annotated[str, typer.Option(
        help="Comma list of NAME[:WEIGHTS] (see `pulse-audit doctor`), or none.", rich_help_panel=CLASSIFYING)]
        = ",".join(DEFAULTS.classifiers),
    batch_size: BatchSize = DEFAULTS.batch_size,
    device: Device = DEFAULTS.device,
    engine: Annotated[Literal[ENGINES], typer.Option(
        help="Where chunks are computed: local (this process), sequential (same, stages in turn), ray (Ray "
             "actors; needs the ray extra, see README). Every engine stores the same rows.",
        rich_help_panel=EXECUTION)] = DEFAULTS.engine,
    ray_address: Annotated[str, typer.Option(
        help="Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto); default: a local one for this run.",
        rich_help_panel=EXECUTION)] = DEFAULTS.ray_address,
    workers: Annotated[int, typer.Option(
        help="Ray actors, each holding the models once (0: one per GPU, else one per --threads CPUs).",
        rich_help_panel=EXECUTION)] = DEFAULTS.workers,
    gpus_per_worker: Annotated[float, typer.Option(
        help="GPUs per Ray actor (0: CPU actors).", rich_help_panel=EXECUTION)] = DEFAULTS.gpus_per_worker,
    threads: Annotated[int, typer.Option(
        help="torch's CPU threads for the searches and torch classifiers, on every engine (0: those of the run's "
             "earlier sessions, else this machine's cores). A search's last bits depend on them; recorded per "
             "session.",
        rich_help_panel=EXECUTION)] = DEFAULTS.threads,
    out: Annotated[Path, typer.Option(
        help="Run folder; the same command on it resumes the run.", rich_help_panel=RUN_FOLDER)] = Path(DEFAULTS.out),
    new_run: Annotated[bool, typer.Option(
        help="Discard the rows stored in --out and start a new run there (e.g. after its inputs changed).",
        rich_help_panel=RUN_FOLDER)] = DEFAULTS.new_run,
    allow_mixed: Annotated[bool, typer.Option(
        help="Resume although pulse-audit, its packages, the device type or --threads differ from the run's "
             "earlier sessions "
             "(refused otherwise); each session stays listed in run.json and the report.",
        rich_help_panel=RUN_FOLDER)] = DEFAULTS.allow_mixed,
    config: Annotated[Path | None, typer.Option(
        help="TOML file of these options; command-line options win.", rich_help_panel=RUN_FOLDER)] = None,
) -> None:
    """Audit an upsampler on a labelled face set: writes OUT/run.json, OUT/results.parquet, OUT/images/."""
    from ..run.run_store import read_results, read_run_record

    del search  # its options count as the others do: from ctx, only those given on the command line (over --config)
    given = {name: str(value) if isinstance(value, Path) else value for name, value in ctx.params.items()
             if name != "config" and getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    settings = AuditConfig.from_toml(config, **given) if config else AuditConfig.from_mapping(given)
    try:
        with row_progress(f"audit {settings.upsampler}") as progress:
            folder_out = run_audit(settings, progress)
    except KeyboardInterrupt:
        console.print(f"interrupted: the rows stored so far are kept in {settings.out}; run the same command "
                      "to resume", soft_wrap=True)
        raise typer.Exit(130) from None
    meta = read_run_record(folder_out)
    sampling = record_value(meta, RECORD_SAMPLING)
    if not any("race" in card.get("attributes", {}) for card in record_value(meta, RECORD_CLASSIFIERS)):
        console.print("[yellow]no perceived-race classifier ran: the outputs' race is not measured"
                      + (" (inputs are only grouped by their race label)" if "race" in settings.group_by else "")
                      + "; `pulse-audit doctor` shows how to add gear, fairface or deepface[/]", soft_wrap=True)
    for line in sampling.get("summary", [])[1:]:
        console.print(f"[yellow]{escape(line)}[/]", highlight=False, soft_wrap=True)
    table = read_results(folder_out)
    failed = sum(1 for error in table.column(ERROR).to_pylist() if error)
    missed = ""
    if SUCCESS in table.column_names:
        flags = [flag for flag in table.column(SUCCESS).to_pylist() if flag is not None]
        missed = f", {flags.count(False)} of {len(flags)} outputs missed eps (kept; failed rows have no output)"
    console.print(f"{table.num_rows} rows ({failed} failed){missed} in {folder_out / 'results.parquet'}; "
                  f"settings and provenance in {folder_out / 'run.json'}", soft_wrap=True)


@app.command("train-generator")
def train_generator(
    out: Annotated[Path, typer.Option(help="Output folder: weights.pt, card.json, README.md, losses.csv, samples.png")],
    composition: Annotated[str, typer.Option(help="GROUP=SHARE pairs summing to 1, e.g. light=0.85,dark=0.15.")],
    source: Annotated[str, typer.Option(
        help="dcgan-digiface[:N] (N seeded samples labelled by ITA terciles) or a face set spec (folder:PATH …).")]
        = "dcgan-digiface",
    attribute: Annotated[str, typer.Option(help="Attribute the composition is over (skin_tone for dcgan-digiface).")]
        = "skin_tone",
    size: Annotated[int, typer.Option(help="Training images drawn (seeded, without replacement).")] = 5600,
    steps: Annotated[int, typer.Option(help="Discriminator + generator update pairs.")] = 4000,
    seed: Annotated[int, typer.Option(help="Seed of the draw, initialisation, batches and noise.")] = 0,
    resolution: Annotated[int, typer.Option(help="Image side in px (power of two ≥ 8).")] = 32,
    nz: Annotated[int, typer.Option(help="Latent dimension.")] = 100,
    ngf: Annotated[int, typer.Option(help="Generator width.")] = 32,
    ndf: Annotated[int, typer.Option(help="Discriminator width.")] = 32,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    learning_rate: Annotated[float, typer.Option(
        "--learning-rate", "--lr-rate", help="Adam learning rate (both networks).")] = 2e-4,
    max_minutes: Annotated[float, typer.Option(help="Wall-time cap; training stops early there (0 = none).")] = 0.0,
    threads: Annotated[int, typer.Option(help="CPU threads for training.")] = 2,
    evaluate: Annotated[int, typer.Option(help="Samples whose skin tone goes into the card (0 = skip).")] = 500,
    name: Annotated[str, typer.Option(help="Name in the card (default: the output folder's name).")] = "",
    cache: Annotated[Path | None, typer.Option(help="Cache of labelled sources (default $PULSE_AUDIT_CACHE or "
                                                    "~/.cache/pulse-audit).")]
        = None,
) -> None:
    """Train a small DCGAN on CPU from a source with a chosen group composition; writes weights and a card."""
    import shlex

    from .train_cli import TrainOptions, summary_line, train_config
    from .train_cli import train_generator as train

    config = train_config(resolution=resolution, nz=nz, ngf=ngf, ndf=ndf, steps=steps, batch_size=batch_size,
                          learning_rate=learning_rate, seed=seed, threads=threads, max_seconds=60 * max_minutes)
    options = TrainOptions(out=out, source=source, attribute=attribute, composition=composition, size=size, name=name,
                           cache=cache, evaluate=evaluate, command="pulse-audit " + shlex.join(sys.argv[1:]),
                           config=config)
    with row_progress("training steps") as progress:
        card = train(options, lambda done: progress(done, steps) if done % 10 == 0 or done == steps else None)
    console.print(summary_line(card), soft_wrap=True)


@app.command()
def doctor() -> None:
    """Show which optional assets (classifier models, generator weights, packages) are installed."""
    from .doctor import run_doctor

    out = Console(soft_wrap=True, highlight=False)
    kind = ""
    for check in run_doctor():
        if check.kind != kind:
            kind = check.kind
            out.print(f"[bold]{kind}s[/]")
        status = "[green]ready  [/]" if check.ok else "[red]missing[/]"
        version = f" ({check.detail})" if check.ok and check.detail != "ready" else ""
        out.print(f"  {status} {escape(check.name + version)}: {escape(check.purpose)}")
        if not check.ok:
            out.print(f"          {escape(check.detail)}", style="yellow")


@app.command("validate-instrument")
def validate_instrument(
    out: Annotated[Path, typer.Option(help="Output folder for validation.json.")] = Path("runs/instrument"),
    faces: Annotated[int, typer.Option(help="Generated demo faces to use (the showcase portraits are added).")] = 24,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates for intervals (faces resampled).")] = 1000,
) -> None:
    """Validate the skin-tone instruments: planted CIELAB recolouring, 32–256 px, detector vs aligned frame."""
    from ..classifiers.skin_tone_validation import validate_skin_tone, validation_faces

    result = validate_skin_tone(validation_faces(limit=faces), n_boot=n_boot)
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation.json").write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    planted = Table("instrument", "px", "faces measured", "slope (95% CI)", "bias ° (95% CI)", "mean |error| °",
                    title="planted recolouring: measured vs planted ΔITA")
    for row in result["planted"]:
        if "slope" in row:
            planted.add_row(row["instrument"], str(row["side"]), f"{row['faces_measured']}/{row['faces']}",
                            f"{row['slope']:.2f} ({row['slope_ci'][0]:.2f} to {row['slope_ci'][1]:.2f})",
                            f"{row['bias']:+.2f} ({row['bias_ci'][0]:+.2f} to {row['bias_ci'][1]:+.2f})",
                            f"{row['mae']:.2f}")
    sizes = Table("instrument", "px", "measured", "mean ITA°", "paired change vs largest", "selection",
                  title="resolution: the same faces at each size")
    for row in result["resolution"]:
        sizes.add_row(row["instrument"], str(row["side"]), f"{row['share_measured']:.0%}", f"{row['mean_ita']:.1f}",
                      f"{row['paired_difference']:+.2f} (max {row['max_abs_difference']:.1f})",
                      f"{row['selection']:+.2f}")
    Console().print(planted, sizes)
    console.print(f"{result['limits']} Numbers in {out / 'validation.json'}", soft_wrap=True)


def report_settings(n_boot: int, seed: int, alpha: float, adjust: str, positive: list[str] | None = None,
                    per_group: int = 4):
    """Statistical settings of report, card and compare (validated in :mod:`reports.analysis`)."""
    from reports.analysis import Settings

    return Settings.from_options(n_boot, seed, alpha, adjust, positive or [], per_group)


NBoot = Annotated[int, typer.Option(help="Bootstrap replicates for intervals.")]
BootSeed = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")]
Alpha = Annotated[float, typer.Option(help="Family-wise (holm) or false-discovery (bh) level.")]
Adjust = Annotated[Literal[METHODS], typer.Option(help="Multiple-testing adjustment across all tests.")]


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder made by `pulse-audit run`.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/report).")] = None,
    oracle: Annotated[Path | None, typer.Option(
        "--baseline", "--oracle", help="Baseline run on the same inputs (jpeg: re-encoded truth, or bicubic at the "
                                       "same factor): the classifiers' noise floor; oracle gives a floor of 0.",
    )] = None,
    positive: Annotated[list[str] | None, typer.Option(
        help="ATTRIBUTE=CLASS for the McNemar 'class vs not' test (default race=White); repeatable.")] = None,
    per_group: Annotated[int, typer.Option(help="Inputs per group in the sample grids.")] = 4,
    n_boot: NBoot = 2000, seed: BootSeed = 0, alpha: Alpha = 0.05, adjust: Adjust = "holm",
) -> None:
    """Write RUN/report/{report.html, report.md, report.json}: findings, tables, plots, tests."""
    from reports.report import write_report

    paths = write_report(run_dir, out, report_settings(n_boot, seed, alpha, adjust, positive, per_group), oracle)
    console.print(f"report written: {paths['html']} (numbers in {paths['json'].name}, text in {paths['md'].name})",
                  soft_wrap=True)


@app.command()
def card(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders of one model.")],
    info: Annotated[Path | None, typer.Option(
        help="YAML with what the runs cannot know (default OUT/card.yaml; a template is written if missing).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default first RUN/card).")] = None,
    n_boot: NBoot = 2000, seed: BootSeed = 0, alpha: Alpha = 0.05, adjust: Adjust = "holm",
) -> None:
    """Write a model card (Mitchell et al.): README.md with YAML front matter, card.html, model_card.json (MCT)."""
    from reports.card import write_card

    paths, created = write_card(runs, out, info, report_settings(n_boot, seed, alpha, adjust))
    if created:
        console.print(f"wrote the template {info or paths['md'].parent / 'card.yaml'}: fill it in and run again; "
                      "until then the card says [More Information Needed]", soft_wrap=True)
    console.print(f"model card written: {paths['md']}, {paths['html'].name}, {paths['json'].name}", soft_wrap=True)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders on the same inputs (2 or more).")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/compare"),
    n_boot: NBoot = 2000, seed: BootSeed = 0, alpha: Alpha = 0.05, adjust: Adjust = "holm",
) -> None:
    """Compare generators on shared inputs: side-by-side tables, paired tests, one verdict per metric."""
    from reports.compare_report import write_compare

    paths = write_compare(runs, out, report_settings(n_boot, seed, alpha, adjust))
    console.print(f"comparison written: {paths['html']} (numbers in {paths['json'].name})", soft_wrap=True)


@app.command()
def study(
    runs: Annotated[list[Path] | None, typer.Argument(metavar="RUN...", help="Finished run folders.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder: study.{html,md,json} (and runs/ with --config).")]
        = Path("runs/study"),
    config: Annotated[Path | None, typer.Option(
        help="TOML: shared run options at the top level and a [study] table naming the runs to make.")] = None,
    baseline: Annotated[str, typer.Option(help="Baseline: a run name or generator name (default: the first run).")]
        = "",
    n_boot: NBoot = 2000, seed: BootSeed = 0, alpha: Alpha = 0.05, adjust: Adjust = "holm",
) -> None:
    """Runs side by side: headline metrics with intervals, contrasts against a baseline, and the dose–response on
    training composition tested with generators (seeds) as units."""
    from reports.study import load_study_runs, write_study

    settings = report_settings(n_boot, seed, alpha, adjust)
    doses, designs, folders = {}, {}, list(runs or [])
    if config:
        from .study_config import read_plan

        plan = read_plan(config, out)
        for planned in plan.runs:
            with row_progress(f"study run {planned.name}") as progress:
                folders.append(run_audit(planned.config, progress))
            doses |= {planned.name: planned.dose} if planned.dose is not None else {}
            designs |= {planned.name: planned.design} if planned.design else {}
        baseline = baseline or plan.baseline
    if len(folders) < 2:
        raise PulseAuditError("study needs at least two runs: RUN folders, or --config with a [study] table")
    paths = write_study(load_study_runs(folders, doses, designs), out, settings, baseline or None)
    console.print(f"study written: {paths['html']} (numbers in {paths['json'].name}, text in {paths['md'].name})",
                  soft_wrap=True)


def main() -> None:
    """Console entry point."""
    keep_large_buffers()  # CPU searches at 1024 px: reuse large buffers instead of page-faulting them anew
    app()


if __name__ == "__main__":
    main()
