"""One registry type (pulse_engine.registry) for generators, classifiers, face sets and upsamplers."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from audit.classifiers import REGISTRY as CLASSIFIERS
from audit.commands.doctor import entry_checks
from audit.facesets import FORMATS
from audit.upsamplers import UPSAMPLERS
from pulse_engine.errors import PulseAuditError
from pulse_engine.generators import REGISTRY as GENERATORS
from pulse_engine.registry import Entry, Registry

REPO = Path(__file__).resolve().parents[1]


def test_every_kind_of_piece_uses_the_one_registry_type():
    for registry, kind, some in [(GENERATORS, "generator", "dcgan-tiny"), (CLASSIFIERS, "classifier", "skin-tone"),
                                 (FORMATS, "dataset format", "folder"), (UPSAMPLERS, "upsampler", "bicubic")]:
        assert isinstance(registry, Registry) and registry.kind == kind and some in registry
        assert all(isinstance(entry, Entry) and entry.summary for entry in registry.values())


def test_specs_parse_as_name_and_argument_and_unknown_names_are_one_line():
    assert GENERATORS.parse("dcgan-file:some/folder") == (GENERATORS["dcgan-file"], "some/folder")
    assert CLASSIFIERS.parse("skin-tone") == (CLASSIFIERS["skin-tone"], "")
    with pytest.raises(PulseAuditError) as caught:
        FORMATS.parse("imagenet:/data")
    message = str(caught.value)
    assert message.startswith("unknown dataset format 'imagenet' in 'imagenet:/data'; known: fairface:PATH")
    assert message.endswith(", demo") and "\n" not in message
    with pytest.raises(PulseAuditError, match=r"unknown generator 'nosuch'; known: .*dcgan-file:FOLDER"):
        GENERATORS.parse("nosuch")


@dataclass(frozen=True)
class Needs(Entry):
    lines: tuple[str, ...] = ()

    def missing(self, arg: str = "") -> list[str]:
        if self.lines == ("boom",):
            raise RuntimeError("broken check")
        return list(self.lines)


def test_loaders_are_imported_when_used_and_missing_assets_reach_doctor():
    build = ".upsamplers:_bicubic"
    registry = Registry("widget", "audit", [Needs("ok", "fine", build),
                                            Needs("gone", "absent module", ".no_such_module:build"),
                                            Needs("weights", "needs a file", build, ("put w.pt in X",)),
                                            Needs("broken", "its check raises", build, ("boom",))])
    assert registry.function(registry["ok"]).__name__ == "_bicubic"
    with pytest.raises(PulseAuditError, match=r"^widget gone is not available in this installation \(module "
                                              r"audit.no_such_module is missing\)$"):
        registry.function(registry["gone"])
    checks = {check.name: check for check in entry_checks("widget", registry)}
    assert checks["ok"].ok and checks["ok"].detail == "ready"
    assert not checks["weights"].ok and checks["weights"].detail == "put w.pt in X"
    assert not checks["broken"].ok and "broken check" in checks["broken"].detail
    assert GENERATORS["dcgan-file"].missing("/nonexistent/g") == ["/nonexistent/g/weights.pt is missing",
                                                                  "/nonexistent/g/card.json is missing"]


def test_listing_the_registries_imports_no_loader():
    code = ("import sys, audit.classifiers as c, audit.facesets as f, pulse_engine.generators as g;"
            "[(e.name, e.summary, e.form) for r in (c.REGISTRY, f.FORMATS, g.REGISTRY) for e in r.values()];"
            "print(sorted(m for m in sys.modules if m.startswith(('audit.classifiers.', 'audit.facesets.',"
            " 'pulse_engine.generators.'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['pulse_engine.generators.base']", done.stdout  # the registry's own types only
