"""Reading face images into 8-bit RGB (and tensors), and writing results back, with one-line errors.

:func:`read_rgb` is the one reader of input images. It treats every file as untrusted:

* only regular files are opened (``stat`` first: a FIFO, device or folder is refused without being
  opened for reading, and the opened descriptor is checked again), of at most :data:`MAX_FILE_BYTES`;
* the pixel count in the header is checked against :data:`MAX_PIXELS` *before* decoding, so a
  decompression bomb (a small file declaring a huge image) is refused without allocating it;
* 16-bit greyscale is scaled to 8 bits (v / 257), not clipped; EXIF orientation is applied; palette,
  CMYK (converted without its colour profile, so colours are approximate), 1-bit and YCbCr images
  are converted; transparency is composited over white; animated images give their first frame;
* anything Pillow cannot decode (truncated, corrupt, unsupported mode) is an :class:`InputImageError`
  whose message is one bounded line, for the caller to record as a failed row.

The file is read once, into memory, and decoded from there; :func:`read_rgb_stamped` also returns
its :class:`FileStamp` (SHA-256 of exactly the bytes decoded, size, modification time), which the
audit stores with the rows so that a resumed run can tell whether the file changed
(:mod:`audit.run.source_check`). Hashing costs one SHA-256 pass over bytes already in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pulse_engine.errors import InputImageError

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
                 KeyError, TypeError, ZeroDivisionError)
"""What Pillow raises on malformed data (its plugins parse with struct, index and dict look-ups)."""
_DETAIL_CHARS = 160


def _detail(exc: BaseException) -> str:
    """The exception as one bounded line (its text can carry file content)."""
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "…"
    return type(exc).__name__ + (f": {text}" if text else "")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path`` after checking (with ``stat``, before opening) that it is a
    regular file within :data:`MAX_FILE_BYTES`; checked again on the descriptor (it may have been
    swapped in between). Raises :class:`InputImageError`."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise InputImageError(f"{path}: no such file") from exc
    except OSError as exc:
        raise InputImageError(f"{path}: cannot be examined ({_detail(exc)})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise InputImageError(f"{path}: is {_file_kind(info.st_mode)}, not an image file")
    if info.st_size > MAX_FILE_BYTES:
        raise InputImageError(f"{path}: file of {info.st_size} bytes is over the {MAX_FILE_BYTES} byte budget")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputImageError(f"{path}: cannot be opened ({_detail(exc)})") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
        os.close(fd)
        raise InputImageError(f"{path}: changed while being opened; no longer a regular file within budget")
    return fd


@dataclass(frozen=True)
class FileStamp:
    """What identifies the content of a file as it was read: the SHA-256 of its bytes, their number, and
    the file's modification time in nanoseconds (a cheap first test of whether it changed since)."""

    sha256: str
    size: int
    mtime_ns: int

    def columns(self, prefix: str) -> dict[str, str | int]:
        """Row columns ``<prefix>sha256``, ``<prefix>bytes`` and ``<prefix>mtime_ns``."""
        return {f"{prefix}sha256": self.sha256, f"{prefix}bytes": self.size, f"{prefix}mtime_ns": self.mtime_ns}


def _chunks(handle, limit: int, path: Path) -> Iterator[bytes]:
    """The bytes of an open file in 1 MiB chunks, an InputImageError past ``limit`` bytes."""
    total = 0
    while block := handle.read(1 << 20):
        total += len(block)
        if total > limit:
            raise InputImageError(f"{path}: grew over the {limit} byte budget while being read")
        yield block


def file_sha256(path: Path) -> str:
    """SHA-256 of a regular file within :data:`MAX_FILE_BYTES` (opened as :func:`open_regular` does:
    never a FIFO or device); InputImageError otherwise."""
    digest = hashlib.sha256()
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            for block in _chunks(handle, MAX_FILE_BYTES, path):
                digest.update(block)
    except OSError as exc:
        raise InputImageError(f"{path}: cannot be read ({_detail(exc)})") from exc
    return digest.hexdigest()


def _grey16_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit greyscale (0..65535) as 8-bit RGB, scaled (v / 257, rounded) rather than clipped."""
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"integer greyscale values outside 0..65535 (mode {image.mode})")
    grey = np.rint(values / 257.0).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


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
            image = ImageOps.exif_transpose(image)
            if image.mode in GREY16_MODES:
                return _grey16_to_rgb(image)
            if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
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


def read_rgb_stamped(path: Path, crop: str = "none") -> tuple[Image.Image, FileStamp]:
    """:func:`read_rgb` and the :class:`FileStamp` of the bytes it decoded."""
    path = Path(path)
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            modified = os.fstat(handle.fileno()).st_mtime_ns
            data = b"".join(_chunks(handle, MAX_FILE_BYTES, path))
    except OSError as exc:
        raise InputImageError(f"{path}: cannot be read ({_detail(exc)})") from exc
    stamp = FileStamp(hashlib.sha256(data).hexdigest(), len(data), modified)
    try:
        rgb = _decode(io.BytesIO(data), path)
    except InputImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputImageError(f"{path}: image over the {MAX_PIXELS} pixel budget, refused before decoding "
                              f"({_detail(exc)})") from exc
    except DECODE_ERRORS as exc:
        raise InputImageError(f"{path}: not a readable image ({_detail(exc)})") from exc
    width, height = rgb.size
    if width != height:
        if crop != "center":
            raise InputImageError(f"{path}: image is {width}×{height}, not square; pass --crop center "
                                  "to use its central square")
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
