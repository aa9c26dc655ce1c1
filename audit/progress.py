"""Progress bars with rate and ETA for the command line (rich), on standard error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
def image_step_progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A bar counting image-steps of the PULSE search; yields the advance callback.

    The total grows when restarts add work beyond the first attempt.
    """
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
def row_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar over result rows (input × sample); yields the ``(done, total)`` callback that
    :func:`audit.harness.run_audit` calls. The bar appears on the first call, so that errors
    raised while setting up stay one line."""
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
