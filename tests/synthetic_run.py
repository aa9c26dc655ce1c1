"""A synthetic run folder in the real run-store schema, with planted biases of known size.

For report tests and the scale benchmark: rows are written through the harness's own code
(:class:`audit.run.run_store.RunStore`, :func:`audit.run.run_store.run_provenance`,
:func:`audit.run.rows.prediction_columns`, :func:`audit.run.rows.comparisons`), so the columns and ``run.json`` are
exactly those of ``pulse-audit run``; only the classifier readings are drawn at random instead of computed
from images. The face set mimics FairFace (race7 as an annotated label, group-by race), read by a
``fairface`` stand-in (race, gender), ``skin-tone`` (ITA°, bands, Monk) and ``identity``; the upsampler is a
``pulse`` stand-in over a named generator card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from audit.classifiers.skin_tone import ITA_BANDS, MONK_NAMES, ita_band
from audit.core.records import AttributeSpec, ClassifierCard, FaceItem, FaceSet, Prediction
from audit.facesets.fairface import GENDERS, RACE7
from audit.run.inputs import UCPR_PREFIX, group_key
from audit.run.provenance import run_provenance
from audit.run.rows import comparisons, prediction_columns
from audit.run.run_store import RunStore
from pulse_engine.generators.base import GeneratorCard

ITA_MEAN = {"White": 48.0, "Black": -25.0, "Latino_Hispanic": 25.0, "East Asian": 38.0, "Southeast Asian": 15.0,
            "Indian": 5.0, "Middle Eastern": 30.0}


@dataclass(frozen=True)
class Plant:
    """Planted effects: ``to_white[race]`` = P(output read White | input race), otherwise the race is kept with
    probability ``keep`` (else a uniformly drawn other race); ΔITA has mean ``ita_shift[race]`` (sd 3°)."""

    to_white: dict[str, float] = field(default_factory=lambda: {"Black": 0.41})
    keep: float = 0.95
    ita_shift: dict[str, float] = field(default_factory=lambda: {"Black": 6.0})
    input_error: float = 0.03  # the classifier misreads the original
    no_face: float = 0.02


def _classifier(name: str, attributes: dict[str, tuple[str, ...]], values: tuple[str, ...] = ()) -> Any:
    card = ClassifierCard(name, f"synthetic stand-in for {name}", "none (synthetic)", "n/a",
                          f"synthetic readings drawn by tests/synthetic_run.py, not a model ({name})")
    return SimpleNamespace(name=name, card=card, attributes=attributes, value_names=values)


CLASSIFIERS = (_classifier("fairface", {"race": RACE7, "gender": GENDERS}),
               _classifier("skin-tone", {"ita_band": ITA_BANDS, "monk": MONK_NAMES}, ("ita",)),
               _classifier("identity", {}))


def _onehot(label: str, classes: tuple[str, ...], confidence: float = 0.8) -> dict[str, float]:
    rest = (1 - confidence) / (len(classes) - 1)
    return {c: confidence if c == label else rest for c in classes}


def _monk(ita: float) -> str:
    return MONK_NAMES[int(np.clip((60 - ita) / 11, 0, 9))]


def _predictions(rng: np.random.Generator, race: str, gender: str, ita: float, embedding: np.ndarray,
                 face: bool = True) -> list[Prediction]:
    if not face:
        return [Prediction(False) for _ in CLASSIFIERS]
    return [Prediction(True, {"race": _onehot(race, RACE7), "gender": _onehot(gender, GENDERS)}),
            Prediction(True, {"ita_band": _onehot(ita_band(ita), ITA_BANDS, 1.0), "monk": _onehot(_monk(ita),
                                                                                                  MONK_NAMES, 1.0)},
                       {"ita": ita}),
            Prediction(True, embedding=embedding)]


def _other(rng: np.random.Generator, race: str) -> str:
    return str(rng.choice([r for r in RACE7 if r != race]))


def _output_race(rng: np.random.Generator, race: str, plant: Plant) -> str:
    u = rng.random()
    white = plant.to_white.get(race, 0.0)
    if u < white:
        return "White"
    return race if rng.random() < plant.keep else _other(rng, race)


def _faceset(root: Path, items: list[FaceItem], races: tuple[str, ...]) -> FaceSet:
    attributes = {"race": AttributeSpec("race", races, "annotated", "", "synthetic labels"),
                  "gender": AttributeSpec("gender", GENDERS, "annotated", "", "synthetic labels")}
    return FaceSet("synthetic-fairface", root, attributes, items, None, "synthetic (tests/synthetic_run.py)", "")


def synthetic_run(root: Path, inputs: int = 140, samples: int = 1, seed: int = 0, plant: Plant = Plant(),
                  ucpr: int = 0, image_side: int = 16, group_by: tuple[str, ...] = ("race",),
                  race_names: Mapping[str, str] | None = None,
                  training_data: str = "synthetic training data (none)") -> Path:
    """Write a run folder with ``inputs`` faces (races in turn, genders alternating every 7) × ``samples`` rows,
    plus ``ucpr`` rows per race of uninformative inputs, sampled by ``group_by`` (``("race", "gender")`` for
    intersections); every row gets its LR, truth and output PNGs (``image_side`` px). ``race_names`` renames
    races in the face set's labels and groups (e.g. to hostile text; the classifiers keep FairFace's names);
    ``training_data`` is the generator card's. Returns ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    names = dict(race_names or {})
    items = [FaceItem(f"img/{i:06d}.png", root / f"{i:06d}.png",
                      {"race": RACE7[i % 7], "gender": GENDERS[(i // 7) % 2]}) for i in range(inputs)]
    faceset = _faceset(root, items, tuple(names.get(r, r) for r in RACE7))
    generator = SimpleNamespace(card=GeneratorCard("synthetic-gan", "StyleGAN", training_data, "n/a (synthetic)"))
    upsampler = SimpleNamespace(name="pulse", resolution=image_side * 4, generator=generator)
    sampling = {"by": list(group_by), "items": inputs,
                "summary": [f"{inputs} items, races in turn (synthetic, seed {seed})"]}
    config = {"dataset": "synthetic", "upsampler": "pulse", "generator": "synthetic-gan", "group_by": list(group_by),
              "classifiers": [c.name for c in CLASSIFIERS], "samples": samples, "factor": 4, "seed": seed,
              "ucpr": ucpr}
    provenance = lambda: run_provenance(faceset, upsampler, CLASSIFIERS, sampling, seed)  # noqa: E731
    with RunStore.open(root, config, provenance) as store:
        rows = [row for item in items
                for row in _face_rows(store, rng, item, samples, plant, image_side, group_by, names)]
        for race in RACE7[:7 if ucpr else 0]:
            rows += _ucpr_rows(store, rng, race, ucpr, image_side, group_by, names)
        store.append(rows)
    return root


def _save(store: RunStore, rng: np.random.Generator, item_id: str, name: str, side: int) -> str:
    """A flat-colour PNG at the path the store gives ``name`` (written directly: no fsync, it is synthetic)."""
    relative = store.image_path(item_id, name)
    path = store.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(0, 256, 3))).save(path)
    return relative


def _images(store: RunStore, rng: np.random.Generator, item_id: str, sample: int, side: int,
            truth: bool = True) -> dict[str, str]:
    first = sample == 0
    paths = {"path_lr": _save(store, rng, item_id, "lr", side // 4) if first else store.image_path(item_id, "lr"),
             "path_out": _save(store, rng, item_id, f"out_{sample}", side)}
    paths["path_truth"] = ("" if not truth else _save(store, rng, item_id, "truth", side) if first
                           else store.image_path(item_id, "truth"))
    return paths


def _base(item_id: str, sample: int, kind: str, labels: dict[str, str], group_by: tuple[str, ...],
          names: Mapping[str, str]) -> dict[str, Any]:
    labels = labels | {"race": names.get(labels["race"], labels["race"])}
    row = {"item_id": item_id, "sample": sample, "input_kind": kind, "group": group_key(labels, group_by),
           "path_source": "", "error": "", "ups_success": True, "ups_lr_l2": 0.0, "t_upsample_s": 0.0,
           "t_classify_s": 0.0}
    for name in ("race", "gender"):
        row[f"label_{name}"], row[f"label_source_{name}"] = labels.get(name, ""), "annotated"
    return row


def _face_rows(store: RunStore, rng: np.random.Generator, item: FaceItem, samples: int, plant: Plant,
               side: int, group_by: tuple[str, ...], names: Mapping[str, str]) -> list[dict[str, Any]]:
    race, gender = item.labels["race"], item.labels["gender"]
    seen = race if rng.random() >= plant.input_error else _other(rng, race)
    ita = ITA_MEAN[race] + rng.normal(0, 6)
    embedding = rng.normal(0, 1, 8)
    truth = _predictions(rng, seen, gender, ita, embedding)
    rows = []
    for k in range(samples):
        found = rng.random() >= plant.no_face
        out_ita = ita + plant.ita_shift.get(race, 0.0) + rng.normal(0, 3)
        out = _predictions(rng, _output_race(rng, race, plant), gender, out_ita,
                           embedding + rng.normal(0, 0.16, 8), found)
        row = _base(item.item_id, k, "face", item.labels, group_by, names) | _images(store, rng, item.item_id, k, side)
        row["ups_lr_l2"] = float(rng.gamma(2.0, 5e-4))
        row["ups_success"] = bool(row["ups_lr_l2"] < 2e-3)
        for side_name, preds in (("out", out), ("in", truth)):
            for classifier, prediction in zip(CLASSIFIERS, preds):
                row |= prediction_columns(side_name, classifier, prediction)
        rows.append(row | comparisons(CLASSIFIERS, truth, out))
    return rows


def _ucpr_rows(store: RunStore, rng: np.random.Generator, race: str, count: int, side: int,
               group_by: tuple[str, ...], names: Mapping[str, str]) -> list[dict[str, Any]]:
    labels = {"race": race, "gender": "Male"}
    item_id = UCPR_PREFIX + group_key(labels, group_by)
    rows = []
    for k in range(count):
        out = _predictions(rng, _output_race(rng, race, Plant(keep=1 / 7)), "Male", 30.0, rng.normal(0, 1, 8))
        row = _base(item_id, k, "ucpr", labels, group_by, names) | _images(store, rng, item_id, k, side, truth=False)
        for classifier, prediction in zip(CLASSIFIERS, out):
            row |= prediction_columns("out", classifier, prediction)
        rows.append(row)
    return rows
