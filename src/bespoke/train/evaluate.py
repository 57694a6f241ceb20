"""Evaluation: top-1 accuracy and mean cross-entropy over a loader."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    n: int


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, *, device: torch.device | None = None,
                   max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated logits and labels (on CPU) of ``model`` in eval mode; restores the model's mode afterwards."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = batch[0], batch[-1]
        logits.append(model(x.to(device, non_blocking=True)).float().cpu())
        labels.append(torch.as_tensor(y))
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader: DataLoader, *, device: torch.device | None = None,
             max_batches: int | None = None) -> EvalResult:
    """Top-1 accuracy (0–1) and cross-entropy of ``model`` on ``loader``."""
    logits, labels = predict_logits(model, loader, device=device, max_batches=max_batches)
    if labels.numel() == 0:
        return EvalResult(accuracy=float("nan"), loss=float("nan"), n=0)
    acc = (logits.argmax(1) == labels).float().mean().item()
    loss = F.cross_entropy(logits, labels).item()
    return EvalResult(accuracy=acc, loss=loss, n=int(labels.numel()))
