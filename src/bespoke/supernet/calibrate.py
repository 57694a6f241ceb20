"""Batch-norm recalibration of one extracted subnet, and quick accuracy on cached tensors.

Shared BN statistics of a supernet fit no single subnet, so each chosen subnet gets its own: running statistics
are reset and re-estimated (cumulative average) from a few hundred training images. The function works on the
module it is given; there is no global switch.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/var of ``model`` on ``images``; returns it in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    device = next(model.parameters()).device
    model.train()
    try:
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start:start + batch_size]
            if chunk.shape[0] > 1:
                model(chunk.to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 256) -> float:
    """Top-1 accuracy (0-1) of ``model`` in eval mode on image/label tensors."""
    if labels.numel() == 0:
        return float("nan")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        out = model(images[start:start + batch_size].to(device))
        correct += int((out.argmax(1).cpu() == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / labels.numel()
