"""The elastic network (the supernet): stem, stages of elastic blocks, head; one active subnet at a time."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.supernet.elastic.block import ElasticConvBNAct, ElasticMBConv
from bespoke.supernet.space import SearchSpace, SubnetConfig, subnet_spec
from bespoke.supernet.specs import NetSpec
from bespoke.supernet.static import StaticNet, make_pooled_fc


class ElasticHead(nn.Module):
    """[1x1 conv-BN-act] -> global average pool -> [linear-act] -> dropout -> classifier (same keys as the static
    head)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.conv = ElasticConvBNAct(spec.head) if spec.head is not None else None
        self.fc = make_pooled_fc(spec)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.classifier_in, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.fc is not None:
            x = self.fc(x)
        return self.classifier(self.dropout(x))


class ElasticNet(nn.Module):
    """A weight-sharing supernet over ``space`` whose largest subnet is ``spec``.

    The input resolution is the caller's business: feed images of ``active.resolution`` (training resizes
    batches to it). ``get_active_subnet()`` returns a plain :class:`StaticNet` with copied, sliced weights.
    """

    def __init__(self, spec: NetSpec, space: SearchSpace) -> None:
        super().__init__()
        if sum(space.stage_lengths) != len(spec.blocks):
            raise BespokeError(f"search space has {sum(space.stage_lengths)} blocks, the network "
                               f"{len(spec.blocks)}", "the search space belongs to another network")
        self.spec = spec
        self.space = space
        self.stem = ElasticConvBNAct(spec.stem)
        stages, start = [], 0
        for st in space.stages:
            blocks = spec.blocks[start:start + len(st.blocks)]
            stages.append(nn.ModuleList(ElasticMBConv(b, c) for b, c in zip(blocks, st.blocks, strict=True)))
            start += len(st.blocks)
        self.stages = nn.ModuleList(stages)
        self.head = ElasticHead(spec)
        self._active = space.largest()

    @property
    def active(self) -> SubnetConfig:
        return self._active

    def set_active_subnet(self, cfg: SubnetConfig) -> None:
        """Activate subnet ``cfg``; anything outside the search space raises ``BespokeError``."""
        cfg = self.space.check(cfg)
        for stage, blocks in zip(self.stages, cfg.stages, strict=True):
            for block, bcfg in zip(stage, blocks, strict=False):
                block.set_active(bcfg)
        self._active = cfg

    def sample_active_subnet(self, rng: np.random.Generator) -> SubnetConfig:
        """Activate and return a random subnet drawn from ``rng`` (same generator state -> same subnet)."""
        cfg = self.space.sample(rng)
        self.set_active_subnet(cfg)
        return cfg

    def set_largest(self) -> SubnetConfig:
        self.set_active_subnet(self.space.largest())
        return self._active

    def set_smallest(self) -> SubnetConfig:
        self.set_active_subnet(self.space.smallest())
        return self._active

    def active_config(self) -> dict:
        """The active subnet as JSON-able data (see :meth:`SubnetConfig.to_dict`)."""
        return self._active.to_dict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage, depth in zip(self.stages, self._active.depths, strict=True):
            for block in stage[:depth]:
                x = block(x)
        return self.head(x)

    def active_spec(self) -> NetSpec:
        """The static architecture of the active subnet."""
        return subnet_spec(self.spec, self.space, self._active)

    def get_active_subnet(self) -> StaticNet:
        """A standalone :class:`StaticNet` of the active subnet, weights copied (no elastic machinery)."""
        net = StaticNet(self.active_spec())
        state = {f"stem.{k}": v for k, v in self.stem.static_state(self.spec.stem.conv.in_ch).items()}
        index = 0
        for stage, depth in zip(self.stages, self._active.depths, strict=True):
            for block in stage[:depth]:
                state.update({f"blocks.{index}.{k}": v for k, v in block.static_state().items()})
                index += 1
        if self.head.conv is not None:
            in_ch = self.spec.head.conv.in_ch  # type: ignore[union-attr]
            state.update({f"head.conv.{k}": v for k, v in self.head.conv.static_state(in_ch).items()})
        fixed = {"classifier": self.head.classifier, "fc": self.head.fc}
        state.update({f"head.{name}.{k}": v.detach().clone() for name, module in fixed.items() if module is not None
                      for k, v in module.state_dict().items()})
        net.load_state_dict(state, strict=True)
        return net.train(self.training)

    def sort_channels(self) -> None:
        """Reorder every block's hidden channels by importance (function-preserving; see ElasticMBConv)."""
        for stage in self.stages:
            for block in stage:
                block.sort_hidden()
