"""The known-answer experiment: how far PULSE's outputs follow a generator's prior skin tone, as the
low-resolution input goes from uninformative to informative.

Inputs are the demo set's per-skin-tone-group average faces (the UCPR inputs) at ``side``×``side`` px:
at 2×2 they carry almost nothing beyond the average colour of four blocks, so the output's skin tone
is left to the generator's prior; at 8×8 and above the LR constraint pins the colour of every block,
and the prior's effect must shrink (attenuation). Outputs are measured in the generator's fixed face
frame (``skin-tone-aligned``: every output measured, no detector, so no selection) and, where dlib finds a
face, by ``skin-tone`` (:data:`MEASURES`). Generators are the units: a prior-shift family
(:mod:`pulse_engine.generators.shifted`, dose = alpha) or DCGANs trained on skewed compositions with
several seeds each (dose = light share of the training faces).

``python -m audit.commands.known_answer --out FILE`` writes the dose–response table of the committed
generators (``datasets/generators``) as Markdown.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pulse_engine.generators import load_generator
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.search import SearchConfig

from ..classifiers import build_classifier
from ..core.records import UpsampleInput
from ..core.schema import ITEM, SAMPLE, SUCCESS
from ..run.inputs import average_faces, load_faceset, ucpr_inputs
from ..stats import bootstrap_interval
from ..upsamplers import GENERATORS_DIR, PulseUpsampler
from ..vision.images import to_image

TRAINED_DIR = GENERATORS_DIR / "skew-3x3"
COMPOSITIONS = {"light-skewed": 0.85, "balanced": 0.5, "dark-skewed": 0.15}
"""Skew-trained replicate generators: name prefix → share of light faces in their training data."""
SEEDS = (0, 1, 2)
GENERATOR, DOSE, SIDE, OUTPUTS = "generator", "dose", "side", "outputs"
"""Columns of the dose–response rows besides the run table's (``item_id``, ``sample``, ``ups_success`` and
:data:`MEASURES`): the generator spec, its dose, the LR side in px; :func:`unit_means` adds the output count."""


def trained_generators() -> dict[Path, tuple[float, int]]:
    """Folders of the committed 3 × 3 skew-trained generators (``skew-3x3/<composition>-seed<k>``) that exist
    → (light share, seed)."""
    return {TRAINED_DIR / f"{prefix}-seed{seed}": (share, seed) for prefix, share in COMPOSITIONS.items()
            for seed in SEEDS if (TRAINED_DIR / f"{prefix}-seed{seed}" / "card.json").is_file()}


def average_face_inputs(resolution: int, side: int, dataset: str = "demo") -> list[UpsampleInput]:
    """The per-skin-tone-group average faces of ``dataset`` at ``resolution`` px, downscaled to ``side`` px."""
    items = [item for item in load_faceset(dataset).items if item.labels.get("skin_tone")]
    return ucpr_inputs(average_faces(items, ("skin_tone",), resolution), side)


MEASURES = {"ita_aligned": "skin-tone-aligned", "ita": "skin-tone"}
"""Output columns → classifier: ITA° in the generator's fixed face frame (every output measured, no detector;
the primary measure) and ITA° where dlib's detector finds a face (NaN otherwise)."""


def output_ita(generator: SearchableGenerator, inputs: Sequence[UpsampleInput], samples: int,
               config: SearchConfig, measures: dict | None = None) -> pd.DataFrame:
    """PULSE outputs of ``generator`` (``samples`` per input), measured: one row per output with the run table's
    ``item_id``, ``sample`` and ``ups_success``, and one column per :data:`MEASURES` entry (NaN: not measured)."""
    measures = measures or {column: build_classifier(name) for column, name in MEASURES.items()}
    outputs = PulseUpsampler(generator, config, batch_size=64).upsample(inputs, samples)
    rows = []
    for inp, row in zip(inputs, outputs):
        images = [np.asarray(to_image(out.image)) for out in row]
        values = {column: [p.values.get("ita", np.nan) for p in tone.predict(images)]
                  for column, tone in measures.items()}
        rows += [{ITEM: inp.item_id, SAMPLE: k, SUCCESS: bool(out.diagnostics["success"]),
                  **{column: values[column][k] for column in measures}} for k, out in enumerate(row)]
    return pd.DataFrame(rows)


def dose_response(specs: dict[str, float], sides: Sequence[int], samples: int, config: SearchConfig,
                  dataset: str = "demo", columns: Sequence[str] = tuple(MEASURES)) -> pd.DataFrame:
    """Output rows (see :func:`output_ita`, measured for ``columns`` of :data:`MEASURES`) of every generator spec at
    every LR side, with columns :data:`GENERATOR` (the spec's key), :data:`DOSE` and :data:`SIDE`."""
    measures, frames, inputs = {column: build_classifier(MEASURES[column]) for column in columns}, [], {}
    for spec, dose in specs.items():
        generator = load_generator(spec)
        for side in sides:
            key = (generator.resolution, side)
            inputs.setdefault(key, average_face_inputs(generator.resolution, side, dataset))
            frame = output_ita(generator, inputs[key], samples, config, measures)
            frames.append(frame.assign(**{GENERATOR: spec, DOSE: dose, SIDE: side}))
    return pd.concat(frames, ignore_index=True)


def unit_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Per side and generator: dose, outputs, share that met eps, and per measure the mean ITA over measured
    outputs and the share measured (``<column>_measured``)."""
    groups = rows.groupby([SIDE, GENERATOR], sort=False)
    table = groups.agg(**{DOSE: (DOSE, "first"), OUTPUTS: (SUCCESS, "size"), SUCCESS: (SUCCESS, "mean")})
    for column in (c for c in MEASURES if c in rows):
        table[column] = groups[column].mean()
        table[f"{column}_measured"] = groups[column].count() / table[OUTPUTS]
    return table.reset_index()


def slope_interval(rows: pd.DataFrame, column: str = "ita_aligned", n_boot: int = 1000,
                   seed: int = 0) -> tuple[float, float, float]:
    """Slope of output ITA (``column``) on dose with a 95 % bootstrap interval that resamples outputs within each
    generator (rows of one side)."""
    data = rows[np.isfinite(rows[column])]
    dose, ita = data[DOSE].to_numpy(float), data[column].to_numpy(float)

    def fit(w: np.ndarray) -> np.ndarray:
        mx, my = (w @ dose) / w.sum(axis=1), (w @ ita) / w.sum(axis=1)
        dx = dose[None] - mx[:, None]
        return (w * dx * (ita[None] - my[:, None])).sum(axis=1) / (w * dx ** 2).sum(axis=1)

    estimate, low, high, _ = bootstrap_interval(fit, len(data), strata=data[GENERATOR].to_numpy(), n_boot=n_boot,
                                                seed=seed)
    return float(estimate), float(low), float(high)


def markdown_table(rows: pd.DataFrame, dose_name: str) -> list[str]:
    """Per side: each generator's mean output ITA (both measures), then the slopes on dose with intervals."""
    lines = [(f"| LR side | generator | {dose_name} | outputs | met eps | mean ITA° in frame | mean ITA° where "
             "detected | detected |"), "|---|---|---|---|---|---|---|---|"]
    for _, unit in unit_means(rows).iterrows():
        lines.append(f"| {unit[SIDE]}×{unit[SIDE]} | `{unit[GENERATOR]}` | {unit[DOSE]:+g} | {unit[OUTPUTS]} | "
                     f"{unit[SUCCESS]:.0%} | {unit['ita_aligned']:+.1f} | {unit['ita']:+.1f} | "
                     f"{unit['ita_measured']:.0%} |")
    lines += ["", (f"| LR side | slope of output ITA° per unit {dose_name}, in frame (95 % CI) | where detected "
                   "(95 % CI) |"), "|---|---|---|"]
    for side, part in rows.groupby(SIDE):
        slopes = [slope_interval(part, column) for column in MEASURES]
        lines.append(f"| {side}×{side} | " + " | ".join(f"{e:+.2f} ({lo:+.2f} to {hi:+.2f})" for e, lo, hi in slopes)
                     + " |")
    lines += ["", "Intervals resample outputs within each generator (generators fixed)."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Dose–response of PULSE output skin tone on the committed "
                                                 "generators' priors.")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    parser.add_argument("--family", default="balanced-shift", help="prior-shift family folder in datasets/generators")
    parser.add_argument("--sides", default="2,4,8")
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    sides, config = [int(s) for s in args.sides.split(",")], SearchConfig(steps=args.steps)
    family = json.loads((GENERATORS_DIR / args.family / "family.json").read_text())
    shift = dose_response({m["spec"]: m["alpha"] for m in family["members"]}, sides, args.samples, config)
    trained = dose_response({f"dcgan-file:{folder}": share for folder, (share, _) in trained_generators().items()},
                            sides, args.samples, config)
    trained[GENERATOR] = trained[GENERATOR].str.rsplit("/", n=1).str[-1]
    text = [f"## Prior-shift family `{args.family}`", "", *markdown_table(shift, "alpha (SD)"), "",
            "## Skew-trained generators", "", *markdown_table(trained, "light share"), ""]
    args.out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
