"""Reading face images into 8-bit RGB (and tensors), and writing results back, with one-line errors.

:func:`read_rgb` is the one reader of input images. It treats every file as untrusted:

* only regular files are opened (``stat`` first: a FIFO, device or folder is refused without being
  opened for reading, and the opened descriptor is checked again), of at most :data:`MAX_FILE_BYTES`;
* the pixel count in the header is checked against :data:`MAX_PIXELS` *before* decoding, so a
  decompression bomb (a small file declaring a huge image) is refused without allocating it;
* 16-bit greyscale is scaled to 8 bits (v / 257), not clipped; EXIF orientation is applied; palette,
  CMYK (converted without its colour profile, so colours are approximate), 1-bit and YCbCr images
  are converted; transparency is composited over white; animated images give their first frame;
* anything Pillow cannot decode (truncated, corrupt, unsupported mode or pixel format, too large for the memory
  left) is an :class:`InputImageError` whose message is one bounded line with control characters escaped
  (:func:`one_line`: a path or a decoder's text cannot start a new line or reach the terminal raw), for the
  caller to record as a failed row.

The file is read once, into memory, and decoded from there; :func:`read_rgb_stamped` also returns
its :class:`FileStamp` (SHA-256 of exactly the bytes decoded, size, ``stat`` fields), which the audit
stores with the rows so that a resumed run can tell whether the file changed
(:mod:`audit.run.source_check`). Hashing costs one SHA-256 pass over bytes already in memory. A file
that cannot be used raises :class:`StampedImageError`, which carries the stamp of what was met at
its path (the bytes' SHA-256 when they were read; ``stat`` fields only, or :data:`MISSING`, when not),
so that its failed row can be checked on resume too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
import struct
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pulse_engine.bounded_read import NotRegularFile, OverBudget, budget_chunks, open_checked, sha256_hex
from pulse_engine.errors import InputImageError, one_line

from ..core.schema import STAMP_FIELDS

CROP_MODES = ("none", "center")
MAX_PIXELS = 40_000_000
"""Pixel budget of one input image (width × height, e.g. 8000×5000); larger images are refused."""
MAX_FILE_BYTES = 256 * 2**20
"""Size budget of one input file in bytes."""
GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Modes Pillow gives 16-bit greyscale (``I`` holds them as 32-bit integers in 0..65535)."""
CONVERTIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "YCbCr", "CMYK",
                               *GREY16_MODES})
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
                 KeyError, TypeError, ArithmeticError, NotImplementedError, RecursionError)
"""What Pillow raises on malformed data: its plugins parse with struct, index and dict look-ups and raise
SyntaxError, EOFError or OSError on bad headers; ArithmeticError holds ZeroDivisionError and OverflowError (sizes
computed from header fields); NotImplementedError is a pixel format a plugin does not know (DDS, BLP). A MemoryError
(an image larger than the memory left) is a failed row of its own, and so is any other exception raised inside
Pillow's own code (:func:`_raised_by_pillow`: e.g. the AttributeError of its SPIDER plugin on a malformed header).
Not caught, so that they stop the run: KeyboardInterrupt, SystemExit and errors of this code's own (NameError,
AttributeError, AssertionError raised outside Pillow)."""
_PILLOW_DIR = Path(Image.__file__).resolve().parent
_DETAIL_CHARS = 160
STRIP_PIXELS = 1 << 20
"""Pixels of 16-bit greyscale or of an image with transparency converted at a time (bounds the conversion's
temporary images and arrays to a few MiB)."""


def _detail(exc: BaseException) -> str:
    """The exception as one bounded line (its text can carry file content)."""
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "…"
    return type(exc).__name__ + (f": {text}" if text else "")


def _raised_by_pillow(exc: Exception) -> bool:
    """Whether ``exc`` was raised in Pillow's own code (its innermost frame is in the PIL package): on a file being
    decoded, a fault of a plugin meeting input it does not expect, not of this code."""
    trace = exc.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace is not None and Path(trace.tb_frame.f_code.co_filename).resolve().is_relative_to(_PILLOW_DIR)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _int64(value: int) -> int:
    """An unsigned 64-bit ``stat`` field (inode, device) as the signed integer a table column holds."""
    return value - 2**64 if value >= 2**63 else value


def _stat_fields(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """(size, mtime_ns, ctime_ns, inode, device) of a ``stat``, as a :class:`FileStamp` holds them."""
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, _int64(info.st_ino), _int64(info.st_dev)


@dataclass(frozen=True)
class FileStamp:
    """What a run met at a file's path, stored with the rows made from it (one column per field, named by
    :data:`~audit.core.schema.STAMP_FIELDS`) so that a resumed run can tell whether the file changed.

    Attributes:
        sha256: of the bytes read; "" when they were not read (not a regular file, over budget, unopenable).
        size: the number of bytes (read, else the file's size); :data:`ABSENT_SIZE` when there was no file.
        mtime_ns, ctime_ns, inode, device: the file's ``stat`` fields, a cheap first test of whether it changed
            (any change of content moves the inode change time, which ``touch``/``os.utime`` cannot set back, and
            a copy is another inode); None in stamps stored before they were recorded.
    """

    sha256: str
    size: int
    mtime_ns: int | None
    ctime_ns: int | None
    inode: int | None
    device: int | None

    @classmethod
    def of(cls, info: os.stat_result, sha256: str = "") -> FileStamp:
        """The stamp of a file from its ``stat`` (``sha256`` "": not read)."""
        return cls(sha256, *_stat_fields(info))

    @classmethod
    def from_columns(cls, row: Mapping[str, Any], prefix: str) -> FileStamp | None:
        """The stamp in a row's ``<prefix>*`` columns (absent ones None); None when the row has none."""
        values = [row.get(prefix + name) for name in STAMP_FIELDS]
        return None if values[0] is None or values[1] is None else cls(*values)

    def columns(self, prefix: str) -> dict[str, str | int | None]:
        """Row columns ``<prefix>sha256``, ``<prefix>bytes``, … (one per field)."""
        return {prefix + name: value for name, value in zip(STAMP_FIELDS, (self.sha256, *self.stat_fields()),
                                                            strict=True)}

    def stat_fields(self) -> tuple[int | None, ...]:
        """(size, mtime_ns, ctime_ns, inode, device)."""
        return self.size, self.mtime_ns, self.ctime_ns, self.inode, self.device

    @property
    def absent(self) -> bool:
        """There was no file at the path."""
        return self.size == ABSENT_SIZE

    def same_stat(self, info: os.stat_result) -> bool:
        """Whether ``info`` (the file's ``stat`` now) has this stamp's size and ``stat`` fields (the fields the
        stamp lacks are not compared)."""
        return all(mine is None or mine == theirs
                   for mine, theirs in zip(self.stat_fields(), _stat_fields(info), strict=True))


ABSENT_SIZE = -1
MISSING = FileStamp("", ABSENT_SIZE, 0, 0, 0, 0)
"""The stamp of a path where there was no file."""


class StampedImageError(InputImageError):
    """An :class:`InputImageError` for a file that was met: ``stamp`` says what was at its path (None: its path could
    not be examined). Every error this module raises is one, so every message is made :func:`one_line` here."""

    def __init__(self, message: str, stamp: FileStamp | None = None) -> None:  # unpickling passes the message only
        super().__init__(one_line(message))
        self.stamp = stamp


def stamp_of(error: InputImageError) -> FileStamp | None:
    """What was met at the path of a file that could not be used (a :class:`StampedImageError`'s stamp), or None."""
    return error.stamp if isinstance(error, StampedImageError) else None


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path`` after checking (with ``stat``, before opening) that it is a
    regular file within :data:`MAX_FILE_BYTES`; checked again on the descriptor (it may have been
    swapped in between). Raises :class:`StampedImageError` (:class:`InputImageError` when ``stat`` fails)."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise StampedImageError(f"{path}: no such file", MISSING) from exc
    except OSError as exc:
        raise StampedImageError(f"{path}: cannot be examined ({_detail(exc)})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise StampedImageError(f"{path}: is {_file_kind(info.st_mode)}, not an image file", FileStamp.of(info))
    if info.st_size > MAX_FILE_BYTES:
        raise StampedImageError(f"{path}: file of {info.st_size} bytes is over the {MAX_FILE_BYTES} byte budget",
                                FileStamp.of(info))
    try:
        fd, _ = open_checked(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise StampedImageError(f"{path}: cannot be opened ({_detail(exc)})", FileStamp.of(info)) from exc
    except (NotRegularFile, OverBudget) as exc:
        raise StampedImageError(f"{path}: changed while being opened; no longer a regular file within budget",
                                FileStamp.of(exc.info or info)) from None
    return fd


def _over_budget(path: Path) -> StampedImageError:
    return StampedImageError(f"{path}: grew over the {MAX_FILE_BYTES} byte budget while being read")


def file_sha256(path: Path) -> str:
    """SHA-256 of a regular file within :data:`MAX_FILE_BYTES` (opened as :func:`open_regular` does:
    never a FIFO or device); InputImageError otherwise."""
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            return sha256_hex(handle.read, MAX_FILE_BYTES)
    except OverBudget:
        raise _over_budget(path) from None
    except OSError as exc:
        raise StampedImageError(f"{path}: cannot be read ({_detail(exc)})") from exc


def _by_strips(image: Image.Image, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """``image`` as RGB, converted by ``convert`` in strips of :data:`STRIP_PIXELS` pixels (whole rows), so that
    beside the decoded image and the RGB result only a few MiB are used, whatever the image's size."""
    width, height = image.size
    result = Image.new("RGB", image.size)
    rows = max(1, STRIP_PIXELS // width)
    for top in range(0, height, rows):
        box = (0, top, width, min(height, top + rows))
        result.paste(convert(image.crop(box)), box)
    return result


def _grey16_to_rgb(strip: Image.Image) -> Image.Image:
    """16-bit greyscale (0..65535) as 8-bit RGB, scaled (v / 257, rounded) rather than clipped, in integers:
    round(v / 257) is (v + 128) // 257 (v / 257 is never halfway between integers)."""
    values = np.asarray(strip)
    if values.dtype.kind == "i" and values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"integer greyscale values outside 0..65535 (mode {strip.mode})")
    return Image.fromarray(((values.astype(np.uint32) + 128) // 257).astype(np.uint8)).convert("RGB")


def _over_white(strip: Image.Image) -> Image.Image:
    """An image with transparency (alpha, or a transparent colour) composited over white, as RGB."""
    strip = strip.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", strip.size, (255, 255, 255, 255)), strip).convert("RGB")


def _decode(handle, path: Path) -> Image.Image:
    """Decode an open file as RGB, refusing over-budget images before decoding them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(handle) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InputImageError(f"{path}: image of {width}×{height} px is over the {MAX_PIXELS} pixel budget "
                                      "(a decompression bomb, or a photo to shrink first)")
            if width == 0 or height == 0:
                raise InputImageError(f"{path}: zero-size image ({width}×{height})")
            if image.mode not in CONVERTIBLE_MODES:
                raise InputImageError(f"{path}: unsupported image mode {image.mode}; save it as RGB")
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an image without orientation
            if image.mode in GREY16_MODES:
                return _by_strips(image, _grey16_to_rgb)
            if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
                return _by_strips(image, _over_white)
            return image.convert("RGB")


def read_rgb(path: Path, crop: str = "none") -> Image.Image:
    """Read ``path`` as an 8-bit RGB PIL image (see the module docstring for what is refused and how
    each mode is converted).

    Args:
        path: PNG, JPEG or any format Pillow reads.
        crop: ``none`` (a non-square image is an error) or ``center`` (largest central square).

    Raises:
        InputImageError: one line naming the file and the reason.
    """
    return read_rgb_stamped(path, crop)[0]


def _read_stamped(path: Path) -> tuple[bytes, FileStamp]:
    """The bytes of a regular file within :data:`MAX_FILE_BYTES` and their :class:`FileStamp`;
    :class:`StampedImageError` (or :class:`InputImageError`) otherwise."""
    with os.fdopen(open_regular(path), "rb") as handle:
        met = FileStamp.of(os.fstat(handle.fileno()))
        try:
            data = b"".join(budget_chunks(handle.read, MAX_FILE_BYTES))
        except OverBudget:
            raise _over_budget(path) from None
        except OSError as exc:
            raise StampedImageError(f"{path}: cannot be read ({_detail(exc)})", met) from exc
        except MemoryError as exc:
            raise StampedImageError(f"{path}: not enough memory left to read this file", met) from exc
        except InputImageError as exc:
            raise StampedImageError(str(exc), met) from exc
    return data, dataclasses.replace(met, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def read_rgb_stamped(path: Path, crop: str = "none") -> tuple[Image.Image, FileStamp]:
    """:func:`read_rgb` and the :class:`FileStamp` of the bytes it decoded; a file it cannot use is a
    :class:`StampedImageError` carrying the stamp of what it met."""
    path = Path(path)
    data, stamp = _read_stamped(path)
    try:
        rgb = _decode(io.BytesIO(data), path)
    except InputImageError as exc:
        raise StampedImageError(str(exc), stamp) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise StampedImageError(f"{path}: image over the {MAX_PIXELS} pixel budget, refused before decoding "
                                f"({_detail(exc)})", stamp) from exc
    except MemoryError as exc:
        raise StampedImageError(f"{path}: not enough memory left to decode this image ({_detail(exc)})",
                                stamp) from exc
    except Exception as exc:
        if not isinstance(exc, DECODE_ERRORS) and not _raised_by_pillow(exc):
            raise
        raise StampedImageError(f"{path}: not a readable image ({_detail(exc)})", stamp) from exc
    width, height = rgb.size
    if width != height:
        if crop != "center":
            raise StampedImageError(f"{path}: image is {width}×{height}, not square; pass --crop center "
                                    "to use its central square", stamp)
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    return rgb, stamp


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor in [0, 1] (clamped) as an 8-bit RGB image."""
    array = (tensor.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    return Image.fromarray(array, "RGB")
