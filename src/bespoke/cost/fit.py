"""The calibration line of a cost table: whole-model value against the combined value of its parts.

A part measured alone keeps its weights and activations in cache, a whole model streams them, so for latency what
measuring in pieces misses grows with the work: the line ``whole = slope x parts + intercept`` is fitted through
whole models measured on the table's scale (the reference model and calibration models). Theil-Sen (median of the
pairwise slopes, intercept the median residual) keeps one odd point from tilting it; its leave-one-out error says
how far the table's predictions can be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

Point = tuple[float, float]  # (combined parts, measured whole)


def theil_sen(points: Sequence[Point]) -> tuple[float, float]:
    """``(slope, intercept)`` through ``points``: slope 1 through a single point, ``(1, 0)`` for none; the slope is
    never negative (a whole model never gets cheaper as its parts grow)."""
    if not points:
        return 1.0, 0.0
    x, y = (np.array(v, dtype=float) for v in zip(*points, strict=True))
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    ok = np.abs(dx) > 1e-12
    slope = max(float(np.median((y[j] - y[i])[ok] / dx[ok])), 0.0) if ok.any() else 1.0
    return slope, float(np.median(y - slope * x))


class LooError(BaseModel):
    """Leave-one-out error of the line: per point, (prediction from the others - measured) / measured."""

    model_config = ConfigDict(extra="forbid")

    per_point: list[float]
    max_abs: float | None

    def __str__(self) -> str:
        if self.max_abs is None:
            return "leave-one-out error: too few points"
        return f"leave-one-out error max {100 * self.max_abs:.1f} % over {len(self.per_point)} points"


def leave_one_out(points: Sequence[Point]) -> LooError:
    """Each point predicted by the line through the others (needs at least 3 points to say anything)."""
    if len(points) < 3:
        return LooError(per_point=[], max_abs=None)
    errors = []
    for k, (x, y) in enumerate(points):
        slope, intercept = theil_sen([p for i, p in enumerate(points) if i != k])
        errors.append(round((slope * x + intercept - y) / y, 6) if y else 0.0)
    return LooError(per_point=errors, max_abs=max(abs(e) for e in errors))
