"""Optimiser and schedule: AdamW (no decay on norms/biases) with a one-cycle learning rate."""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(model: nn.Module | list[nn.Parameter], *, lr: float, weight_decay: float = 0.05
                   ) -> torch.optim.AdamW:
    """AdamW; 1-D parameters (norm scales, biases) get no weight decay."""
    params = model.parameters() if isinstance(model, nn.Module) else model
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, lr: float,
                   pct_start: float = 0.15) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle schedule over ``total_steps`` optimiser steps."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 1),
                                               pct_start=pct_start, anneal_strategy="cos")
