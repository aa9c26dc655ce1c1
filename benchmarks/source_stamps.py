"""Cost of the source stamps that let a resumed run notice changed images (:mod:`audit.run.source_check`).

    python benchmarks/source_stamps.py [--files 5000] [--out benchmarks/RESULTS.md]

1. Reading: for face images of 256, 512 and 1024 px (PNG of smooth noise, and JPEG quality 95),
   the median time of :func:`audit.vision.images.read_rgb_stamped` (read once into memory, SHA-256,
   decode) over 15 reads, and the median time of the SHA-256 pass alone over the same bytes; the
   ratio is the share of a read spent on the stamp.
2. Resuming: a run folder whose parts hold ``--files`` stamped rows (16 rows per part), each of its own
   small image file; the time of :func:`audit.run.source_check.check_stored_sources` when nothing
   changed (one ``stat`` per file, nothing read) and when every file was touched (each file read
   and hashed once, found unchanged). The stamps hold every stat field (size, modification and inode
   change times, inode, device); a file differing in any of them is hashed.
Medians of repeated timings in one process, because other processes share the machine.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audit.core.records import FaceItem  # noqa: E402
from audit.core.schema import SOURCE_STAMP  # noqa: E402
from audit.run.run_store import RunStore  # noqa: E402
from audit.run.source_check import check_stored_sources  # noqa: E402
from audit.vision.images import FileStamp, read_rgb_stamped  # noqa: E402


def median_time(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def face_like(side: int, seed: int = 0) -> Image.Image:
    coarse = np.random.default_rng(seed).random((side // 16, side // 16, 3)) * 200 + 30
    image = Image.fromarray(coarse.astype(np.uint8)).resize((side, side), Image.BICUBIC)
    noise = np.random.default_rng(seed + 1).normal(0, 4, (side, side, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def reading(folder: Path) -> list[str]:
    lines = ["| image | file KB | read + stamp (ms) | SHA-256 alone (ms) | share of the read |",
             "|---|---|---|---|---|"]
    for side in (256, 512, 1024):
        for fmt, options in (("PNG", {}), ("JPEG", {"quality": 95})):
            path = folder / f"face{side}.{fmt.lower()}"
            face_like(side).save(path, fmt, **options)
            data = path.read_bytes()
            read = median_time(lambda p=path: read_rgb_stamped(p), 15)
            digest = median_time(lambda d=data: hashlib.sha256(d).hexdigest(), 15)
            lines.append(f"| {side} px {fmt} | {len(data) / 1024:.0f} | {read * 1e3:.2f} | {digest * 1e3:.3f} | "
                         f"{digest / read:.1%} |")
    return lines


def resuming(folder: Path, files: int) -> list[str]:
    images, items = folder / "img", []
    images.mkdir()
    rows = []
    for i in range(files):
        path = images / f"f{i:06d}.png"
        path.write_bytes(os.urandom(2048))
        stamp = FileStamp.of(path.stat(), hashlib.sha256(path.read_bytes()).hexdigest())
        items.append(FaceItem(f"f{i:06d}", path))
        rows.append({"item_id": f"f{i:06d}", "sample": 0, **stamp.columns(SOURCE_STAMP)})
    with RunStore.open(folder / "run", {"benchmark": 1}) as store:
        for start in range(0, files, 16):
            store.append(rows[start:start + 16])
    unchanged = median_time(lambda: check_stored_sources(folder / "run", items), 3)
    for item in items:
        os.utime(item.path, ns=(1, 1))
    touched = median_time(lambda: check_stored_sources(folder / "run", items), 3)
    return ["| stored files | parts | check, nothing changed (s) | check, every file touched (s) | ratio |",
            "|---|---|---|---|---|",
            f"| {files:,} | {(files + 15) // 16:,} | {unchanged:.3f} | {touched:.3f} | {touched / unchanged:.1f}× |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = reading(Path(tmp)) + [""] + resuming(Path(tmp), args.files)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    head = (f"## {when} — source stamps (resume check of changed images) — {cpu},"
            f" {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    text = "\n".join([head, "", "`benchmarks/source_stamps.py`: medians in one process.", "", *table, ""])
    print(text)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
