"""Plain (static) modules built from specs: what an extracted subnet is made of. No elastic machinery here.

Convolutions with symmetric padding are ``nn.Conv2d``; TF-SAME convolutions whose padding is asymmetric at the
spec's resolution are :class:`bespoke.zoo.StaticSameConv2d` (a constant ``Pad`` in ONNX), exactly as the zoo
builds EfficientNet-Lite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bespoke.supernet.specs import BlockSpec, ConvSpec, LayerSpec, NetSpec, SESpec
from bespoke.zoo import StaticSameConv2d


def make_activation(name: str | None) -> nn.Module:
    """The activation module of a spec's ``act`` or squeeze-excite ``gate`` name (``None``: identity)."""
    table: dict[str | None, type[nn.Module]] = {None: nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6,
                                                "silu": nn.SiLU, "hardswish": nn.Hardswish,
                                                "sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}
    return table[name]()


def make_conv(spec: ConvSpec, size: int) -> nn.Conv2d:
    """A static conv for input ``size``: ``nn.Conv2d`` if the padding is symmetric, else ``StaticSameConv2d``."""
    left, right, top, bottom = spec.pads(size)
    if left == right == top == bottom:
        return nn.Conv2d(spec.in_ch, spec.out_ch, spec.kernel, stride=spec.stride, padding=left,
                         groups=spec.groups, bias=False)
    return StaticSameConv2d(spec.in_ch, spec.out_ch, spec.kernel, stride=spec.stride, groups=spec.groups,
                            bias=False, pad=(left, right, top, bottom))


class ConvBNAct(nn.Module):
    """conv -> BatchNorm2d -> activation."""

    def __init__(self, spec: LayerSpec, size: int) -> None:
        super().__init__()
        self.conv = make_conv(spec.conv, size)
        self.bn = nn.BatchNorm2d(spec.conv.out_ch, eps=spec.bn_eps)
        self.act = make_activation(spec.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """x * gate(expand(act(reduce(mean(x))))) with biased 1x1 convs (timm's and torchvision's layout)."""

    def __init__(self, spec: SESpec) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(spec.channels, spec.reduced, 1)
        self.act = make_activation(spec.act)
        self.expand = nn.Conv2d(spec.reduced, spec.channels, 1)
        self.gate = make_activation(spec.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


class MBConv(nn.Module):
    """Inverted residual block: [expand] -> depthwise -> [squeeze-excite] -> project (+ input when ``skip``)."""

    def __init__(self, spec: BlockSpec, size: int) -> None:
        super().__init__()
        self.expand = ConvBNAct(spec.expand, size) if spec.expand is not None else None
        self.dw = ConvBNAct(spec.dw, size)
        self.se = SqueezeExcite(spec.se) if spec.se is not None else None
        self.project = ConvBNAct(spec.project, spec.dw.conv.out_size(size))
        self.skip = spec.skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dw(x if self.expand is None else self.expand(x))
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return out + x if self.skip else out


class PooledFc(nn.Module):
    """The biased linear layer and activation between pooling and the classifier (MobileNetV3's head)."""

    def __init__(self, in_features: int, features: int, act: str | None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, features)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


def make_pooled_fc(spec: NetSpec) -> PooledFc | None:
    """The spec's pooled linear layer, if it has one (shared by the static and the elastic head)."""
    if spec.pooled_fc is None:
        return None
    return PooledFc(spec.num_features, spec.pooled_fc.features, spec.pooled_fc.act)


class Head(nn.Module):
    """[1x1 conv-BN-act] -> global average pool -> [linear-act] -> dropout -> linear classifier."""

    def __init__(self, spec: NetSpec, size: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(spec.head, size) if spec.head is not None else None
        self.fc = make_pooled_fc(spec)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.classifier_in, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.fc is not None:
            x = self.fc(x)
        return self.classifier(self.dropout(x))


class StaticNet(nn.Module):
    """A plain classifier rebuilt from a :class:`NetSpec` (``spec`` is kept for export and cards)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        sizes = spec.block_sizes()
        self.stem = ConvBNAct(spec.stem, spec.resolution)
        self.blocks = nn.Sequential(*(MBConv(b, s) for b, s in zip(spec.blocks, sizes, strict=False)))
        self.head = Head(spec, sizes[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))
