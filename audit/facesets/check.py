"""Checking that a face image is usable before the harness spends time on it.

Accepted modes are those :func:`audit.images.read_rgb` turns into faithful 8-bit RGB:
``RGB``, ``RGBA``, ``RGBX``, ``L``, ``LA``, ``P``, ``PA``, ``YCbCr`` and ``CMYK`` (16-bit-per-channel
RGB PNGs open as ``RGB`` and are fine). CMYK is converted by Pillow without its colour profile,
so its colours (and ITA° skin tone) are approximate. Rejected, with a reason:

* 16/32-bit greyscale and float images (modes ``I;16*``, ``I``, ``F``): Pillow clips them to 8 bits
  instead of scaling, which would whiten the face;
* 1-bit black-and-white (``1``) and other colour spaces (``LAB``, ``HSV``…);
* missing, unreadable, truncated or corrupt files, zero-size images, decompression bombs.

Squareness is not checked: non-square faces are the preprocessing step's business.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

ACCEPTED_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "YCbCr", "CMYK"})


def check_image(path: Path) -> str:
    """"" when ``path`` fully decodes as a usable image, else one line saying why not (without the
    path, which the caller records beside it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                mode, size = image.mode, image.size
                image.load()
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a folder, not an image"
    except PermissionError:
        return "not readable (permission denied)"
    except UnidentifiedImageError:
        return "not an image Pillow recognises (empty, corrupt or unsupported format)"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"too large to decode safely ({exc})".splitlines()[0]
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"truncated or corrupt image data ({detail})"
    if size[0] == 0 or size[1] == 0:
        return f"zero-size image ({size[0]}×{size[1]})"
    if mode not in ACCEPTED_MODES:
        if mode.startswith("I") or mode == "F":
            return f"high-bit-depth greyscale (mode {mode}) would be clipped to 8 bits; save it as 8-bit"
        if mode == "1":
            return "1-bit black-and-white image (mode 1) carries no tone; save it as greyscale or RGB"
        return f"unsupported image mode {mode}; save it as RGB"
    return ""
