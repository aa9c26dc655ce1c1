"""``make demo``'s audit stage: the known-answer study on the embedded demo set.

The question: does the skin tone of PULSE's outputs follow the generator's training composition, and at
which downscale factor? The study's generators (:func:`known_answer_generators`: small DCGANs trained on
DigiFace renders with skewed skin-tone compositions, several training seeds each, and a prior-shift family
of one generator, as committed in ``datasets/generators``; doses are read from each card) search the demo
set at every factor of :data:`STUDY_FACTORS`, plus uninformative inputs (per-group average faces, 2×2 px
for the 32 px generators) at the largest factor, where only the prior can speak. ``oracle`` (the
classifiers' own noise floor) and, without a shift family, ``dcgan-digiface`` at ×4 get reports too.
The front page is the study (:mod:`reports.study`): the answer first, with its power calculation, then
the showcase portraits and links to every run's report and model card. ``quick`` is a reduced plan for CI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..classifiers import REGISTRY as CLASSIFIERS
from ..run.harness import REFERENCE_THREADS, AuditConfig, changes_since_run, run_audit
from ..upsamplers import GENERATORS_DIR

SKEWED = ("light-skewed", "balanced", "dark-skewed")
REPLICATES = GENERATORS_DIR / "skew-3x3"  # training seeds per composition: <composition>-seed<k>
SHIFT_FAMILIES = {"balanced-shift": 2, "digiface-shift": 4}  # one generator, shifted prior → UCPR input side (px)
SHIFT_MEMBERS = ("alpha-2", "alpha+0", "alpha+2")


def known_answer_generators() -> dict[str, str]:
    """The study's committed generators, name → spec: the skew-trained DCGANs (the 3 × 3 replicates when
    committed, else one per composition; compositions from each card) and the members of the first complete
    prior-shift family (shifts from each card). Swap families by editing the names above."""
    replicates = {folder.name: folder for c in SKEWED
                  for folder in sorted(REPLICATES.glob(f"{c}-seed*"), key=lambda f: int(f.name.rsplit("seed", 1)[1]))}
    trained = {name: folder for name, folder in replicates.items() if (folder / "card.json").is_file()}
    trained = trained or {name: GENERATORS_DIR / name for name in SKEWED
                          if (GENERATORS_DIR / name / "card.json").is_file()}
    generators = {name: f"dcgan-file:{folder}" for name, folder in trained.items()}
    for family in SHIFT_FAMILIES:
        members = {f"{family}-{m}": GENERATORS_DIR / family / m for m in SHIFT_MEMBERS}
        if all((folder / "card.json").is_file() for folder in members.values()):
            return generators | {name: f"shifted:{folder}" for name, folder in members.items()}
    return generators


def ucpr_side(name: str) -> int:
    """Side of the uninformative inputs for a study generator: 2 px for the 32 px ones, 4 px for 64 px."""
    return next((side for family, side in SHIFT_FAMILIES.items() if name.startswith(family)), 2)


STUDY_GENERATORS = known_answer_generators()
ONE_PER_COMPOSITION = {name: f"dcgan-file:{GENERATORS_DIR / name}" for name in SKEWED}  # the showcase's
QUICK_GENERATORS = {name: ONE_PER_COMPOSITION[name] for name in ("light-skewed", "dark-skewed")}  # reports/examples
STUDY_FACTORS, QUICK_FACTORS = (4, 16), (4,)  # ×16: 32 → 2 px, where the input no longer pins the colour
STUDY_BASELINE = "balanced-seed0" if "balanced-seed0" in STUDY_GENERATORS else "balanced"  # a generator name


@dataclass(frozen=True)
class DemoRun:
    """One audit run of the demo: its folder name and the options that differ between runs."""

    name: str
    upsampler: str
    generator: str = "dcgan-digiface"
    factor: int = 4
    resolution: int = 0
    ucpr_size: int = 4
    model: str = ""  # which model card the run belongs to ("" = none)
    study: bool = False  # part of the dose–response study


def demo_plan(quick: bool) -> list[DemoRun]:
    """The runs of the full demo (or of the quick CI variant)."""
    generators = QUICK_GENERATORS if quick else STUDY_GENERATORS
    names = tuple(generators)
    plan = [DemoRun(f"{name}-x{f}", "pulse", generators[name], f, ucpr_size=ucpr_side(name), model=name,
                    study=True)
            for f in (QUICK_FACTORS if quick else STUDY_FACTORS) for name in names]
    if quick or not any(name.startswith("digiface-shift") for name in names):  # else its alpha+0 member is this run
        plan.append(DemoRun("digiface-x4", "pulse", factor=4, model="dcgan-digiface"))
    plan.append(DemoRun("oracle", "oracle", resolution=64))
    return plan


def uninformative_count(run: DemoRun, quick: bool) -> int:
    """Outputs per average face: only at the largest factor of the study (the average faces are the same 2×2
    (or 4×4) inputs at every factor, so searching them again would repeat the work), and on the digiface run."""
    if run.upsampler != "pulse":
        return 0
    if quick:
        return 3
    # 12 per face: with 4, the prior-shift dose–response at ×16 (+8.6° per prior SD) missed Holm (p = 0.067);
    # with 12 it is detected (+9.3°, adjusted p < 0.001). More would not help the composition design: at 12 the
    # sampling SD of a generator's mean is 3.2° against 9.1° between generators (seed), so that design is sized by
    # its number of generators instead (skew-3x3: 3 balanced + 9 + 9 at the ends; the study page's power panel)
    return 12 if not run.study or run.factor == max(STUDY_FACTORS) else 0


def offline_classifiers(quick: bool) -> tuple[str, ...]:
    """The classifiers the study reads, where their assets are present (GEAR, a perceived-race model, only after
    ``make models``); the quick variant keeps its historical pair."""
    wanted = ("skin-tone", "age-gender") if quick else ("skin-tone", "skin-tone-aligned", "identity", "gear")
    return tuple(name for name in wanted if not CLASSIFIERS[name].missing_assets())


def showcase_generators(out: Path, quick: bool, device: str) -> dict[str, Path]:
    """The showcase portraits (Obama first) through one generator per training composition at ×4 and ×8 (8×8 and
    4×4 inputs for these 32 px models); returns each generator's showcase page."""
    from pulse_engine.device import resolve_device
    from pulse_engine.generators import load_generator
    from pulse_engine.search import SearchConfig

    from .showcase import run_showcase

    config = SearchConfig(steps=30 if quick else 100, restarts=1)
    generators = QUICK_GENERATORS if quick else ONE_PER_COMPOSITION
    return {name: run_showcase(load_generator(spec, resolve_device(device)), out / "showcase" / name, config,
                               samples=1 if quick else 2) for name, spec in generators.items()}


def run_plan(out: Path, quick: bool, device: str, progress_factory: Callable | None) -> dict[str, Path]:
    """Run (or resume) every run of the plan; returns name → run folder."""
    classifiers = offline_classifiers(quick)
    common = {"dataset": "demo", "group_by": ("skin_tone",), "per_group": 2 if quick else 1, "samples": 1,
              "restarts": 1, "steps": 30 if quick else 100, "classifiers": classifiers, "device": device, "seed": 0,
              "threads": REFERENCE_THREADS}
    folders: dict[str, Path] = {}
    for run in demo_plan(quick):
        config = AuditConfig.from_mapping({**common, "upsampler": run.upsampler, "generator": run.generator,
                                           "factor": run.factor, "resolution": run.resolution,
                                           "ucpr": uninformative_count(run, quick), "ucpr_size": run.ucpr_size,
                                           "out": str(out / "runs" / run.name)})
        config = config.replace(new_run=bool(changes_since_run(config)))  # made by other code: made again
        if progress_factory is None:
            folders[run.name] = run_audit(config)
        else:
            with progress_factory(f"demo {run.name}") as progress:
                folders[run.name] = run_audit(config, progress)
    return folders


def run_demo_audit(out: Path, quick: bool = False, device: str = "auto",
                   progress_factory: Callable | None = None) -> Path:
    """Run the plan, then reports, cards, comparisons and the study; returns the study page (the front page)."""
    from reports.analysis import Settings
    from reports.card import write_card
    from reports.compare_report import write_compare
    from reports.report import write_report
    from reports.study import load_study_runs, write_study

    plan = demo_plan(quick)
    folders = run_plan(out, quick, device, progress_factory)
    settings = Settings.from_options(300 if quick else 1000, 0, 0.05, "holm", [], 2 if quick else 4)
    oracle = folders["oracle"]
    reports = {name: write_report(folder, None, settings, oracle if "digiface" in name else None)["html"]
               for name, folder in folders.items()}
    cards = {}
    for model in dict.fromkeys(run.model for run in plan if run.model):
        runs = [folders[run.name] for run in plan if run.model == model]
        cards[model] = write_card(runs, out / "cards" / model, None, settings)[0]["html"]
    comparisons = {}
    for factor in sorted({run.factor for run in plan if run.study}):
        runs = [folders[run.name] for run in plan if run.study and run.factor == factor]
        comparisons[f"study generators side by side, ×{factor}"] = write_compare(
            runs, out / "compare" / f"skewed-x{factor}", settings)["html"]
    showcases = showcase_generators(out, quick, device)
    study_runs = load_study_runs([folders[run.name] for run in plan if run.study])
    extras = demo_sections(out, quick, reports, cards, comparisons, showcases)
    extras["sections"].insert(0, validation_section(out, plan, reports))
    baseline = STUDY_BASELINE if any(r.generator == STUDY_BASELINE for r in study_runs) else None
    return write_study(study_runs, out, settings, baseline, extras)["html"]


def validation_section(out: Path, plan: list[DemoRun], reports: dict[str, Path]) -> dict:
    """The skin-tone instrument's validation on the images of the study's most uninformative runs (from their
    reports), with links to every report's full validation."""
    import json

    from reports.study import validation_summary

    top = max(run.factor for run in plan if run.study)
    texts = {}
    for run in plan:
        if run.study and run.factor == top and run.name in reports:
            report = json.loads(reports[run.name].with_name("report.json").read_text())
            texts[run.name] = validation_summary(report)
    shown = {name: text for name, text in texts.items() if text}
    first = next(iter(shown), None)
    text = (f"On the images of {first}: {shown[first]} Every run's report carries the same validation on its own "
            "images (section 'Skin-tone instrument validation') beside the detection rates and how far mean ΔITA "
            "could move if missed faces were not missing at random." if first else
            "No run report of this demo carries a skin-tone validation.")
    return {"title": "Is the instrument valid? Skin-tone validation", "text": text,
            "links": [{"href": str(reports[name].relative_to(out)), "text": f"report of {name}"} for name in shown]}


def demo_sections(out: Path, quick: bool, reports: dict[str, Path], cards: dict[str, Path],
                  comparisons: dict[str, Path], showcases: dict[str, Path]) -> dict:
    """What the study page shows below the study: the showcase grids (Obama first) and every link."""
    def link(path: Path) -> str:
        return str(path.relative_to(out))

    grids = [{"title": f"{name} (32 px; ×4 input 8×8)", "image": Image.open(page.parent / "grid_x4.png"),
              "link": link(page), "link_text": "×4 and ×8, with search success and LR error"}
             for name, page in showcases.items()]
    if (out / "grid_x4.png").is_file():  # written by the showcase stage of `pulse-audit demo`
        grids.insert(0, {"title": "dcgan-digiface (16×16 → 64×64)", "image": Image.open(out / "grid_x4.png"),
                         "link": "index.html", "link_text": "×4 and ×8, with search success and LR error"})
    return {"title": "pulse-audit demo" + (" (quick variant)" if quick else "")
                     + ": does the skin tone of PULSE's outputs follow the generator's training data?",
            "intro": "Faces: the embedded demo set (DCGAN renders and three public-domain portraits) whose skin-tone, "
                     "gender and age labels are predicted by pulse-audit's own classifiers (datasets/demo/README.md). "
                     "Generators: small DCGANs trained on renders with known skin-tone compositions "
                     "(datasets/generators; the composition is read from each card). It measures the toolkit on a "
                     "known answer, not people.",
            "sections": [
                {"title": "The showcase portraits through each generator (Obama first)",
                 "text": "Rows: Obama, Biden, astronaut. Columns: the LR input, the truth, one output per seed. "
                         "Three portraits show what the search does; the numbers are in the study above.",
                 "images": grids},
                {"title": "Every run: its report",
                 "links": [{"href": link(p), "text": name} for name, p in reports.items()]},
                {"title": "Model cards", "links": [{"href": link(p), "text": name} for name, p in cards.items()]},
                {"title": "Side-by-side comparisons (paired over shared inputs)",
                 "links": [{"href": link(p), "text": title} for title, p in comparisons.items()]}]}


EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "reports" / "examples"
EXAMPLE_FILES = {  # file in the quick demo's output → name in reports/examples
    "study.json": "study-quick.json",
    "study.md": "study-quick.md",
    "runs/digiface-x4/report/report.html": "report-digiface-x4.html",
    "runs/digiface-x4/report/report.md": "report-digiface-x4.md",
    "runs/digiface-x4/report/report.json": "report-digiface-x4.json",
    "compare/skewed-x4/compare.html": "compare-skewed-x4.html",
    "compare/skewed-x4/compare.json": "compare-skewed-x4.json",
    "cards/light-skewed/README.md": "card-light-skewed.md",
    "cards/light-skewed/card.html": "card-light-skewed.html",
    "cards/light-skewed/model_card.json": "card-light-skewed.json",
    "cards/dark-skewed/README.md": "card-dark-skewed.md",
    "cards/dark-skewed/model_card.json": "card-dark-skewed.json",
}
VOLATILE_KEYS = frozenset({"generated", "created", "started", "git_commit", "root", "name", "oracle", "path", "card"})
"""JSON keys that name the run folder, record when and from which commit it was made, or hold a
file's location on this machine (its SHA-256 is kept and compared)."""


def comparable(value: object) -> object:
    """A report/card/compare JSON without its volatile provenance keys (for reproducibility checks)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def write_examples(demo_out: Path, dest: Path = EXAMPLES_DIR) -> list[Path]:
    """Copy the example documents of a finished quick demo into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for source, name in EXAMPLE_FILES.items():
        (dest / name).write_bytes((demo_out / source).read_bytes())
        written.append(dest / name)
    return written


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Regenerate reports/examples from the quick demo.")
    parser.add_argument("--dest", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_demo_audit(Path(tmp), quick=True, device="cpu")
        for path in write_examples(Path(tmp), args.dest):
            print("wrote", path)
