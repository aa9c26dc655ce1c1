"""Progress with rate and ETA for the command line, on standard error: a rich bar on a terminal, plain
log lines (:class:`LogLines`) when standard error is redirected (a log file, CI, a pipe)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)
LOG_INTERVAL_S = 10.0
"""Plain progress lines are at least this many seconds apart (the first and the last are always written)."""


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LogLines:
    """Progress as plain lines, e.g. ``audit pulse: 40/200 items (20%), 0.53 items/s, ETA 0:05:02``.

    Called with ``(done, total)``: a line is written at the first call, then at most once per ``interval``
    seconds; :meth:`close` writes the last state unless that was the last line. The rate counts the units
    done since :meth:`begin` (or the first call: a resumed run starts part way); ``clock`` (seconds) and
    ``stream`` are injectable so that tests need no sleeps.
    """

    def __init__(self, label: str, unit: str, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 interval: float = LOG_INTERVAL_S, digits: int = 2) -> None:
        self.label, self.unit, self.stream, self.clock = label, unit, stream, clock
        self.interval, self.digits = interval, digits
        self.start: tuple[float, int] | None = None
        self.latest: tuple[int, int] | None = None
        self.written: tuple[float, tuple[int, int]] | None = None  # when, and what, the last line said

    def begin(self, done: int = 0) -> None:
        self.start = (self.clock(), done)

    def __call__(self, done: int, total: int) -> None:
        if self.start is None:
            self.begin(done)
        now, self.latest = self.clock(), (done, total)
        if self.written is None or now - self.written[0] >= self.interval:
            self.write(done, total, now)

    def close(self, total: int | None = None) -> None:
        """Write the final state (with ``total`` when given) unless the last line showed it."""
        if self.latest is not None:
            done = self.latest[0]
            final = (done, self.latest[1] if total is None else total)
            if self.written is None or self.written[1] != final:
                self.write(*final, self.clock())

    def write(self, done: int, total: int, now: float) -> None:
        self.written = (now, (done, total))
        text = f"{self.label}: {done:,}/{total:,} {self.unit}" + (f" ({done / total:.0%})" if total else "")
        began, done_before = self.start or (now, done)
        rate = (done - done_before) / (now - began) if now > began and done > done_before else 0.0
        if rate:
            left = f"ETA {_duration((total - done) / rate)}" if done < total else f"took {_duration(now - began)}"
            text += f", {rate:,.{self.digits}f} {self.unit}/s, {left}"
        print(text, file=self.stream or sys.stderr, flush=True)


def _plain(stream: TextIO | None) -> bool:
    return stream is not None or not console.is_terminal


class RateColumn(ProgressColumn):
    """Completed units per second, e.g. ``img-steps/s`` or ``items/s``."""

    def __init__(self, unit: str, digits: int = 0) -> None:
        super().__init__()
        self.unit, self.digits = unit, digits

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.{self.digits}f} {self.unit}" if task.speed else "", style="progress.data.speed")


def _columns(unit: str, digits: int) -> tuple[ProgressColumn, ...]:
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(unit, digits),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


@contextmanager
def image_step_progress(total: int, label: str, stream: TextIO | None = None,
                        clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[[int], None]]:
    """A bar counting image-steps of the PULSE search (log lines to ``stream`` or a redirected standard
    error); yields the advance callback.

    The total grows when restarts add work beyond the first attempt.
    """
    if _plain(stream):
        lines, count = LogLines(label, "img-steps", stream, clock, digits=0), [0, total]
        lines.begin()

        def advance_line(n: int) -> None:
            count[0] += n
            if count[0] >= count[1]:  # restarts: more work than first planned
                count[1] = count[0] + total
            lines(*count)

        yield advance_line
        lines.close(total=count[0])
        return
    with Progress(*_columns("img-steps/s", 0), console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)

        def advance(n: int) -> None:
            state = bar.tasks[task]
            if state.total is not None and state.completed + n > state.total:
                bar.update(task, total=state.completed + n + total)
            bar.advance(task, n)

        yield advance
        bar.update(task, total=bar.tasks[task].completed)


@contextmanager
def row_progress(label: str, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[[int, int], None]]:
    """A bar over result rows (input × sample), or log lines to ``stream`` or a redirected standard error;
    yields the ``(done, total)`` callback that :func:`audit.run.harness.run_audit` calls. Nothing is shown before
    the first call, so that errors raised while setting up stay one line."""
    if _plain(stream):
        lines = LogLines(label, "items", stream, clock)
        yield lines
        lines.close()
        return
    bar = Progress(*_columns("items/s", 2), console=console, transient=False)
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=max(total, done))

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()
