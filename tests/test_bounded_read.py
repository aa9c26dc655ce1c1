"""pulse_engine.bounded_read: the one reader of untrusted files (weights hashes, cards, run records, images)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from pulse_engine.bounded_read import NotRegularFile, OverBudget, budget_chunks, open_checked, sha256_hex


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_regular_file_within_budget_is_read_whole_in_bounded_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd, info = open_checked(path, len(data))
    with os.fdopen(fd, "rb") as handle:
        chunks = list(budget_chunks(handle.read, len(data)))
    assert info.st_size == len(data) and b"".join(chunks) == data
    assert max(map(len, chunks)) <= 1 << 20
    assert sha256_hex(io.BytesIO(data).read, len(data)) == hashlib.sha256(data).hexdigest()


def test_a_file_that_grows_past_the_budget_while_read_stops_one_byte_past_it() -> None:
    """The size check on open cannot see growth after it; the read loop must (a file appended to meanwhile)."""
    source = io.BytesIO(b"x" * 11)
    with pytest.raises(OverBudget) as caught:
        for _ in budget_chunks(source.read, 10):
            pass
    assert caught.value.info is None and source.tell() == 11  # read 11 bytes, not the rest of a huge file
    assert list(budget_chunks(io.BytesIO(b"x" * 10).read, 10)) == [b"x" * 10]


def test_special_and_oversized_files_are_refused_on_the_descriptor_without_leaking_it(tmp_path: Path) -> None:
    fifo, folder, big = tmp_path / "fifo", tmp_path / "dir", tmp_path / "big"
    os.mkfifo(fifo)  # a blocking open would wait for a writer for ever
    folder.mkdir()
    with open(big, "wb") as handle:
        handle.truncate(1 << 40)  # sparse: a terabyte that takes no disk
    before = _open_fds()
    for path in (fifo, folder):
        with pytest.raises(NotRegularFile) as caught:
            open_checked(path, 100)
        assert "not a regular file" in str(caught.value)
    with pytest.raises(OverBudget) as over:
        open_checked(big, 1 << 30)
    assert over.value.info.st_size == 1 << 40
    with pytest.raises(FileNotFoundError):
        open_checked(tmp_path / "missing", 100)
    assert _open_fds() == before
