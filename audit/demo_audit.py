"""``make demo``'s audit stage: the known-answer experiment on the embedded demo set.

The demo face set goes through PULSE over ``dcgan-digiface`` and over three small DCGANs trained on
DigiFace renders whose skin tones were skewed light, balanced and dark (``datasets/generators``),
and through ``bicubic`` and ``oracle`` (the classifiers' own noise floor), at ×4 and ×8 (the
skew-trained generators also at ×16, where the 2×2 input no longer pins the colour), with every
offline classifier; then one report per run, one model card per generator and comparisons of the
three skew-trained generators. Uninformative inputs (per-group average faces) are searched at
2×2 px for the 32 px generators (×16) and 4×4 px for the 64 px one, so that they carry almost no
colour. ``quick`` runs a reduced plan for CI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from reports.html import render

from .classifiers import REGISTRY as CLASSIFIERS
from .harness import AuditConfig, run_audit

GENERATORS_DIR = Path(__file__).resolve().parents[1] / "datasets" / "generators"
SKEWED = ("light-skewed", "balanced", "dark-skewed")


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


def demo_plan(quick: bool) -> list[DemoRun]:
    """The runs of the full demo (or of the quick CI variant)."""
    skewed = {name: f"dcgan-file:{GENERATORS_DIR / name}" for name in SKEWED}
    factors = (4,) if quick else (4, 8)
    names = ("light-skewed", "dark-skewed") if quick else SKEWED
    # ×16 (32 → 2 px) too: at ×4 and ×8 the LR input still fixes the skin colour within eps
    plan = [DemoRun(f"{name}-x{f}", "pulse", skewed[name], f, ucpr_size=2, model=name)
            for f in (factors if quick else (*factors, 16)) for name in names]
    plan += [DemoRun(f"digiface-x{f}", "pulse", factor=f, model="dcgan-digiface") for f in factors]
    if not quick:
        plan += [DemoRun(f"bicubic-x{f}", "bicubic", factor=f, resolution=64) for f in factors]
    plan.append(DemoRun("oracle", "oracle", resolution=64))
    return plan


def offline_classifiers(quick: bool) -> tuple[str, ...]:
    """Every classifier whose assets are present (GEAR only after ``make models``)."""
    wanted = ("skin-tone", "age-gender") if quick else ("skin-tone", "age-gender", "identity", "gear")
    return tuple(name for name in wanted if not CLASSIFIERS[name].missing_assets())


def showcase_generators(out: Path, quick: bool, device: str) -> dict[str, Path]:
    """The showcase portraits (Obama first) through each skew-trained generator at ×4 and ×8
    (8×8 and 4×4 inputs for these 32 px models); returns each generator's showcase page."""
    from pulse_engine.device import resolve_device
    from pulse_engine.generators import load_generator
    from pulse_engine.search import SearchConfig

    from .showcase import run_showcase

    config = SearchConfig(steps=30 if quick else 100, restarts=1 if quick else 3)
    names = ("light-skewed", "dark-skewed") if quick else SKEWED
    return {name: run_showcase(load_generator(f"dcgan-file:{GENERATORS_DIR / name}", resolve_device(device)),
                               out / "showcase" / name, config, samples=1 if quick else 3) for name in names}


def run_demo_audit(out: Path, quick: bool = False, device: str = "auto",
                   progress_factory: Callable | None = None) -> Path:
    """Run the plan, then reports, cards and comparisons; returns the index page."""
    from reports.analysis import Settings
    from reports.card import write_card
    from reports.compare_report import write_compare
    from reports.report import write_report

    classifiers = offline_classifiers(quick)
    common = dict(dataset="demo", group_by=("skin_tone",), per_group=2 if quick else 4, samples=1 if quick else 2,
                  restarts=1, steps=30 if quick else 100, classifiers=classifiers, device=device, seed=0)
    folders: dict[str, Path] = {}
    for run in demo_plan(quick):
        config = AuditConfig(**common, upsampler=run.upsampler, generator=run.generator, factor=run.factor,
                             resolution=run.resolution, ucpr=(0 if run.upsampler != "pulse" else 3 if quick else 8),
                             ucpr_size=run.ucpr_size, out=str(out / "runs" / run.name))
        if progress_factory is None:
            folders[run.name] = run_audit(config)
        else:
            with progress_factory(f"demo {run.name}") as progress:
                folders[run.name] = run_audit(config, progress)
    settings = Settings.from_options(300 if quick else 1000, 0, 0.05, "holm", [], 2 if quick else 4)
    oracle = folders["oracle"]
    reports = {name: write_report(folder, None, settings, oracle if "digiface" in name or "bicubic" in name
                                  else None)["html"] for name, folder in folders.items()}
    cards = {}
    for model in dict.fromkeys(run.model for run in demo_plan(quick) if run.model):
        runs = [folders[run.name] for run in demo_plan(quick) if run.model == model]
        cards[model] = write_card(runs, out / "cards" / model, None, settings)[0]["html"]
    comparisons = {}
    for factor in sorted({run.factor for run in demo_plan(quick) if run.model in SKEWED}):
        runs = [folders[run.name] for run in demo_plan(quick) if run.model in SKEWED and run.factor == factor]
        comparisons[f"skew-trained generators, ×{factor}"] = write_compare(
            runs, out / "compare" / f"skewed-x{factor}", settings)["html"]
    showcases = showcase_generators(out, quick, device)
    grids = {name: Image.open(page.parent / "grid_x4.png") for name, page in showcases.items()}
    if (out / "grid_x4.png").is_file():  # written by the showcase stage of `pulse-audit demo`
        grids = {"dcgan-digiface (16×16 → 64×64)": Image.open(out / "grid_x4.png"), **grids}
    page = out / "audit.html"
    page.write_text(render("demo_index.html.j2", reports=reports, cards=cards, comparisons=comparisons,
                           classifiers=classifiers, quick=quick, base=out, grids=grids, showcases=showcases))
    return page


EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "reports" / "examples"
EXAMPLE_FILES = {  # file in the quick demo's output → name in reports/examples
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
VOLATILE_KEYS = frozenset({"generated", "created", "git_commit", "root", "name", "oracle", "path", "card"})
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
