"""Cheap multiply-accumulate counts (conv and linear layers, by forward hooks) for filtering candidates."""

from __future__ import annotations

import torch
from torch import nn


def layer_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the conv/linear layers of ``module`` on one input ``x`` (batch of 1)."""
    total = 0

    def hook(layer: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_output = out.numel() // max(out.shape[0], 1)
        if isinstance(layer, nn.modules.conv._ConvNd):
            fan_in = layer.in_channels // layer.groups
            for k in layer.kernel_size:
                fan_in *= k
            total += per_output * fan_in
        elif isinstance(layer, nn.Linear):
            total += per_output * layer.in_features

    layers = (nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total


def projection_macs(c_in: int, c_out: int, shape: tuple[int, ...]) -> int:
    """MACs of a 1x1 conv / linear from ``c_in`` to ``c_out`` channels on an activation of ``shape`` (no batch)."""
    pixels = 1
    for d in shape[1:]:
        pixels *= d
    return c_in * c_out * pixels
