"""Regenerate the committed showcase crops (needs network access to PyPI for the sdist).

    python datasets/showcase/make_showcase.py

Fetches the face_recognition 1.3.0 source distribution with pip (its tests/test_images hold the
portraits), crops each face with the fixed boxes recorded in showcase.json, and writes 256×256
PNGs beside this script. The astronaut comes from scikit-image's bundled data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SIDE = 256


def main() -> None:
    manifest = json.loads((HERE / "showcase.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "-d", tmp, "face_recognition==1.3.0"], check=True)
        with tarfile.open(next(Path(tmp).glob("face_recognition-1.3.0.tar.gz"))) as sdist:
            sdist.extractall(tmp, filter="data")
        for face in manifest["faces"]:
            if face["origin"] == "scikit-image":
                from skimage import data
                source = Image.fromarray(np.asarray(getattr(data, face["origin_name"])()))
            else:
                source = Image.open(Path(tmp) / "face_recognition-1.3.0" / face["origin_path"])
            crop = source.convert("RGB").crop(tuple(face["crop_box"])).resize((SIDE, SIDE), Image.LANCZOS)
            crop.save(HERE / face["file"])
            print("wrote", HERE / face["file"])


if __name__ == "__main__":
    main()
