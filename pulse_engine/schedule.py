"""PULSE's learning-rate multipliers, as functions of the 0-based step ``x`` out of ``steps``."""

from __future__ import annotations

from collections.abc import Callable

SCHEDULES = ("fixed", "linear1cycle", "linear1cycledrop")


def _triangle(x: float, length: float) -> float:
    """0.1 at 0, 1.0 at length/2, 0.1 at length."""
    return (9.0 * (1.0 - 2.0 * abs(x / length - 0.5)) + 1.0) / 10.0


def lr_multiplier(name: str, steps: int) -> Callable[[int], float]:
    """The multiplier m(x) applied to the base learning rate at step x (0 ≤ x < steps).

    - ``fixed``: 1.
    - ``linear1cycle``: 0.1 → 1.0 at steps/2 → 0.1.
    - ``linear1cycledrop`` (PULSE's default): the same triangle over the first 90% of the
      steps, then a linear fall from 0.1 towards 0.001 over the last 10%.
    """
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if name == "fixed":
        return lambda x: 1.0
    if name == "linear1cycle":
        return lambda x: _triangle(x, steps)
    if name == "linear1cycledrop":
        cycle = 0.9 * steps
        drop = 0.1 * steps

        def multiplier(x: int) -> float:
            if x < cycle:
                return _triangle(x, cycle)
            return 0.1 + (x - cycle) / drop * (0.001 - 0.1)

        return multiplier
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
