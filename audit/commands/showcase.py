"""``make demo``'s first stage: PULSE on the embedded showcase portraits at ×4 and ×8."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pulse_engine.errors import PulseAuditError
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.search import SearchConfig
from reports.grids import comparison_grid
from reports.html import render

from .upsampling import prepare_inputs, search_items

SHOWCASE = Path(__file__).resolve().parents[2] / "datasets" / "showcase"
FACTORS = (4, 8)


def run_showcase(generator: SearchableGenerator, out: Path, config: SearchConfig, samples: int = 3,
                 progress_factory: Callable | None = None, faces_dir: Path = SHOWCASE) -> Path:
    """Search ``samples`` outputs per showcase face at each factor; write grids and ``index.html``.

    Returns the path of the HTML page.
    """
    manifest_path = faces_dir / "showcase.json"
    if not manifest_path.is_file():
        raise PulseAuditError(f"showcase faces not found: expected {manifest_path} (run from a clone of the repo)")
    faces = json.loads(manifest_path.read_text())["faces"]
    paths = [faces_dir / face["file"] for face in faces]
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for factor in FACTORS:
        if generator.resolution % factor:
            continue
        prepared = prepare_inputs(paths, generator.resolution, factor)
        if prepared.failures:
            raise PulseAuditError(f"showcase face unusable: {prepared.failures[0][1]}")
        items = prepared.items
        total = len(items) * samples * config.steps
        if progress_factory is None:
            search_items(generator, items, config, samples)
        else:
            with progress_factory(total, f"×{factor} search") as advance:
                search_items(generator, items, config, samples, progress=advance)
        headers = ["LR input", "truth"] + [f"seed {k}" for k in range(samples)]
        grid = comparison_grid([[item.low, item.truth] + [r.image for r in item.results] for item in items], headers)
        grid.save(out / f"grid_x{factor}.png")
        rows = [dict(face=item.path.stem, sample=k, **{key: getattr(r, key) for key in
                     ("success", "lr_l2", "restarts_used", "best_step", "seed", "seconds")})
                for item in items for k, r in enumerate(item.results)]
        sections.append(dict(factor=factor, low_side=generator.resolution // factor, grid=grid, rows=rows,
                             met=sum(bool(row["success"]) for row in rows)))
    page = out / "index.html"
    page.write_text(render("showcase.html.j2", generator=generator.card, resolution=generator.resolution,
                           config=config, sections=sections, faces=faces))
    return page
