"""Divergence detection: NaN/inf in a loss stops the step it appears in, with stage and step named."""

from __future__ import annotations

import math

import torch

from bespoke.errors import DivergenceError


def check_finite(loss: torch.Tensor | float, *, stage: str, step: int) -> None:
    """Raise :class:`DivergenceError` if ``loss`` is NaN or infinite."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise DivergenceError(stage, step, value)
