"""Why the skew-trained generators' known answer did not come out in the demo at ×8: one measurement per
candidate cause, written as a Markdown table (``datasets/generators/DIAGNOSIS.md``).

- **Prior vs LR constraint**: PULSE over each generator on every demo face with a skin-tone label, at several
  factors (the real harness, one seeded sample per input): mean ITA° of the outputs and mean ΔITA (output −
  truth, both at the generator's resolution), each with a 95 % bootstrap interval over inputs, next to the
  mean ITA° of the generator's own samples (its card).
- **Selection by the detector**: share of outputs with a measured face, per generator and factor; and the
  mean output ITA recomputed on the inputs measured under every generator (common support).
- **Search success**: share of outputs that met eps, per generator and factor.
- **Instrument noise at 32 px**: the same samples of ``dcgan-digiface`` measured at 64 px and after PULSE's
  bicubic downscale to 32 px: detection at both, mean and SD of the per-face ITA difference.
- **Training noise**: the sample ITA of several seeds per composition (the cards of ``datasets/generators``).

Run: ``python -m audit.commands.skew_diagnosis --out DIR [--generators NAME,…] [--factors 4,8,16]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pulse_engine.downsample import downsample
from pulse_engine.generators import load_generator
from pulse_engine.generators.card_file import read_card
from pulse_engine.search import SearchConfig

from ..classifiers import build_classifier
from ..metrics.columns import INPUT_KIND, ITEM, value_column
from ..run.harness import REFERENCE_THREADS, AuditConfig, changes_since_run, run_audit
from ..run.run_store import read_results
from ..stats import bootstrap_interval
from ..upsamplers import GENERATORS_DIR
from ..vision.images import to_image

ITA_OUT = value_column("out", "skin-tone", "ita")


def mean_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean with its 95 % bootstrap interval over the finite values, and their count."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan"), float("nan"), float("nan"), len(x)
    mean, low, high, _ = bootstrap_interval(lambda w: (w @ x) / w.sum(axis=1), len(x), seed=seed)
    return float(mean), float(low), float(high), len(x)


def fmt(stat: tuple[float, float, float, int]) -> str:
    return f"{stat[0]:+.1f} ({stat[1]:+.1f} to {stat[2]:+.1f})"


def pulse_rows(names: list[str], factors: list[int], root: Path, steps: int = 100) -> pd.DataFrame:
    """The face rows of one harness run per generator × factor, with ``generator`` and ``factor`` columns."""
    frames = []
    for factor in factors:
        for name in names:
            config = AuditConfig(dataset="demo", classifiers=("skin-tone",), per_group=0, group_by=("skin_tone",),
                                 generator=f"dcgan-file:{GENERATORS_DIR / name}", factor=factor, samples=1,
                                 search=SearchConfig(restarts=1, steps=steps), device="cpu", batch_size=64,
                                 out=str(root / f"{name}-x{factor}"), threads=REFERENCE_THREADS)
            run_audit(config.replace(new_run=bool(changes_since_run(config))))  # a run of other code is made again
            rows = read_results(root / f"{name}-x{factor}").to_pandas()
            frames.append(rows[rows[INPUT_KIND] == "face"].assign(generator=name, factor=factor))
    return pd.concat(frames, ignore_index=True)


def pulse_table(rows: pd.DataFrame, names: list[str]) -> list[str]:
    """Markdown rows: per factor and generator, success, detection, output ITA, ΔITA, common-support ITA."""
    lines = [("| factor (LR side) | generator | sample ITA° (card) | inputs | met eps | output face measured | "
             "mean output ITA° (95 % CI) | mean ΔITA° (95 % CI) | output ITA° on common support (n) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for factor, by_factor in rows.groupby("factor"):
        ita = by_factor.pivot_table(index=ITEM, columns="generator", values=ITA_OUT, aggfunc="mean")
        common = ita.dropna()
        for name in names:
            card = read_card(GENERATORS_DIR / name / "card.json", "generator card")["samples_skin_tone"]
            part = by_factor[by_factor["generator"] == name]
            found = part[ITA_OUT].notna().mean()
            lines.append(f"| ×{factor} ({32 // factor} px) | `{name}` | {card['ita_mean_deg']:+.1f} | {len(part)} | "
                         f"{part['ups_success'].mean():.0%} | {found:.0%} | {fmt(mean_ci(part[ITA_OUT]))} | "
                         f"{fmt(mean_ci(part['delta_ita']))} | {common[name].mean():+.1f} ({len(common)}) |")
    return lines


def paired_table(rows: pd.DataFrame, first: str, last: str) -> list[str]:
    """Markdown rows: per factor, the paired mean difference of output ITA ``first`` − ``last``."""
    lines = [f"| factor | paired mean ITA° `{first}` − `{last}` (95 % CI) | inputs with both measured |",
             "|---|---|---|"]
    for factor, by_factor in rows.groupby("factor"):
        ita = by_factor.pivot_table(index=ITEM, columns="generator", values=ITA_OUT, aggfunc="mean")
        stat = mean_ci((ita[first] - ita[last]).to_numpy())
        lines.append(f"| ×{factor} | {fmt(stat)} | {stat[3]} |")
    return lines


def resolution_table(count: int = 300, seed: int = 7) -> list[str]:
    """Markdown rows: the same ``dcgan-digiface`` samples measured at 64 px and at 32 px."""
    generator, tone = load_generator("dcgan-digiface"), build_classifier("skin-tone")
    z = torch.randn(count, *generator.latent_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        large = generator.synthesize(z).clamp(0, 1)
    small = downsample(large, 2).clamp(0, 1)
    ita = {side: np.array([p.values.get("ita", np.nan) for p in tone.predict([np.asarray(to_image(x))
                                                                            for x in images])])
           for side, images in ((64, large), (32, small))}
    both = np.isfinite(ita[64]) & np.isfinite(ita[32])
    diff = ita[32][both] - ita[64][both]
    return [("| samples | measured at 64 px | at 32 px | both | mean ITA° 64 px → 32 px (both) | "
            "mean difference 32 − 64 px (95 % CI) | SD of the difference | |difference| > 10° |"),
            "|---|---|---|---|---|---|---|---|",
            (f"| {count} | {np.isfinite(ita[64]).mean():.0%} | {np.isfinite(ita[32]).mean():.0%} | {both.sum()} | "
            f"{ita[64][both].mean():+.1f} → {ita[32][both].mean():+.1f} | {fmt(mean_ci(diff))} | "
            f"{diff.std(ddof=1):.1f} | "
            f"{np.mean(np.abs(diff) > 10):.0%} |")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure the candidate causes of the skew experiment's failure.")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and diagnosis.md")
    parser.add_argument("--generators", default="light-skewed,balanced,dark-skewed")
    parser.add_argument("--factors", default="4,8,16")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    names = args.generators.split(",")
    rows = pulse_rows(names, [int(f) for f in args.factors.split(",")], args.out / "runs", args.steps)
    rows.to_csv(args.out / "rows.csv", index=False)
    text = ["## PULSE on the demo faces", "", *pulse_table(rows, names), "",
            *paired_table(rows, names[0], names[-1]), "", "## Instrument: same faces at 64 and 32 px", "",
            *resolution_table(), ""]
    (args.out / "diagnosis.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
