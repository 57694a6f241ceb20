"""Choosing calibration models: spread evenly over the predicted cost range, so the line is fitted where the
engine's targets fall (small models near low budgets included), not only where random samples crowd."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spread_by_cost(raw: Sequence[float], count: int) -> list[int]:
    """Indices of ``count`` candidates whose raw (uncalibrated) costs are closest to ``count`` evenly spaced
    levels from the cheapest to the most expensive candidate (each index at most once)."""
    values = np.asarray(raw, dtype=float)
    if count <= 0 or len(values) == 0:
        return []
    levels = np.linspace(values.min(), values.max(), min(count, len(values)))
    chosen: list[int] = []
    for level in levels:
        order = np.argsort(np.abs(values - level), kind="stable")
        chosen.append(int(next(i for i in order if i not in chosen)))
    return chosen
