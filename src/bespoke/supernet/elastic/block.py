"""Elastic layers and blocks: conv-BN-act, squeeze-excite and the inverted residual with elastic kernel size and
hidden width."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bespoke.supernet.elastic.bn import ElasticBatchNorm2d
from bespoke.supernet.elastic.conv import ElasticConv2d
from bespoke.supernet.space import BlockChoices, BlockConfig, block_variant, hidden_channels
from bespoke.supernet.specs import BlockSpec, LayerSpec, SESpec
from bespoke.supernet.static import make_activation


class ElasticConvBNAct(nn.Module):
    """Elastic twin of :class:`bespoke.supernet.static.ConvBNAct` (same state-dict keys, plus kernel transforms)."""

    def __init__(self, spec: LayerSpec, kernels: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.spec = spec
        self.conv = ElasticConv2d(spec.conv, kernels)
        self.bn = ElasticBatchNorm2d(spec.conv.out_ch, eps=spec.bn_eps)
        self.act = make_activation(spec.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def static_state(self, in_ch: int) -> dict[str, torch.Tensor]:
        """Weights of the active sub-layer for ``in_ch`` inputs, keyed like the static twin."""
        out_ch = in_ch if self.conv.spec.depthwise else self.conv.active_out
        state = {"conv.weight": self.conv.active_weight(in_ch)}
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"bn.{name}"] = getattr(self.bn, name)[:out_ch]
        state["bn.num_batches_tracked"] = self.bn.num_batches_tracked
        return {k: v.detach().clone() for k, v in state.items()}


class ElasticSqueezeExcite(nn.Module):
    """Elastic twin of :class:`bespoke.supernet.static.SqueezeExcite`: gates any prefix of its channels, with a
    reduced width that follows the input's (:meth:`SESpec.scaled`); weights are sliced, never copied."""

    def __init__(self, spec: SESpec) -> None:
        super().__init__()
        self.spec = spec
        self.reduce = nn.Conv2d(spec.channels, spec.reduced, 1)
        self.act = make_activation(spec.act)
        self.expand = nn.Conv2d(spec.reduced, spec.channels, 1)
        self.gate = make_activation(spec.gate)

    def _weights(self, channels: int) -> dict[str, torch.Tensor]:
        reduced = self.spec.scaled(channels).reduced
        return {"reduce.weight": self.reduce.weight[:reduced, :channels], "reduce.bias": self.reduce.bias[:reduced],
                "expand.weight": self.expand.weight[:channels, :reduced], "expand.bias": self.expand.bias[:channels]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._weights(x.shape[1])
        s = self.act(F.conv2d(x.mean((2, 3), keepdim=True), w["reduce.weight"], w["reduce.bias"]))
        return x * self.gate(F.conv2d(s, w["expand.weight"], w["expand.bias"]))

    def static_state(self, channels: int) -> dict[str, torch.Tensor]:
        """Weights of the active squeeze-excite for ``channels`` inputs, keyed like the static twin."""
        return {k: v.detach().clone() for k, v in self._weights(channels).items()}

    @torch.no_grad()
    def permute_channels(self, order: torch.Tensor) -> None:
        """Follow a reordering of the gated channels, then sort the reduced channels by importance (L1 norm of
        the expanding weights) so a narrower reduced width keeps the ones that matter most."""
        self.reduce.weight.copy_(self.reduce.weight[:, order])
        self.expand.weight.copy_(self.expand.weight[order])
        self.expand.bias.copy_(self.expand.bias[order])
        inner = torch.argsort(self.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True, stable=True)
        self.reduce.weight.copy_(self.reduce.weight[inner])
        self.reduce.bias.copy_(self.reduce.bias[inner])
        self.expand.weight.copy_(self.expand.weight[:, inner])


class ElasticMBConv(nn.Module):
    """Inverted residual with elastic depthwise kernel and hidden width (hidden channels sorted by importance)."""

    def __init__(self, spec: BlockSpec, choices: BlockChoices) -> None:
        super().__init__()
        self.spec = spec
        self.choices = choices
        self.expand = ElasticConvBNAct(spec.expand) if spec.expand is not None else None
        self.dw = ElasticConvBNAct(spec.dw, choices.kernels)
        self.se = ElasticSqueezeExcite(spec.se) if spec.se is not None else None
        self.project = ElasticConvBNAct(spec.project)
        self.active = BlockConfig(choices.kernels[-1], choices.expands[-1])

    def set_active(self, cfg: BlockConfig) -> None:
        """Activate kernel size and expansion ratio ``cfg`` (already checked against the search space)."""
        self.dw.conv.set_active(kernel=cfg.kernel)
        if self.expand is not None:
            self.expand.conv.set_active(out_ch=hidden_channels(self.spec, cfg.expand))
        self.active = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dw(x if self.expand is None else self.expand(x))
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return out + x if self.spec.skip else out

    def active_spec(self) -> BlockSpec:
        return block_variant(self.spec, self.active)

    def static_state(self) -> dict[str, torch.Tensor]:
        """Weights of the active block, keyed like :class:`bespoke.supernet.static.MBConv`."""
        hidden = hidden_channels(self.spec, self.active.expand)
        state: dict[str, torch.Tensor] = {}
        if self.expand is not None:
            state.update({f"expand.{k}": v for k, v in self.expand.static_state(self.spec.in_ch).items()})
        state.update({f"dw.{k}": v for k, v in self.dw.static_state(hidden).items()})
        if self.se is not None:
            state.update({f"se.{k}": v for k, v in self.se.static_state(hidden).items()})
        state.update({f"project.{k}": v for k, v in self.project.static_state(hidden).items()})
        return state

    @torch.no_grad()
    def sort_hidden(self) -> None:
        """Reorder hidden channels by importance (L1 norm of the projection weights), most important first.

        The block computes the same function afterwards; a narrower hidden width then keeps the channels that
        matter most (once-for-all's ``re_organize_middle_weights``).
        """
        if self.expand is None:
            return
        importance = self.project.conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True, stable=True)
        self.project.conv.weight.copy_(self.project.conv.weight[:, order])
        for layer in (self.expand, self.dw):
            layer.conv.weight.copy_(layer.conv.weight[order])
            for name in ("weight", "bias", "running_mean", "running_var"):
                tensor = getattr(layer.bn, name)
                tensor.copy_(tensor[order])
        if self.se is not None:
            self.se.permute_channels(order)
