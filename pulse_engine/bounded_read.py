"""Reading untrusted files within a byte budget: the one reader behind weights hashes, generator cards, run
records and input images.

A file named by a user or a downloaded folder may be a FIFO (an open or a read would wait for ever), a device, a
sparse file of hundreds of gigabytes, or a file that grows while it is read. So it is opened without blocking and
checked on the open descriptor (:func:`open_checked`), then read in chunks that stop one byte past the budget
(:func:`budget_chunks`). The callers turn :class:`NotRegularFile` and :class:`OverBudget` into their own one-line
errors (weights, cards, images), so each keeps its own wording and error class.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator

__all__ = ["NotRegularFile", "OverBudget", "budget_chunks", "open_checked", "sha256_hex"]

CHUNK_BYTES = 1 << 20
"""Largest single read."""


class NotRegularFile(Exception):
    """The path is a directory, FIFO, device or socket; ``info`` is its ``fstat``."""

    def __init__(self, info: os.stat_result) -> None:
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a special file"
        super().__init__(f"is not a regular file but {kind}")
        self.info = info


class OverBudget(Exception):
    """The file has (or reached while being read) more than ``budget`` bytes; ``info`` is its ``fstat`` when that
    showed it (None: it grew past the budget while being read)."""

    def __init__(self, budget: int, info: os.stat_result | None = None) -> None:
        super().__init__(f"has {info.st_size:,} bytes, over the {budget:,}-byte budget" if info is not None
                         else f"grew over the {budget:,}-byte budget while being read")
        self.budget, self.info = budget, info


def open_checked(path: os.PathLike | str, max_bytes: int) -> tuple[int, os.stat_result]:
    """A read-only, non-blocking, close-on-exec descriptor of ``path`` and its ``fstat``, after checking on the
    descriptor that it is a regular file of at most ``max_bytes`` bytes (the descriptor is closed when not).
    Raises OSError (cannot be opened), :class:`NotRegularFile` or :class:`OverBudget`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(info)
        if info.st_size > max_bytes:
            raise OverBudget(max_bytes, info)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def budget_chunks(read: Callable[[int], bytes], max_bytes: int) -> Iterator[bytes]:
    """The bytes ``read(n)`` returns until it returns nothing, in chunks of at most :data:`CHUNK_BYTES`; reading
    stops one byte past ``max_bytes`` with :class:`OverBudget` (a file that grew after it was checked)."""
    total = 0
    while block := read(min(CHUNK_BYTES, max_bytes + 1 - total)):
        total += len(block)
        if total > max_bytes:
            raise OverBudget(max_bytes)
        yield block


def sha256_hex(read: Callable[[int], bytes], max_bytes: int) -> str:
    """Hex SHA-256 of what :func:`budget_chunks` reads."""
    digest = hashlib.sha256()
    for block in budget_chunks(read, max_bytes):
        digest.update(block)
    return digest.hexdigest()
