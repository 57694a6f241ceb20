"""Divergence detection: NaN/inf in a loss or a gradient stops the step it appears in, with stage and step
named."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from bespoke.errors import DivergenceError


def check_finite(loss: torch.Tensor | float, *, stage: str, step: int, what: str = "loss") -> None:
    """Raise :class:`DivergenceError` if ``loss`` (or whatever ``what`` names) is NaN or infinite."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise DivergenceError(stage, step, value, what)


def check_finite_grads(parameters: Iterable[torch.Tensor], *, stage: str, step: int) -> float:
    """Raise :class:`DivergenceError` if any gradient holds NaN/inf; call it between ``backward()`` and the
    optimiser step, so a finite loss with a broken gradient never reaches the weights (nor a checkpoint).

    Returns the global gradient norm.
    """
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]))
    check_finite(norm, stage=stage, step=step, what="gradient norm")
    return float(norm)
