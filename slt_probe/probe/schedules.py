"""When the probe measures: log-spaced (dense early, where most of training's changes happen),
linear, or an explicit list of steps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def make_schedule(
    kind: str | Sequence[int] = "log",
    num_points: int = 30,
    total_steps: int | None = None,
    start: int = 0,
) -> list[int]:
    """Sorted unique steps in [start, total_steps] at which to measure.

    ``"log"``: ``num_points`` steps spaced evenly in log(step) from ``start`` to ``total_steps``
    (both included; in log(step + 1) when ``start`` is 0); ``"linear"``: evenly spaced; a
    sequence: those steps.
    Rounding can merge nearby early steps of a log schedule; the duplicates are filled in with the
    nearest unused steps so that ``num_points`` points are kept whenever the range allows.
    """
    if not isinstance(kind, str):
        steps = sorted({int(s) for s in kind})
        if any(s < 0 for s in steps):
            raise ValueError(f"schedule steps must be >= 0, got {steps[0]}")
        if not steps:
            raise ValueError("schedule: an explicit list of steps must not be empty")
        return steps
    if kind not in ("log", "linear"):
        raise ValueError(f"schedule must be 'log', 'linear' or a list of steps, got {kind!r}")
    if total_steps is None:
        raise ValueError(f"schedule {kind!r} needs total_steps (the last training step)")
    if int(num_points) != num_points or num_points < 1:
        raise ValueError(f"num_points must be a positive integer, got {num_points}")
    if total_steps < start:
        raise ValueError(f"total_steps ({total_steps}) must be >= start ({start})")
    span = total_steps - start + 1
    if num_points >= span:
        return list(range(start, total_steps + 1))
    if kind == "linear":
        raw = np.linspace(start, total_steps, num_points)
    else:
        raw = (
            np.geomspace(start, total_steps, num_points)
            if start > 0
            else (np.geomspace(1, span, num_points) - 1)
        )
    steps = sorted({int(round(s)) for s in raw})
    # Fill merged points with the smallest unused steps (the dense early part of the schedule).
    candidate = start
    while len(steps) < num_points:
        if candidate not in steps:
            steps.append(candidate)
            steps.sort()
        candidate += 1
    return steps
