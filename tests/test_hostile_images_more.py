"""More hostile and odd inputs (found by review of issue 12), built here at test time: every decoder exception a
malformed file can raise is a failed row (a DDS pixel format Pillow does not know, a seeded mutation fuzz over
several formats, an image too large for the memory left); 16-bit greyscale is converted with bounded memory and
the same values as before; manifest error lines are bounded; failed-row reasons are one line with control
characters escaped; one file under two names (hard link) is one item.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_hostile_inputs import HANG_SECONDS, MEMORY_LIMIT, ROOT, random_rgb

from audit.commands.upsampling import prepare_inputs
from audit.facesets import SkippedFile, load_faceset
from audit.run.harness import AuditConfig, run_audit
from audit.vision import images
from audit.vision.images import MAX_PIXELS, read_rgb
from pulse_engine.errors import MAX_MESSAGE_CHARS, InputImageError, PulseAuditError, one_line

DDS_PIXEL_FLAGS_AT = 80  # "DDS " + header size + 6 fields + 11 reserved words + pixel format size: 4·20 bytes


def dds_unknown_pixel_format(path: Path) -> Path:
    """A 24×24 DDS written by Pillow whose pixel-format flags (26) name no format Pillow knows: opening it raises
    NotImplementedError, not an OSError."""
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 120, 90)).save(buffer, "DDS")
    data = bytearray(buffer.getvalue())
    data[DDS_PIXEL_FLAGS_AT:DDS_PIXEL_FLAGS_AT + 4] = struct.pack("<I", 26)
    path.write_bytes(bytes(data))
    return path


SPIDER_IMAGE_NUMBER_AT = 104  # the 27th float of a SPIDER header: the image's number within a stack


def spider_in_a_stack(path: Path) -> Path:
    """An 8×8 SPIDER file (as Pillow writes it, little-endian floats) whose header says it is image 1 of a stack:
    Pillow's plugin then reads an attribute it never set (AttributeError inside Pillow, not an error of ours)."""
    buffer = io.BytesIO()
    Image.new("F", (8, 8), 0.5).save(buffer, "SPIDER")
    data = bytearray(buffer.getvalue())
    data[SPIDER_IMAGE_NUMBER_AT:SPIDER_IMAGE_NUMBER_AT + 4] = struct.pack("<f", 1.0)
    path.write_bytes(bytes(data))
    return path


def _run_in_child(script: str, *args: str) -> dict:
    """Run ``script`` (which prints one JSON object) in a child process with this worktree's code; its result."""
    done = subprocess.run([sys.executable, "-c", script, *args], check=False, capture_output=True, text=True,
                          timeout=HANG_SECONDS, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


# ---- decoder exceptions -------------------------------------------------------------------------

def test_a_dds_file_named_png_is_a_failed_row_and_the_run_completes_twice(tmp_path):
    """Pillow picks the decoder by content, so a DDS named face.png reaches the DDS plugin, whose unknown pixel
    format is a NotImplementedError; a manifest path holding a line break and ESC names no file. Both are failed
    rows with one-line reasons (the ESC escaped), the good face is audited, and a second session completes."""
    data = tmp_path / "set"
    random_rgb(data / "a.png")
    dds_unknown_pixel_format(data / "face.png")
    hostile = "b.png\nInjected line: all faces passed\x1b[2J"
    (data / "manifest.csv").write_text(f'path,race\na.png,A\nface.png,B\n"{hostile}",B\n')
    config = AuditConfig(dataset=f"folder:{data}", upsampler="bicubic", classifiers=(), per_group=0, factor=4,
                         resolution=32, out=str(tmp_path / "run"))
    run_audit(config)
    table = pd.read_parquet(tmp_path / "run" / "results.parquet").set_index("item_id")
    assert sorted(table.index) == sorted(["a.png", "face.png", hostile])
    assert table.loc["a.png", "error"] == ""
    dds = table.loc["face.png", "error"]
    assert dds == f"{data / 'face.png'}: not a readable image (NotImplementedError: Unknown pixel format flags 26)"
    reason = table.loc[hostile, "error"]
    assert reason == f"{data}/b.png\\nInjected line: all faces passed\\x1b[2J: no such file", reason
    assert reason.isprintable()
    run_audit(config)  # the next session meets the same files: nothing to do, no traceback
    assert len(pd.read_parquet(tmp_path / "run" / "results.parquet")) == 3


FUZZ = """
import io, json, resource, sys, warnings
warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and truncated TIFF tags; the outcome is what counts
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
import numpy as np
from PIL import Image
from audit.vision.images import read_rgb
from pulse_engine.errors import InputImageError
folder, per_format = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(12)
base = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
outcomes, uncaught = {{"read": 0, "failed row": 0}}, []
for name in ("PNG", "JPEG", "GIF", "TIFF", "BMP", "ICO", "TGA", "PCX", "PPM", "SGI", "DDS", "BLP", "WEBP", "QOI"):
    buffer = io.BytesIO()
    (base.convert("P") if name == "BLP" else base).save(buffer, name)
    good = buffer.getvalue()
    for case in range(per_format):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 5))):  # half the edits in the first 128 bytes: headers
            at = int(rng.integers(0, min(128, len(data)) if rng.random() < 0.5 else len(data)))
            data[at] = int(rng.integers(0, 256))
        path = f"{{folder}}/mutant.png"
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            read_rgb(path, "center")
            outcomes["read"] += 1
        except InputImageError as exc:
            outcomes["failed row"] += 1
            if not str(exc).isprintable() or len(str(exc)) > 600:
                uncaught.append([name, case, "message", str(exc)[:200]])
        except Exception as exc:
            uncaught.append([name, case, type(exc).__name__, str(exc)[:200]])
print(json.dumps({{"outcomes": outcomes, "uncaught": uncaught}}))
"""


def test_mutated_images_of_many_formats_are_read_or_failed_rows(tmp_path):
    """A seeded mutation fuzz (14 formats × 40 mutants, 1-4 byte edits, half of them in the header) under a memory
    and CPU limit: every mutant is read or a one-line failed row; any other exception is a crash of the run (the old
    reader let the BLP plugin's NotImplementedError through: 4 of these mutants)."""
    result = _run_in_child(FUZZ.format(limit=MEMORY_LIMIT), str(tmp_path), "40")
    assert result["uncaught"] == [], result["uncaught"]
    assert sum(result["outcomes"].values()) == 14 * 40
    assert min(result["outcomes"].values()) > 50, result  # both outcomes met often: the mutants are not all trivial


def test_decoder_errors_are_failed_rows_but_our_own_bugs_and_interrupts_are_not(tmp_path, monkeypatch):
    with pytest.raises(InputImageError, match="not a readable image \\(AttributeError: 'SpiderImageFile' object"):
        read_rgb(spider_in_a_stack(tmp_path / "spider.png"))
    with pytest.raises(InputImageError, match="Unknown pixel format flags 26"):
        read_rgb(dds_unknown_pixel_format(tmp_path / "dds.png"))
    path = random_rgb(tmp_path / "a.png")
    for raised in (NotImplementedError("x"), OverflowError("x"), ZeroDivisionError("x"), RecursionError("x"),
                   MemoryError("x"), SyntaxError("x"), EOFError("x")):
        def decoder(handle, where, raised=raised):
            raise raised
        monkeypatch.setattr(images, "_decode", decoder)
        with pytest.raises(InputImageError, match=f"a.png: .*{type(raised).__name__}: x"):
            read_rgb(path)
    for raised in (KeyboardInterrupt(), SystemExit(1), NameError("x"), AttributeError("x"), AssertionError("x")):
        def decoder(handle, where, raised=raised):
            raise raised
        monkeypatch.setattr(images, "_decode", decoder)
        with pytest.raises(type(raised)):
            read_rgb(path)


# ---- 16-bit greyscale --------------------------------------------------------------------------

def test_grey16_conversion_keeps_its_values_across_strips(tmp_path, monkeypatch):
    """Every 16-bit value 0..65535 maps to round(v / 257), as the float conversion did, for each way Pillow holds
    16-bit greyscale (I;16 from PNG, I;16B from a big-endian TIFF, I from 32-bit TIFF) and when the strips do not
    divide the image (7 rows per strip of a 256-row image)."""
    values = np.arange(65536, dtype=np.uint32).reshape(256, 256)
    expected = np.rint(values / 257.0).astype(np.uint8)
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "grey32.tif")
    Image.frombytes("I;16B", (256, 256), values.astype(">u2").tobytes()).save(tmp_path / "grey16b.tif")
    monkeypatch.setattr(images, "STRIP_PIXELS", 7 * 256)
    for name, mode in (("grey16.png", "I;16"), ("grey32.tif", "I"), ("grey16b.tif", "I;16B")):
        assert Image.open(tmp_path / name).mode == mode
        rgb = np.asarray(read_rgb(tmp_path / name))
        assert rgb.shape == (256, 256, 3) and all(np.array_equal(rgb[..., c], expected) for c in range(3)), name


MEMORY = """
import json, resource, sys
from benchmarks.instruments import peak_rss_gb, start_peak_window
from audit.vision.images import read_rgb
from pulse_engine.errors import InputImageError
*large, small = sys.argv[1:]
grown = []
for path in large:
    start = start_peak_window()
    image = read_rgb(path)
    grown.append((peak_rss_gb() - start) * 1e9)
    del image
with open("/proc/self/statm") as handle:  # address space now, in pages: leave ~100 MiB more than that
    mapped = int(handle.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + 100 * 2**20, mapped + 100 * 2**20))
try:
    read_rgb(large[0])
    tight = "read"
except InputImageError as exc:
    tight = str(exc)
print(json.dumps({"grown": grown, "tight": tight, "after": read_rgb(small).size}))
"""


def test_large_images_within_the_pixel_budget_read_in_bounded_memory_and_a_memory_error_is_a_failed_row(tmp_path):
    """A 6320² 16-bit PNG (40 Mpx, inside the budget; a ~90 KiB file) grew the reader's peak memory by 28 bytes a
    pixel (1067 MiB) through int64 and float64 copies, and an RGBA one by 16 (whole-image copies for the EXIF step
    and the compositing); now the decoded image (2 or 4 bytes) and the RGB result (4) are all they need, plus strips
    of 1 Mpx: at most 7 and 9 bytes a pixel. With only 100 MiB of address space left the same read is a failed row
    naming the memory (it was an uncaught MemoryError), and the reader still works afterwards."""
    side = 6320
    assert side * side <= MAX_PIXELS
    grey16, rgba = tmp_path / "grey16.png", tmp_path / "rgba.png"
    Image.fromarray(np.full((side, side), 40000, np.uint16)).save(grey16, compress_level=1)
    Image.new("RGBA", (side, side), (10, 20, 30, 128)).save(rgba, compress_level=1)
    small = random_rgb(tmp_path / "small.png")
    result = _run_in_child(MEMORY, str(grey16), str(rgba), str(small))
    grey16_bytes, rgba_bytes = (grown / (side * side) for grown in result["grown"])
    assert grey16_bytes <= 7 and rgba_bytes <= 9, result  # measured 6.4 and 8.3 (2026-11-30)
    assert result["tight"].startswith(f"{grey16}: not enough memory left to decode this image (MemoryError"), result
    assert result["after"] == [32, 32]


def test_transparency_is_composited_over_white_as_one_whole_image_would_be(tmp_path, monkeypatch):
    """Converted in strips (7 rows of a 61-row image here), every kind of transparency (alpha channel, transparent
    colour of an RGB, grey or palette image) gives exactly what compositing the whole image over white gives (the
    conversion before strips)."""
    rgba = Image.fromarray(np.random.default_rng(5).integers(0, 256, (61, 61, 4), dtype=np.uint8))
    rgb, grey, palette = rgba.convert("RGB"), rgba.convert("L"), rgba.convert("RGB").quantize(64)
    cases = {"rgba.png": (rgba, None), "la.png": (rgba.convert("LA"), None),
             "rgb_keyed.png": (rgb, tuple(int(v) for v in rgb.getpixel((4, 3)))),
             "grey_keyed.png": (grey, grey.getpixel((0, 0))), "palette.png": (palette, palette.getpixel((0, 0)))}
    monkeypatch.setattr(images, "STRIP_PIXELS", 7 * 61)
    for name, (image, transparent) in cases.items():
        image.save(tmp_path / name, **({} if transparent is None else {"transparency": transparent}))
        with Image.open(tmp_path / name) as stored:
            whole = stored.convert("RGBA")
        assert np.asarray(whole)[..., 3].min() == 0, name  # some pixels are transparent
        expected = Image.alpha_composite(Image.new("RGBA", whole.size, (255,) * 4), whole).convert("RGB")
        assert np.array_equal(np.asarray(read_rgb(tmp_path / name)), np.asarray(expected)), name


# ---- messages and reasons ----------------------------------------------------------------------

def test_face_set_error_lines_are_bounded_whatever_the_file_holds(tmp_path):
    cases = {
        "folder": ("manifest.csv", ",".join(f"c{i}" for i in range(200_000)) + "\n"),
        "fairface": ("fairface_label_val.csv", "file,age,gender,race\n" + f"{'x' * 100_000}.jpg,,,\n" * 2),
        "celeba": ("list_attr_celeba.txt", "2\nSmiling\n" + f"{'y' * 100_000}.jpg 1\n" * 2),
    }
    for name, (file, text) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / file).write_text(text)
        with pytest.raises(PulseAuditError) as caught:
            load_faceset(f"{name}:{folder}")
        message = str(caught.value)
        assert len(message) < len(str(folder)) + 200 and message.isprintable(), (name, len(message), message[:300])
    assert "header line of 200000 columns (found: ['c0', 'c1'" in str(
        pytest.raises(PulseAuditError, load_faceset, f"folder:{tmp_path / 'folder'}").value)


def test_reasons_are_one_line_with_control_characters_escaped(tmp_path):
    assert one_line("a\nb\r\x1b[2J\u202ec\x00 é d") == "a\\nb\\r\\x1b[2J\\u202ec\\x00 é d"
    long = one_line("x" * 10_000 + ": no such file")
    assert len(long) == MAX_MESSAGE_CHARS and long.endswith("x: no such file") and "…" in long
    assert SkippedFile("a", tmp_path / "a", "line\nbreak\x07").reason == "line\\nbreak\\x07"
    with pytest.raises(InputImageError) as caught:
        read_rgb(tmp_path / "no\nsuch\x1b[31m.png")
    assert str(caught.value) == f"{tmp_path}/no\\nsuch\\x1b[31m.png: no such file"


# ---- one file, one item ------------------------------------------------------------------------

def test_a_hard_link_is_the_same_item_in_a_manifest_and_in_upsample(tmp_path):
    """A hard link is one file under two names: the folder face set refuses the manifest naming both paths, as it
    refuses ``img/../img/a.png`` or a symbolic link; ``upsample`` keeps the first and records the other as a failure,
    as it does for another spelling."""
    random_rgb(tmp_path / "a.png")
    os.link(tmp_path / "a.png", tmp_path / "b.png")
    os.symlink(tmp_path / "a.png", tmp_path / "c.png")
    (tmp_path / "manifest.csv").write_text("path,race\na.png,A\nb.png,B\n")
    with pytest.raises(PulseAuditError) as caught:
        load_faceset(f"folder:{tmp_path}")
    assert str(caught.value) == (f"{tmp_path / 'manifest.csv'} line 3: 'b.png' is 'a.png' (a hard link: same device "
                                 "and inode), which is already listed on line 2 (same file)")
    (tmp_path / "manifest.csv").write_text("path,race\na.png,A\nc.png,B\n")
    with pytest.raises(PulseAuditError, match="line 3: 'c.png' is 'a.png' \\(the same path once links are resolved"):
        load_faceset(f"folder:{tmp_path}")

    prepared = prepare_inputs([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", tmp_path / "./a.png"],
                              32, 4)
    assert [item.path for item in prepared.items] == [tmp_path / "a.png"]
    assert prepared.failures == [(tmp_path / name, f"{tmp_path / name}: the same file as {tmp_path / 'a.png'}, "
                                                   "which is upsampled once") for name in ("b.png", "c.png", "a.png")]


def test_a_utkface_file_found_under_two_names_is_one_item(tmp_path):
    """UTKFace labels come from file names, so a link under another valid name would audit one face twice with other
    labels: the second name (in path order) is skipped with a reason naming the first."""
    random_rgb(tmp_path / "20_1_0_20170109150557335.png")
    os.link(tmp_path / "20_1_0_20170109150557335.png", tmp_path / "70_0_1_20170109150557335.png")
    os.symlink(tmp_path / "20_1_0_20170109150557335.png", tmp_path / "sub_30_1_2_20170109150557335.png")
    random_rgb(tmp_path / "40_0_3_20170109150557335.png", seed=2)
    faceset = load_faceset(f"utkface:{tmp_path}")
    assert [item.item_id for item in faceset.items] == ["20_1_0_20170109150557335.png",
                                                         "40_0_3_20170109150557335.png"]
    assert [(s.item_id, s.reason) for s in faceset.skipped] == [
        (name, "the same file as 20_1_0_20170109150557335.png (a link), which is audited once")
        for name in ("70_0_1_20170109150557335.png", "sub_30_1_2_20170109150557335.png")]


def test_a_classifier_failure_is_a_one_line_error_in_its_row():
    """A classifier's exception text (e.g. a runtime's multi-line message carrying image content) becomes the row's
    error as one bounded line, and the other images are still classified."""
    from audit.core.records import Classifier, Prediction
    from audit.run.rows import safe_predict

    class Fragile(Classifier):
        name, attributes = "fragile", {}

        def predict(self, images):
            if any(image.mean() > 100 for image in images):
                raise RuntimeError("bad pixel\n\x1b[2J" + "z" * 100_000)
            return [Prediction(True) for _ in images]

    dark, light = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    first, second = safe_predict(Fragile(), [dark, light])
    assert first.face_found and not second.face_found
    assert second.error.startswith("fragile: RuntimeError: bad pixel\\n\\x1b[2J") and "\n" not in second.error
    assert len(second.error) == MAX_MESSAGE_CHARS


def test_a_file_system_without_inode_numbers_keys_files_by_path(tmp_path, monkeypatch):
    """Python promises only that a non-zero st_ino identifies a file: with 0 every file would look like one."""
    import os
    from types import SimpleNamespace

    from audit.facesets import file_key

    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(os, "stat", lambda *args, **kwargs: SimpleNamespace(st_dev=7, st_ino=0))
    assert file_key(tmp_path / "a.png") != file_key(tmp_path / "b.png")
    assert file_key(tmp_path / "a.png") == file_key(tmp_path / "b.png" / ".." / "a.png")
