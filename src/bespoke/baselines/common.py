"""What every baseline shares: the data it trains on, CPU-second accounting, saving with costs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from bespoke.export import ModelCard, save_model_dir, update_card
from bespoke.train import cpu_seconds


@dataclass(frozen=True)
class TrainData:
    """Training and test sets of a baseline, and how the card describes them (``info`` -> ``card.data``)."""

    train: Dataset
    test: Dataset
    classes: list[str]
    resolution: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@contextlib.contextmanager
def cpu_timer(costs: dict[str, float], stage: str) -> Iterator[None]:
    """Add the CPU-seconds spent inside the block to ``costs[stage]`` (rounded to 0.1 s)."""
    start = cpu_seconds()
    try:
        yield
    finally:
        costs[stage] = round(costs.get(stage, 0.0) + cpu_seconds() - start, 1)


def save_with_costs(out_dir: str | Path, model: nn.Module, card: ModelCard, costs: dict[str, float]) -> ModelCard:
    """``save_model_dir`` timed as stage ``export``; the card's ``cost_cpu_s`` ends up equal to ``costs``."""
    with cpu_timer(costs, "export"):
        card = save_model_dir(out_dir, model, card)
    return update_card(out_dir, cost_cpu_s=dict(costs))
