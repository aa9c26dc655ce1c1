"""A family of generators with a controlled, measured prior shift in skin tone (``shifted:FOLDER``).

Offline, once: sample the base generator from seeded standard-Gaussian latents, measure each
sample's ITA° with the ``skin-tone`` classifier at the generator's resolution, and take as the
skin-tone direction the difference of the mean latents of the light and dark terciles of the
measured samples, scaled to unit length (so ``alpha`` counts prior standard deviations along it).
Then, for each ``alpha``, write a member folder whose ``card.json`` names the base, the direction
and ``alpha``, with the skin tone of the member's own samples (fresh latents, another seed; by the
detector-based ``skin-tone`` and by the study's output instrument ``skin-tone-aligned``) — the
measured prior shift that the known-answer experiment must recover.

Written into ``--out``: ``direction.pt`` (the (N, D) unit direction), ``direction.json`` (how it was
made, with the checks below), one folder ``alpha<±a>`` per member, ``family.json`` (members, alpha,
prior ITA) and ``README.md``. Run: ``python -m audit.commands.shift_family --base SPEC --out DIR``.

Checks recorded in ``direction.json``: the cosine between this direction and the least-squares
regression direction of ITA on the latent, and the correlation between ITA and the projection of
each latent on the direction (on the same samples, so optimistic).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pulse_engine.generators import load_generator
from pulse_engine.generators.base import SearchableGenerator
from pulse_engine.generators.checkpoint import sha256_file
from pulse_engine.generators.shifted import CARD_FORMAT, ShiftedGenerator

from ..classifiers import build_classifier
from ..run.provenance import git_commit, package_versions, utc_now
from ..vision.images import to_image
from .train_cli import ALIGNED_PRIOR_FIELD, aligned_prior, sample_grid, sample_images, skin_tone_summary
from .train_sources import TERCILES


def measured_latents(generator: SearchableGenerator, count: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` latents ``randn(count, N, D)`` seeded by ``seed`` and the ITA° of their images (NaN: no face)."""
    z = torch.randn(count, *generator.latent_shape, generator=torch.Generator().manual_seed(seed))
    tone = build_classifier("skin-tone")
    ita = []
    with torch.no_grad():
        for chunk in z.split(256):
            images = generator.synthesize(chunk).clamp(0, 1)
            ita += [p.values.get("ita", np.nan) for p in tone.predict([np.asarray(to_image(x)) for x in images])]
    return z, np.array(ita, dtype=np.float64)


def skin_tone_direction(z: torch.Tensor, ita: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
    """Unit (N, D) direction from the dark to the light tercile's mean latent, and its checks."""
    ok = np.isfinite(ita)
    if ok.sum() < 30:
        raise ValueError(f"only {int(ok.sum())} samples with a measured face; the direction needs at least 30")
    flat = z.reshape(len(z), -1).double().numpy()
    low, high = np.percentile(ita[ok], TERCILES)
    light, dark = ok & (ita > high), ok & (ita < low)
    raw = flat[light].mean(axis=0) - flat[dark].mean(axis=0)
    unit = raw / np.linalg.norm(raw)
    x = np.column_stack([np.ones(ok.sum()), flat[ok]])
    beta = np.linalg.lstsq(x, ita[ok], rcond=None)[0][1:]
    checks = {
        "samples": len(ita), "measured": int(ok.sum()),
        "ita_cut_points_deg": {"lower_tercile": round(float(low), 3), "upper_tercile": round(float(high), 3)},
        "light": int(light.sum()), "dark": int(dark.sum()),
        "mean_latent_difference_norm": round(float(np.linalg.norm(raw)), 4),
        "cosine_with_regression_direction": round(float(unit @ beta / np.linalg.norm(beta)), 4),
        "correlation_ita_projection": round(float(np.corrcoef(flat[ok] @ unit, ita[ok])[0, 1]), 4),
    }
    return torch.from_numpy(unit).float().reshape(z.shape[1:]), checks


def member_name(alpha: float) -> str:
    """Folder name of a family member: ``alpha+2``, ``alpha-0.5``, ``alpha+0``."""
    return f"alpha{alpha:+g}"


def write_family(base_spec: str, out: Path, alphas: list[float], count: int = 6000, seed: int = 0,
                 evaluate: int = 500, eval_seed: int = 1, command: str = "") -> dict[str, Any]:
    """Compute the direction of ``base_spec`` and write the family into ``out``; returns ``family.json``."""
    base = load_generator(base_spec)
    z, ita = measured_latents(base, count, seed)
    direction, checks = skin_tone_direction(z, ita)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(direction.contiguous(), out / "direction.pt")
    digest = sha256_file(out / "direction.pt")
    cuts = checks["ita_cut_points_deg"]
    made = {"created": utc_now(), "git_commit": git_commit(), "packages": package_versions(), "command": command}
    (out / "direction.json").write_text(json.dumps({
        "base": base_spec, "file": "direction.pt", "sha256": digest, "shape": list(direction.shape),
        "method": f"unit vector along mean(z | ITA > upper tercile) − mean(z | ITA < lower tercile) over "
                  f"{count} latents torch.randn({count}, {', '.join(map(str, base.latent_shape))}) with "
                  f"torch.Generator().manual_seed({seed}); ITA° by the skin-tone classifier on the "
                  f"{base.resolution} px samples", **checks, **made}, indent=2, ensure_ascii=False) + "\n")
    members = []
    for alpha in alphas:
        folder = out / member_name(alpha)
        folder.mkdir(exist_ok=True)
        shifted = ShiftedGenerator(base, direction, alpha)
        samples = sample_images(shifted, max(evaluate, 64), eval_seed)
        sample_grid(samples, scale=max(1, 64 // base.resolution)).save(folder / "samples.png")
        evaluation = skin_tone_summary(samples[:evaluate], cuts) | {"latent_seed": eval_seed}
        name, sep, path = base_spec.partition(":")
        relative = f"{name}:{os.path.relpath(Path(path).resolve(), folder.resolve())}" if sep else base_spec
        card = {"format": CARD_FORMAT, "name": f"{out.name}-{member_name(alpha)}", "base": relative,
                "alpha": alpha, "direction": {"file": os.path.relpath(out / "direction.pt", folder), "sha256": digest},
                "training_data": {"summary": f"{base.card.training_data or base_spec}; latent prior shifted by "
                                             f"{alpha:+g} SD along a skin-tone direction (prior shift)",
                                  "prior_shift_sd": alpha},
                "samples_skin_tone": evaluation, ALIGNED_PRIOR_FIELD: aligned_prior(shifted, evaluate, eval_seed),
                "licence": base.card.licence,
                "notes": [f"prior shift {alpha:+g} SD along {out.name}/direction.pt; weights of {base_spec} unchanged"],
                **made}
        (folder / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        members.append({"name": member_name(alpha), "spec": f"shifted:{folder.as_posix()}", "alpha": alpha,
                        **{k: evaluation.get(k) for k in ("samples", "measured", "ita_mean_deg", "ita_ci95_deg",
                                                          "share_light", "share_dark")}})
    family = {"base": base_spec, "direction": "direction.pt", "members": members, **made}
    (out / "family.json").write_text(json.dumps(family, indent=2, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(family_markdown(family, checks, out))
    return family


def family_markdown(family: dict[str, Any], checks: dict[str, Any], out: Path) -> str:
    """README.md of a family folder: how the direction was made and the measured prior of each member."""
    cuts = checks["ita_cut_points_deg"]
    rows = [f"| `{m['name']}` | {m['alpha']:+g} | {m['ita_mean_deg']} ({m['ita_ci95_deg'][0]} to "
            f"{m['ita_ci95_deg'][1]}) | {m['share_light']:.0%} | {m['share_dark']:.0%} | {m['measured']} / "
            f"{m['samples']} |" for m in family["members"]]
    return "\n".join([
        f"# Prior-shift family of `{family['base']}`", "",
        (f"Each member is `{family['base']}` with its latent shifted by alpha · d before synthesis "
        "(`pulse_engine/generators/shifted.py`); d = `direction.pt`, the unit vector from the mean latent of the "
        f"dark tercile (ITA < {cuts['lower_tercile']}°) to that of the light tercile (ITA > {cuts['upper_tercile']}°) "
        f"of {checks['measured']} measured samples (of {checks['samples']}). Weights, noise and resolution are "
        "unchanged: members differ only in their prior. Load one with `--generator shifted:FOLDER`."), "",
        (f"Checks: cosine with the least-squares direction of ITA on z {checks['cosine_with_regression_direction']}, "
        f"correlation of ITA with the projection on d {checks['correlation_ita_projection']} (same samples); "
        f"norm of the raw mean difference {checks['mean_latent_difference_norm']} (latent SD units)."), "",
        ("Measured prior (500 samples per member, latent seed 1; mean ITA° with 95 % bootstrap interval over samples "
        "with a measured face; shares above the upper / below the lower tercile cut point):"), "",
        "| member | alpha (SD) | mean ITA° (95 % CI) | light share | dark share | measured |",
        "|---|---|---|---|---|---|",
        *rows, "", f"Rebuild: `{family['command']}`", ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a prior-shift family of a generator along its skin-tone "
                                                 "direction (see the module docstring).")
    parser.add_argument("--base", default="dcgan-digiface", help="generator spec, e.g. dcgan-file:FOLDER")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--alphas", default="-2,-1,0,1,2", help="comma-separated shifts in prior SDs")
    parser.add_argument("--count", type=int, default=6000, help="samples measured for the direction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate", type=int, default=500, help="samples measured per member")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    command = "python -m audit.commands.shift_family " + " ".join(argv if argv is not None else sys.argv[1:])
    family = write_family(args.base, args.out, [float(a) for a in args.alphas.split(",")], args.count, args.seed,
                          args.evaluate, command=command)
    for member in family["members"]:
        print(member["name"], member["ita_mean_deg"], member["ita_ci95_deg"], member["measured"])


if __name__ == "__main__":
    main()
