"""Kill tests without timers: start a child that stops at a known point of the run store
(:data:`audit.run.run_store.HOLD_VARIABLE`), wait until it is there, then signal it or let it go on.

The child sets its own SIGINT disposition (Python's KeyboardInterrupt handler) instead of inheriting
one: a test suite started as a background job of a non-interactive shell inherits SIGINT ignored.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

from audit.run.run_store import HOLD_VARIABLE

REPO = Path(__file__).resolve().parents[1]
INTERRUPTIBLE = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                 "sys.argv[0] = {name!r}; runpy.run_{kind}({target!r}, run_name='__main__')")


def python_command(module: str = "", script: Path | None = None) -> list[str]:
    """``python -m module`` or ``python script`` with SIGINT raising KeyboardInterrupt, whatever the parent
    ignores; arguments follow."""
    kind, target = ("module", module) if module else ("path", str(script))
    return [sys.executable, "-c", INTERRUPTIBLE.format(name=target, kind=kind, target=target)]


class HeldChild:
    """A child process that will stop the ``count``-th time it reaches ``point`` (``write`` or ``part``)."""

    def __init__(self, command: list[str], fifo: Path, point: str, count: int) -> None:
        if fifo.exists():
            fifo.unlink()
        os.mkfifo(fifo)
        self.fifo, self.gate = fifo, -1
        env = {**os.environ, HOLD_VARIABLE: f"{point}:{count}:{fifo}"}
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)

    def wait_held(self, timeout: float = 600) -> None:
        """Return once the child waits at the hold point (it ends the test if the child ends first)."""
        deadline = time.monotonic() + timeout
        while self.gate < 0:
            try:
                self.gate = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: the child has not opened the pipe yet
                    raise
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"the child ended before its hold point: {self.process.communicate()}") from None
                if time.monotonic() > deadline:
                    raise AssertionError("the child did not reach its hold point in time") from exc
                time.sleep(0.01)  # polls for progress; no outcome depends on this delay

    def signal(self, sig: int, timeout: float = 600) -> tuple[int, str, str]:
        """Send ``sig`` to the held child; its return code, stdout and stderr."""
        os.kill(self.process.pid, sig)
        out, err = self.process.communicate(timeout=timeout)
        self.release()
        return self.process.returncode, out, err

    def release(self) -> None:
        """Let the child go on past its hold point."""
        if self.gate >= 0:
            os.close(self.gate)
            self.gate = -1
