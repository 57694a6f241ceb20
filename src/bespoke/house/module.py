"""The alternative as a plain module: optional input adapter, a body, optional output adapter."""

from __future__ import annotations

import torch
from torch import nn

from bespoke.house.recipe import AdapterSpec


def make_adapter(spec: AdapterSpec | None, spatial: bool, seed: int) -> nn.Module:
    """A 1x1 conv (feature maps) or linear (vectors) projection, seeded; ``nn.Identity`` when ``spec`` is None."""
    if spec is None:
        return nn.Identity()
    with torch.random.fork_rng():  # seeded init that leaves the caller's RNG alone
        torch.manual_seed(seed)
        if spatial:
            return nn.Conv2d(spec.in_channels, spec.out_channels, 1, bias=True)
        return nn.Linear(spec.in_channels, spec.out_channels, bias=True)


class Alternative(nn.Module):
    """``out_adapter(body(in_adapter(x)))`` — what replaces a teacher span. Exports to ONNX as is."""

    def __init__(self, body: nn.Module, in_adapter: nn.Module | None = None,
                 out_adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.in_adapter = in_adapter if in_adapter is not None else nn.Identity()
        self.body = body
        self.out_adapter = out_adapter if out_adapter is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_adapter(self.body(self.in_adapter(x)))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
