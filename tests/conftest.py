"""Shared fixtures: small generators and images made by the tests themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pulse_engine.generators.dcgan import tiny_dcgan


@pytest.fixture(scope="session")
def tiny_generator():
    """A 32 px random DCGAN (seed 0); cheap enough for many searches."""
    torch.set_num_threads(2)
    return tiny_dcgan(seed=0)


@pytest.fixture()
def face_png(tmp_path):
    """Write a smooth synthetic 'face-like' RGB PNG of a given size and mode; returns its path."""

    def make(name: str = "face.png", size: tuple[int, int] = (96, 96), mode: str = "RGB") -> str:
        h, w = size[1], size[0]
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        rgb = np.stack([0.6 + 0.3 * np.sin(3 * xx), 0.4 + 0.3 * yy, 0.3 + 0.2 * np.cos(4 * yy * xx)], -1)
        image = Image.fromarray((rgb * 255).astype(np.uint8), "RGB").convert(mode)
        path = tmp_path / name
        image.save(path)
        return path

    return make
