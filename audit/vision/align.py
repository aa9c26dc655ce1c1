"""FFHQ-style face alignment for unaligned photos (optional preprocessing).

The crop follows the recipe NVlabs used to build FFHQ (and PULSE's ``align_face.py``), written
here from its description: with e = mean of the two eye centres, m = mean of the two mouth corners,
the crop is a square quad whose half-side is max(2·|eye-to-eye|, 1.8·|e-to-m|), centred at
e + 0.1·(m − e) and turned so that the eye line is horizontal. Before the quad transform the photo
is shrunk when it is much larger than needed, cropped with a border, and, where the quad leaves the
photo, reflect-padded with edges faded to a blurred, median-coloured background.

In an output of side S the eye centres land near (0.375·S, 0.475·S) and (0.625·S, 0.475·S) for
a typical face (the 2·|eye-to-eye| term dominates); see the tests.

Landmarks come from dlib's 68-point model (eye centres = mean of points 36–41 and 42–47, mouth
corners = points 48 and 54). The 5-point model has no mouth points, so it cannot drive this recipe.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from pulse_engine.errors import InputImageError

from .faces import PREDICTOR_68, Face, as_rgb_array, main_face, model_file

SUPERSAMPLE = 4
"""The quad is resampled (bilinear) at SUPERSAMPLE × the output side, then reduced with Lanczos."""


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad (4, 2) from 68 dlib landmarks (x, y in px).

    Corner order: top-left, bottom-left, bottom-right, top-right of the aligned face, which is the
    order Pillow's QUAD transform expects (source points for output (0,0), (0,S), (S,S), (S,0)).
    """
    if landmarks.shape != (68, 2):
        raise ValueError(f"FFHQ alignment needs 68 landmarks, got an array of shape {landmarks.shape}")
    eye_left = landmarks[36:42].mean(axis=0)
    eye_right = landmarks[42:48].mean(axis=0)
    mouth = (landmarks[48] + landmarks[54]) / 2
    eye_mid = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth - eye_mid
    # The horizontal axis blends the eye line with the perpendicular of the eye-to-mouth line.
    axis_x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    axis_x = axis_x / np.hypot(*axis_x)
    half = max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    x = axis_x * half
    y = np.array([-x[1], x[0]])  # x turned by +90° in image coordinates (y points down)
    centre = eye_mid + 0.1 * eye_to_mouth
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])


def _reflect_pad(image: Image.Image, pad: tuple[int, int, int, int], qsize: float) -> Image.Image:
    """Reflect-pad (left, top, right, bottom) and fade the padding into a blurred, then median-
    coloured background, so that the new border carries no mirrored facial features."""
    array = np.asarray(image, dtype=np.float32)
    left, top, right, bottom = pad
    array = np.pad(array, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    height, width = array.shape[:2]
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    # 0 inside the original photo, rising to 1 at the outer edge of the padding.
    fade_x = 1.0 - np.minimum(xs / max(left, 1), (width - 1 - xs) / max(right, 1))
    fade_y = 1.0 - np.minimum(ys / max(top, 1), (height - 1 - ys) / max(bottom, 1))
    fade = np.maximum(fade_x, fade_y)[..., None]
    padded = Image.fromarray(np.uint8(np.clip(np.rint(array), 0, 255)), "RGB")
    blurred = np.asarray(padded.filter(ImageFilter.GaussianBlur(qsize * 0.02)), dtype=np.float32)
    array += (blurred - array) * np.clip(3.0 * fade + 1.0, 0.0, 1.0)
    array += (np.median(array, axis=(0, 1)) - array) * np.clip(fade, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(array), 0, 255)), "RGB")


def align_to_quad(image: Image.Image, quad: np.ndarray, size: int) -> Image.Image:
    """Resample the square ``quad`` of ``image`` to a ``size`` × ``size`` RGB image (FFHQ recipe).

    Args:
        image: the photo (converted to RGB).
        quad: (4, 2) corners in px, as returned by :func:`ffhq_quad`.
        size: output side in px.
    """
    image = image.convert("RGB")
    quad = np.asarray(quad, dtype=np.float64).copy()
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    # Shrink a photo that is over twice as large as needed (with antialiasing).
    shrink = math.floor(qsize / size * 0.5)
    if shrink > 1:
        image = image.resize((round(image.width / shrink), round(image.height / shrink)),
                             Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink
    border = max(round(qsize * 0.1), 3)
    # Crop to the quad plus a border.
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0),
            min(hi[0] + border, image.width), min(hi[1] + border, image.height))
    if crop != (0, 0, image.width, image.height):
        image = image.crop(crop)
        quad -= crop[:2]
        lo, hi = lo - crop[:2], hi - crop[:2]
    # Pad where the quad (plus border) leaves the photo.
    pad = (max(border - lo[0], 0), max(border - lo[1], 0),
           max(hi[0] + border - image.width, 0), max(hi[1] + border - image.height, 0))
    if max(pad) > border - 4:
        pad = tuple(max(p, round(qsize * 0.3)) for p in pad)
        image = _reflect_pad(image, pad, qsize)
        quad += pad[:2]
    work = SUPERSAMPLE * size
    # QUAD data are the source coordinates of the output corners; +0.5 moves from pixel centres
    # (landmark convention) to pixel edges (Pillow's transform convention).
    image = image.transform((work, work), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                            Image.Resampling.BILINEAR)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def align_face(image: np.ndarray, size: int, face: Face | None = None) -> np.ndarray:
    """FFHQ-aligned square crop of the largest face in ``image``.

    Args:
        image: (H, W, 3) uint8 RGB photo of any size.
        size: output side in px (e.g. the generator's resolution).
        face: a face found with the 68-point model; detected here when None.

    Returns:
        (size, size, 3) uint8 RGB.

    Raises:
        InputImageError: no face was found.
        WeightsError: the 68-point landmark model is missing.
    """
    image = as_rgb_array(image)
    if face is None:
        face = main_face(image, model_file(PREDICTOR_68))
        if face is None:
            raise InputImageError("no face found for alignment (dlib HOG detector)")
    quad = ffhq_quad(face.landmarks)
    return np.asarray(align_to_quad(Image.fromarray(image), quad, size))
