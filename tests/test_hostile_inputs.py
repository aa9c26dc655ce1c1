"""Hostile and odd inputs, built here at test time: every one is read right, or ends in a one-line error
or a recorded failed row; the run completes with every other item and writes nothing outside its folder.

Images: decompression bombs (small files declaring huge images, PNG and JPEG), images over the pixel
budget, 16-bit greyscale, EXIF-rotated, CMYK, palette with transparency, animated, 1-bit, truncated,
random bytes, unsupported modes, FIFO, device, folder, an over-size file. Manifests: ``../`` spellings,
duplicates through a symbolic link, ids too long for a file name. Cards: wrong types, deep nesting,
anchors and tags, a 48 MB file, NUL bytes; user HTML and Markdown in every field that reaches a document.
The readers run under a memory and CPU limit in a subprocess (``resource.setrlimit``).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic_run import synthetic_run

from audit.facesets import load_faceset
from audit.facesets.folder import MAX_SIDECAR_BYTES
from audit.run.harness import AuditConfig, run_audit
from audit.vision.images import MAX_PIXELS, read_rgb
from pulse_engine.errors import InputImageError, PulseAuditError
from reports.analysis import Settings
from reports.card import write_card
from reports.card_info import MAX_DEPTH, ensure_info
from reports.markdown_text import md, md_code
from reports.report import write_report

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 1536 * 2**20  # bytes of address space for the reading subprocess (imports take ~650 MB)
HANG_SECONDS = 600  # wall-time guard of the reading subprocess; its CPU time is limited to 60 s (RLIMIT_CPU),
# which does not depend on the machine's load as wall time does


# ---- image builders -----------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(path: Path, width: int, height: int, bit_depth: int = 8, colour: int = 2) -> Path:
    """A valid-looking PNG that declares ``width``×``height`` but holds a few bytes of pixel data (a bomb
    for a reader that allocates from the header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _chunk(b"IEND", b""))
    return path


def jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A small JPEG whose frame header (SOF0) is patched to declare ``width``×``height``."""
    Image.new("RGB", (16, 16), (200, 120, 90)).save(path, quality=90)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def random_rgb(path: Path, side: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def hostile_images(folder: Path) -> dict[str, Path]:
    """Name → file of every image that must be refused with a one-line reason."""
    folder.mkdir(parents=True, exist_ok=True)
    good = random_rgb(folder / "good.png", 64).read_bytes()
    jpeg = folder / "good.jpg"
    Image.open(folder / "good.png").save(jpeg, quality=90)
    cases = {
        "bomb_20000": png_header_only(folder / "bomb_20000.png", 20000, 20000),
        "bomb_13000": png_header_only(folder / "bomb_13000.png", 13000, 13000),
        "over_budget": png_header_only(folder / "over_budget.png", 7000, 7000),
        "bomb_jpeg": jpeg_declaring(folder / "bomb.jpg", 65000, 65000),
        "zero_width": png_header_only(folder / "zero.png", 0, 16),
        "truncated_png": folder / "truncated.png",
        "truncated_jpeg": folder / "truncated.jpg",
        "random_bytes": folder / "random.png",
        "empty": folder / "empty.png",
        "fifo": folder / "fifo.png",
        "device": folder / "zero_device.png",
        "folder": folder / "a_folder.png",
        "oversize_file": folder / "huge.png",
        "float_mode": folder / "float.tif",
        "lab_mode": folder / "lab.tif",
        "int32_beyond_16_bits": folder / "int32.tif",
        "missing": folder / "missing.png",
    }
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "truncated.jpg").write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    (folder / "random.png").write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (folder / "empty.png").write_bytes(b"")
    os.mkfifo(folder / "fifo.png")
    os.symlink("/dev/zero", folder / "zero_device.png")
    (folder / "a_folder.png").mkdir()
    with open(folder / "huge.png", "wb") as handle:  # sparse: no disk used
        handle.truncate(300 * 2**20)
    Image.fromarray(np.ones((8, 8), np.float32)).save(folder / "float.tif")
    Image.new("LAB", (8, 8)).save(folder / "lab.tif")
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(folder / "int32.tif")
    return cases


READER = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
from audit.vision.images import read_rgb
from pulse_engine.errors import InputImageError
out = {{}}
for name, path in json.loads(sys.argv[1]).items():
    try:
        out[name] = "read " + "x".join(map(str, read_rgb(path, "center").size))
    except InputImageError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_hostile_images_are_refused_in_one_line_under_a_memory_limit(tmp_path):
    cases = hostile_images(tmp_path / "img")
    done = subprocess.run([sys.executable, "-c", READER.format(limit=MEMORY_LIMIT),
                           json.dumps({k: str(v) for k, v in cases.items()})], check=False,
                          capture_output=True, text=True, timeout=HANG_SECONDS, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    messages = json.loads(done.stdout)
    expected = {
        "bomb_20000": "pixel budget", "bomb_13000": "pixel budget", "over_budget": "7000×7000 px is over the",
        "bomb_jpeg": "pixel budget", "zero_width": "not a readable image",
        "truncated_png": "not a readable image", "truncated_jpeg": "not a readable image",
        "random_bytes": "not a readable image", "empty": "not a readable image",
        "fifo": "is a FIFO (named pipe), not an image file", "device": "is a character device, not an image file",
        "folder": "is a folder, not an image file", "oversize_file": "over the 268435456 byte budget",
        "float_mode": "unsupported image mode F", "lab_mode": "unsupported image mode LAB",
        "int32_beyond_16_bits": "outside 0..65535", "missing": "no such file",
    }
    for name, fragment in expected.items():
        message = messages[name]
        assert fragment in message and message.startswith(str(cases[name])), (name, message)
        assert "\n" not in message and len(message) < len(str(cases[name])) + 300, (name, message)
    assert MAX_PIXELS < 7000 * 7000


def test_odd_images_are_read_right(tmp_path):
    deep = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    Image.fromarray(deep).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    grey = np.asarray(read_rgb(tmp_path / "grey16.png"))
    assert np.array_equal(grey[..., 0], np.rint(deep / 257.0)) and np.array_equal(grey[..., 0], grey[..., 2])

    stored = np.zeros((32, 32, 3), np.uint8)
    stored[:8, :16] = (255, 0, 0)  # a red bar along the top left: asymmetric under every rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "rotated.png")), np.rot90(stored, k=-1))

    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "palette.png", transparency=0)
    array = np.asarray(read_rgb(tmp_path / "palette.png"))
    assert tuple(array[0, 0]) == (255, 255, 255) and tuple(array[5, 5]) == (10, 200, 30)

    frames = [Image.new("RGB", (16, 16), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    for suffix in (".gif", ".png"):
        frames[0].save(tmp_path / f"animated{suffix}", save_all=True, append_images=frames[1:], duration=100)
        assert np.abs(np.asarray(read_rgb(tmp_path / f"animated{suffix}")).astype(int) - (250, 0, 0)).max() <= 4

    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    assert np.asarray(read_rgb(tmp_path / "cmyk.jpg")).min() >= 250  # no ink: white
    Image.new("1", (16, 16), 1).save(tmp_path / "bilevel.png")
    assert np.asarray(read_rgb(tmp_path / "bilevel.png")).min() == 255
    Image.new("RGB", (40, 20)).save(tmp_path / "wide.png")
    with pytest.raises(InputImageError, match="40×20, not square; pass --crop center"):
        read_rgb(tmp_path / "wide.png")
    assert read_rgb(tmp_path / "wide.png", "center").size == (20, 20)


def test_manifest_paths_are_normalised_and_duplicates_refused(tmp_path):
    random_rgb(tmp_path / "img" / "a.png")
    random_rgb(tmp_path / "img" / "b.png", seed=1)
    (tmp_path / "manifest.csv").write_text("path,race\n./img/a.png,A\nimg/x/../b.png,B\n")
    faceset = load_faceset(f"folder:{tmp_path}")
    assert [item.item_id for item in faceset.items] == ["img/a.png", "img/b.png"]
    for duplicate in ("img/../img/a.png", "img//a.png", "link/a.png"):
        (tmp_path / "link").mkdir(exist_ok=True)
        if not (tmp_path / "link" / "a.png").exists():
            os.symlink(tmp_path / "img" / "a.png", tmp_path / "link" / "a.png")
        (tmp_path / "manifest.csv").write_text(f"path,race\nimg/a.png,A\n{duplicate},A\n")
        with pytest.raises(PulseAuditError, match="line 3: .* is already listed on line 2 \\(same file\\)"):
            load_faceset(f"folder:{tmp_path}")


def _files_outside(root: Path, inside: Path) -> dict[str, float]:
    return {str(p): p.lstat().st_mtime for p in root.rglob("*") if inside not in p.parents and p != inside}


def test_a_run_over_hostile_files_records_each_and_completes(tmp_path):
    """The issue's cases in one run: bombs, FIFO, folder, truncated and a 313-character id are failed rows
    with their reason; the good faces, the 16-bit one and the long id are audited; resuming adds nothing."""
    data = tmp_path / "set"
    cases = hostile_images(data / "bad")
    long_id = "/".join(["img", "x" * 101, "y" * 101, "z" * 101]) + ".png"
    random_rgb(data / long_id, seed=3)
    random_rgb(data / "img" / "a.png", seed=4)
    Image.fromarray(np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)).save(data / "img" / "g16.png")
    bad = ["bomb_20000", "bomb_13000", "over_budget", "fifo", "device", "folder", "truncated_png", "missing"]
    rows = [f"{cases[name].relative_to(data).as_posix()},B" for name in bad]
    (data / "manifest.csv").write_text("\n".join(["path,race", "img/a.png,A", "img/g16.png,A", f"{long_id},A",
                                                  *rows]) + "\n")
    assert len(long_id) == 313
    before = _files_outside(tmp_path, tmp_path / "run")
    config = AuditConfig(dataset=f"folder:{data}", upsampler="bicubic", classifiers=(), per_group=0,
                         factor=4, resolution=32, out=str(tmp_path / "run"))
    run_audit(config)
    table = pd.read_parquet(tmp_path / "run" / "results.parquet").set_index("item_id")
    assert len(table) == 3 + len(bad)
    assert (table.loc[["img/a.png", "img/g16.png", long_id], "error"] == "").all()
    for name in bad:
        error = table.loc[cases[name].relative_to(data).as_posix(), "error"]
        assert error and "\n" not in error, (name, error)
    assert all(len(part) < 256 for p in (tmp_path / "run").rglob("*") for part in p.relative_to(tmp_path).parts)
    grey = np.asarray(Image.open(tmp_path / "run" / table.loc["img/g16.png", "path_truth"]))
    assert 0 < grey.mean() < 250  # scaled, not clipped to white
    run_audit(config)  # resume: nothing left to do, no error
    assert len(pd.read_parquet(tmp_path / "run" / "results.parquet")) == len(table)
    assert _files_outside(tmp_path, tmp_path / "run") == before


# ---- cards ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ('model: "text"\n', "model: expected a mapping of name, version"),
    ("model:\n- a\n- b\n", "model: expected a mapping"),
    ("ethical_considerations: hello\n", "ethical_considerations: expected a list of risks"),
    ("caveats: one caveat\n", "caveats: expected a list"),
    ("model:\n  name: [a, b]\n", "model.name: expected text, got a list"),
    ("model:\n  references: {a: b}\n", "model.references: expected a list"),
    ("ethical_considerations:\n- name: {x: y}\n", "ethical_considerations item 1: name: expected text"),
    ("- a\n- b\n", "expected the template's keys at the top level"),
    ("caveats: " + "[" * 5000 + "]" * 5000 + "\n", f"nested more than {MAX_DEPTH} levels deep"),
    ("".join(" " * i + "a:\n" for i in range(200)), f"nested more than {MAX_DEPTH} levels deep"),
    ("a: &x [1, 2]\nb: [*x, *x, *x]\n", "an anchor is not allowed"),
    ("model: !!python/object:os.system ls\n", "a tag is not allowed"),
    ("model:\n  name: a\0b\n", "not valid YAML"),
    ("model: [unclosed\n", "line 2: not valid YAML"),
    ("modle:\n  name: x\n", "unknown key 'modle'"),
])
def test_hostile_cards_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "card.yaml"
    path.write_text(text)
    with pytest.raises(PulseAuditError) as caught:
        ensure_info(path)
    assert message in str(caught.value) and "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_large_and_binary_cards_are_refused_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:
        handle.write(b"caveats:\n")
        handle.truncate(48 * 2**20)
    with pytest.raises(PulseAuditError, match="larger than 256 KiB"):
        ensure_info(big)
    (tmp_path / "latin.yaml").write_bytes("model:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PulseAuditError, match="latin.yaml: not UTF-8 text"):
        ensure_info(tmp_path / "latin.yaml")


def test_cards_read_valid_yaml_as_strings(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text('model:\n  version: 1.10\n  date: 2024-01-02\n  description: >\n    two\n    lines\n'
                    'caveats: ["a, b", c, yes]\nethical_considerations:\n- plain risk\n- name: n\n  mitigation: m\n')
    info, created = ensure_info(path)
    assert not created and info["model"]["version"] == "1.10" and info["model"]["date"] == "2024-01-02"
    assert info["model"]["description"] == "two lines" and info["caveats"] == ["a, b", "c", "yes"]
    assert info["ethical_considerations"] == [{"name": "plain risk", "mitigation": ""},
                                              {"name": "n", "mitigation": "m"}]


HOSTILE = "<script>alert(1)</script> ![x](http://tracker.example/p.png) [a](javascript:x) **b** | c"


def _inert(text: str) -> None:
    """No user HTML, remote image, link, control character or NUL survives in a Markdown document."""
    assert "<script" not in text and "![x]" not in text and "[a](" not in text and "\x00" not in text
    assert not re.search("[\x01-\x08\x0b-\x1f\x7f]", text)


def test_markdown_escaping_is_inert_and_reads_back():
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(md(HOSTILE + "\x00\x07\u202e\n# h"))
    assert "<script" not in rendered and "<img" not in rendered and "<a " not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered and "<strong>" not in rendered
    assert md("- item").startswith("\\-") and md("3. x").startswith("3\\.") and md("-3.2") == "-3.2"
    assert md_code("a``b") == "```a``b```"


def test_card_and_report_escape_user_fields(tmp_path):
    root = synthetic_run(tmp_path / "run", inputs=28)
    info = tmp_path / "card.yaml"
    info.write_text(f'model:\n  name: "{HOSTILE}\\0\\a\\x1b"\n  description: "line\\nbreak {HOSTILE}"\n'
                    f'caveats:\n- "{HOSTILE}"\nethical_considerations:\n- name: "{HOSTILE}"\n')
    paths, _ = write_card([root], tmp_path / "card", info)
    readme = paths["md"].read_text()
    _inert(readme.split("---\n", 2)[2])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in readme
    assert "<script" not in paths["html"].read_text()


def test_hostile_labels_and_names_do_not_reach_report_md_raw(tmp_path):
    data = tmp_path / "set"
    for i in range(4):
        random_rgb(data / f"{i}.png", seed=i)
    label = "<b>x</b>|![y](http://e/z.png)"
    (data / "manifest.csv").write_text("path,race\n" + "".join(f"{i}.png,{label if i % 2 else 'A'}\n"
                                                               for i in range(4)))
    (data / "labels.json").write_text(json.dumps({"name": "evil<script>\u0000", "licence": HOSTILE,
                                                  "attributes": {"race": {"notes": HOSTILE}}}))
    config = AuditConfig(dataset=f"folder:{data}", upsampler="bicubic", classifiers=(), per_group=0,
                         factor=4, resolution=32, out=str(tmp_path / "run"))
    report = write_report(run_audit(config))["md"].read_text()
    _inert(report)
    assert "<b>" not in report and "&lt;b&gt;x&lt;/b&gt;\\|" in report


LABEL = "<script>x</script>![y](http://e/x.png)"


def test_hostile_group_labels_are_escaped_in_every_table_of_report_and_card(tmp_path):
    """With classifiers, so that the headline, missing-face, transition, preservation and shift tables render:
    the label reaches report.md and the card's README.md only escaped, and still readable."""
    root = synthetic_run(tmp_path / "run", inputs=28, race_names={"Black": LABEL}, training_data=HOSTILE)
    settings = Settings(n_boot=50)
    report = write_report(root, settings=settings)["md"].read_text()
    readme = write_card([root], tmp_path / "card", None, settings)[0]["md"].read_text().split("---\n", 2)[2]
    escaped = "&lt;script&gt;x&lt;/script&gt;!\\[y\\](http://e/x.png)"
    for text in (report, readme):
        _inert(text)
        assert "<script" not in text and "![" not in text and "<b>" not in text
        assert escaped in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # label; training data
    headline = report.split("## Headline by group", 1)[1].split("\n## ", 1)[0]
    assert f"| {escaped} |" in headline  # the group table that escaped only pipes before


def _folder_with_sidecar(tmp_path: Path, sidecar: bytes) -> Path:
    data = tmp_path / "set"
    random_rgb(data / "0.png")
    (data / "manifest.csv").write_text("path,race\n0.png,A\n")
    (data / "labels.json").write_bytes(sidecar)
    return data


@pytest.mark.parametrize("sidecar, message", [
    (b'{"name": "' + b"x" * (MAX_SIDECAR_BYTES + 1) + b'"}', "larger than the 1,048,576 bytes"),
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    (b'{"name": "caf\xe9"}', "not UTF-8 text"),
    (b'{"name": ["' + b"y" * 5000 + b'"]}', "'name' must be a string, not list"),
    (b'{"attributes": {"' + b"z" * 5000 + b'": {"values": 3}}}', "must be a list of non-empty strings"),
], ids=["oversized", "deeply-nested", "not-utf8", "name-not-text", "long-key"])
def test_hostile_labels_json_is_a_one_line_error(tmp_path, sidecar, message):
    data = _folder_with_sidecar(tmp_path, sidecar)
    with pytest.raises(PulseAuditError) as info:
        load_faceset(f"folder:{data}")
    text = str(info.value)
    assert message in text and "\n" not in text and len(text) < 400, text


def test_a_long_label_outside_the_declared_vocabulary_is_a_short_error(tmp_path):
    data = _folder_with_sidecar(tmp_path, json.dumps({"attributes": {"race": {"values": [
        f"v{i}" * 50 for i in range(1000)]}}}).encode())
    (data / "manifest.csv").write_text("path,race\n0.png," + "q" * 100_000 + "\n")
    with pytest.raises(PulseAuditError, match="unknown race value 'qqq.*and 988 more") as info:
        load_faceset(f"folder:{data}")
    assert len(str(info.value)) < 1200


def test_labels_are_never_read_as_mathtext_in_figures():
    from reports import plots

    label = "$\\nosuch{$ <b>"
    rows = [{"group": label, "value": 0.5, "ci_low": 0.4, "ci_high": 0.6}]
    assert plots.group_rates({"preservation": rows}, label, label).size[0] > 0
    assert plots.transition_heatmap([label, "b"], [[1, 2], [3, 4]], label).size[0] > 0
