"""``pulse-audit`` end to end on the tiny generator, in a subprocess like a user would run it."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

FAST = ["--generator", "dcgan-tiny", "--steps", "10", "--device", "cpu"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "audit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=1200)  # a hang guard, not a speed check


def test_upsample_hr_rgba_and_grey_inputs(tmp_path, face_png):
    inputs = [face_png("rgb.png"), face_png("rgba.png", mode="RGBA"), face_png("grey.jpg", mode="L")]
    out = tmp_path / "out"
    done = cli("upsample", *inputs, *FAST, "--factor", "4", "--samples", "2", "--restarts", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 6 and {r["sample"] for r in rows} == {"0", "1"}
    for stem in ("rgb", "rgba", "grey"):
        assert Image.open(out / stem / "sample1.png").size == (32, 32)
        assert Image.open(out / stem / "lr.png").size == (8, 8)
        assert Image.open(out / stem / "truth.png").mode == "RGB"
    assert all(float(r["lr_l2"]) >= 0 and r["restarts_used"] in ("1", "2") for r in rows)


def test_upsample_lr_inputs_as_they_are(tmp_path, face_png):
    small = face_png("small.png", size=(8, 8))
    done = cli("upsample", small, *FAST, "--inputs-are-low-res", "--out", tmp_path / "o")
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "o" / "small" / "sample0.png").size == (32, 32)
    assert "deprecated" not in done.stderr


def test_upsample_names_are_unique_and_inside_out(tmp_path, face_png):
    """Same stems in two folders, a stem of dots, a stem that is the table's name, one file listed twice:
    every output folder is distinct and inside --out; the repeat is a failed row; nothing else is written."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        face_png(f"{folder}/face.png")
    for name in ("...png", "results.csv.png"):  # Pillow will not write names that hide their suffix
        face_png("plain.png").rename(tmp_path / name)
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "o"
    done = cli("upsample", "a/face.png", "b/face.png", "...png", "results.csv.png", "a/../a/face.png", *FAST,
               "--steps", "2", "--restarts", "1", "--out", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    outputs = [r["output"] for r in rows if r["output"]]
    assert len(outputs) == 4 and len({Path(o).parent for o in outputs}) == 4
    assert all((out / o).resolve().is_relative_to(out.resolve()) and (out / o).is_file() for o in outputs)
    repeat = "a/face.png: the same file as a/face.png, which is upsampled once"
    assert [r["error"] for r in rows if not r["output"]] == [repeat]
    assert sorted(p for p in tmp_path.rglob("*") if out not in p.parents and p != out) == before


@pytest.mark.parametrize("args,message", [
    (["--crop", "none"], "not square; pass --crop center"),
    (["--generator", "nosuch"], "unknown generator 'nosuch'"),
    (["--generator", "stylegan1-ffhq:/nonexistent/sg1"], "/nonexistent/sg1/synthesis.pt"),
    (["--factor", "3"], "factor 3 does not divide"),
    (["--loss", "100*L7"], "bad loss term"),
])
def test_user_errors_are_one_line(tmp_path, face_png, args, message):
    image = face_png("wide.png", size=(120, 80)) if "--crop" in args else face_png("square.png")
    done = cli("upsample", image, *FAST, *args, "--out", tmp_path / "o")
    assert done.returncode == 1  # a user error; 2 is left to usage errors (unknown option, value not a choice)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_center_crop_and_corrupt_file(tmp_path, face_png):
    wide = face_png("wide.png", size=(120, 80))
    assert cli("upsample", wide, *FAST, "--crop", "center", "--out", tmp_path / "o").returncode == 0
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    done = cli("upsample", broken, *FAST, "--out", tmp_path / "o2")
    assert done.returncode == 1 and "broken.png: not a readable image" in done.stderr


def test_generators_lists_every_entry():
    done = cli("generators")
    assert done.returncode == 0
    for name in ("dcgan-digiface", "stylegan1-ffhq", "stylegan2", "dcgan-tiny"):
        assert name in done.stdout


def test_demo_writes_grids_and_page(tmp_path):
    out = tmp_path / "demo"
    done = cli("demo", "--generator", "dcgan-tiny", "--samples", "2", "--steps", "5", "--device", "cpu",
               "--showcase-only", "--out", out)
    assert done.returncode == 0, done.stderr
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "Pete Souza" in page
    for factor in (4, 8):
        grid = Image.open(out / f"grid_x{factor}.png")
        assert grid.size[0] == 4 * 128 + 3 * 4  # LR, truth, two seeds
    assert "showcase written" in done.stderr


def test_quick_demo_audit_links_reports_cards_and_comparison(tmp_path):
    out = tmp_path / "demo"
    done = cli("demo", "--quick", "--device", "cpu", "--out", out)
    assert done.returncode == 0, done.stderr
    index = (out / "study.html").read_text()
    assert "The answer" in index and (out / "study.json").is_file()
    for target in ("compare/skewed-x4/compare.html", "runs/oracle/report/report.html",
                   "cards/light-skewed/card.html", "runs/digiface-x4/report/report.html",
                   "showcase/light-skewed/index.html"):
        assert target in index and (out / target).is_file()
    assert "audit written" in done.stderr
    # reports/examples was made by `make examples` from the committed generators: same numbers again
    from audit.commands.demo_audit import EXAMPLE_FILES, EXAMPLES_DIR, comparable

    for source, name in EXAMPLE_FILES.items():
        if name.endswith(".json"):
            fresh, committed = (json.loads(p.read_text()) for p in (out / source, EXAMPLES_DIR / name))
            assert comparable(fresh) == comparable(committed), name


def test_version_is_printed():
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip().startswith("pulse-audit ")
