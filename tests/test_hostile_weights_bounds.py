"""Hostile files whose *size* is the attack: sparse files of many gigabytes that would be hashed whole, and
zip files whose central directory would be parsed whole, before any budget is checked.

The sparse files take no disk space (``truncate``). Each case runs in the corpus server of
:mod:`test_hostile_weights` (one process, address space limited, one forked child per case with a CPU-time
limit), here with a CPU limit of :data:`CASE_CPU_SECONDS` and a tighter memory allowance
(:data:`MAX_PEAK_GROWTH_MB`): every case must end in one line naming the file, its size and the budget.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_hostile_weights import EXTRA_MEMORY, MAX_MESSAGE, SERVER, TINY_DCGAN, dcgan_folder
from test_stylegan2 import save_tiny_checkpoint

from pulse_engine.generators.pickle_scan import LoadBudget, PickleBudgetError
from pulse_engine.generators.torch_file import read_torch_file

CASE_CPU_SECONDS = 10  # every refusal here takes well under a second; hashing a sparse 64 GiB file takes minutes
HANG_SECONDS = 300
MAX_PEAK_GROWTH_MB = 50  # the old zip reader grew by ~90 MB for 250,000 entries, ~1 GB for a 1 GiB directory
SPARSE_BYTES = 64 << 30

FACESET_LOADER = '''
def faceset_inputs(path):
    from types import SimpleNamespace
    from audit.facesets import load_faceset
    from audit.run.provenance import run_inputs
    faceset = load_faceset(f"folder:{path}")
    return run_inputs(faceset, faceset.items, SimpleNamespace(), [])
LOADERS = {"faceset-inputs": faceset_inputs,'''
assert SERVER.count("LOADERS = {") == 1
BOUNDS_SERVER = SERVER.replace("LOADERS = {", FACESET_LOADER)

_LOCAL = b"PK\x03\x04" + struct.pack("<5H3L2H", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"  # one empty entry "a"


def sparse(path: Path, size: int = SPARSE_BYTES) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def many_entries_zip(path: Path, entries: int) -> Path:
    """A zip whose central directory lists ``entries`` one-byte names (47 bytes each); the count it declares
    is 65,535."""
    entry = b"PK\x01\x02" + struct.pack("<6H3L5H2L", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"a"
    end = b"PK\x05\x06" + struct.pack("<4H2LH", 0, 0, 0xFFFF, 0xFFFF, len(entry) * entries, len(_LOCAL), 0)
    path.write_bytes(_LOCAL + entry * entries + end)
    return path


def zip64_huge_directory(path: Path, directory: int = 1 << 30) -> Path:
    """A zip whose ZIP64 end record declares a ``directory``-byte central directory: a hole of zeros (sparse)."""
    with open(path, "wb") as handle:
        handle.write(_LOCAL)
        handle.seek(len(_LOCAL) + directory)
        record_at = handle.tell()
        handle.write(b"PK\x06\x06" + struct.pack("<Q2H2L4Q", 44, 45, 45, 0, 0, 1, 1, directory, len(_LOCAL)))
        handle.write(b"PK\x06\x07" + struct.pack("<LQL", 0, record_at, 1))
        handle.write(b"PK\x05\x06" + struct.pack("<4H2LH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return path


def build_cases(root: Path) -> list[dict]:
    """(name, loader, target, expected fragment of the line) for every case; ``loaded`` expects a load."""
    faces = root / "faces"
    faces.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(faces / "a.png")
    (faces / "manifest.csv").write_text("path,race\na.png,A\n")
    sparse(faces / "README.md")
    weights = dcgan_folder(root / "dcgan_sparse", TINY_DCGAN)
    sparse(weights / "weights.pt")
    save_tiny_checkpoint("b", root / "tiny_stylegan2.pt")
    cases = [
        ("dcgan_sparse_weights", "generator", f"dcgan-file:{weights}",
         f"weights.pt: the weights file has {SPARSE_BYTES:,} bytes, over the 4,294,967,296-byte budget"),
        ("faceset_sparse_card", "faceset-inputs", str(faces),
         f"README.md: the face set card has {SPARSE_BYTES:,} bytes, over the 1,048,576-byte budget"),
        ("zip_250k_entries", "generator", f"stylegan2:{many_entries_zip(root / 'entries.pt', 250_000)}",
         "zip directory of more than 200,016 entries (it declares 65,535)"),
        ("zip64_1gib_directory", "generator", f"stylegan2:{zip64_huge_directory(root / 'directory.pt')}",
         f"zip directory of 1 entries and {1 << 30:,} bytes exceeds the budget of 200,016 entries"),
        ("real_torch_zip_loads", "generator", f"stylegan2:{root / 'tiny_stylegan2.pt'}", "loaded"),
    ]
    return [dict(name=n, loader=loader, target=t, expect=e) for n, loader, t, e in cases]


def test_oversized_files_and_zip_directories_are_refused_before_they_are_read(tmp_path):
    cases = build_cases(tmp_path / "cases")
    spec, out = tmp_path / "cases.json", tmp_path / "results.json"
    spec.write_text(json.dumps(cases))
    try:
        run = subprocess.run([sys.executable, "-c", BOUNDS_SERVER, str(spec), str(out), str(EXTRA_MEMORY),
                              str(CASE_CPU_SECONDS), str(HANG_SECONDS)], capture_output=True, text=True,
                             timeout=HANG_SECONDS * len(cases), check=False,
                             env={**os.environ, "PULSE_AUDIT_FIT_SAMPLES": "200"})
    finally:  # no sparse giant left behind for a backup or a search tool to read
        for path in (tmp_path / "cases").rglob("*"):
            if path.is_file() and path.stat().st_size > 1 << 30:
                path.unlink()
    assert run.returncode == 0, run.stderr[-3000:]
    results = {r["name"]: r for r in json.loads(out.read_text())}
    failures = []
    for case in cases:
        got = results[case["name"]]
        line = got.get("message", "")
        outcome = got["kind"] == "loaded" if case["expect"] == "loaded" else (
            got["kind"] == "error" and "\n" not in line and len(line) <= MAX_MESSAGE and case["expect"] in line
            and got["peak_growth_mb"] < MAX_PEAK_GROWTH_MB)
        if not (outcome and got["status"] == 0):
            failures.append(f"{case['name']}: kind={got['kind']} status={got['status']} "
                            f"peak+{got['peak_growth_mb']:.0f}MB cpu={got.get('cpu_s', -1):.1f}s "
                            f"message={line[:300]!r}")
    assert not failures, "\n".join(failures)


# --- the zip directory is found where zipfile finds it --------------------------------------------------

def _with_comment(data: bytes) -> bytes:
    """The zip ``data`` with an archive comment (which moves its end record away from the file's end)."""
    comment = b"a comment PK\x01\x02 that zipfile skips"
    assert data[-22:-18] == b"PK\x05\x06" and data[-2:] == b"\0\0"
    return data[:-2] + struct.pack("<H", len(comment)) + comment


def _zip64_record(data: bytes) -> int:
    position = data.rfind(b"PK\x06\x06")
    assert position == len(data) - 98  # torch.save writes a ZIP64 end record, its locator, then the end record
    return position


def _rewritten_by_zipfile(data: bytes) -> bytes:
    """The entries of the zip ``data`` written again by zipfile: no ZIP64 records, only the classic end record."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
        for info in source.infolist():
            copy.writestr(info.filename, source.read(info))
    assert b"PK\x06\x06" not in out.getvalue()[-98:]
    return out.getvalue()


def _with_understated_count(data: bytes) -> bytes:
    """The zip ``data`` whose end records declare one entry (zipfile ignores the count: it reads entries until
    the directory's size is used up)."""
    at = _zip64_record(data) + 24
    data = data[:at] + struct.pack("<2Q", 1, 1) + data[at + 16:]
    return data[:-14] + struct.pack("<2H", 1, 1) + data[-10:]


@pytest.mark.parametrize("variant", [None, _with_comment, _rewritten_by_zipfile, _with_understated_count])
def test_zip_entry_budget_counts_exactly_the_entries_zipfile_reads(tmp_path, variant):
    path = tmp_path / "state.pt"
    state = {f"t{i}": torch.full((2,), float(i)) for i in range(20)}
    torch.save(state, path)
    if variant is not None:
        path.write_bytes(variant(path.read_bytes()))
    entries = len(zipfile.ZipFile(io.BytesIO(path.read_bytes())).infolist())
    assert entries > 20  # the tensors, data.pkl, byteorder, version, ...
    loaded = read_torch_file(path, LoadBudget(max_tensors=entries - 16))  # at most max_tensors + 16 entries
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    refusal = f"more than {entries - 1} entries" if variant is _with_understated_count else f"of {entries} entries"
    with pytest.raises(PickleBudgetError, match=refusal):
        read_torch_file(path, LoadBudget(max_tensors=entries - 17))
