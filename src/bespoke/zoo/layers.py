"""Layers the zoo needs that torch/timm do not give in the form we want."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StaticSameConv2d(nn.Conv2d):
    """TensorFlow 'SAME' convolution with the padding fixed for one input size.

    timm's ``Conv2dSame`` computes its padding from the input shape at run time, which torch.fx cannot trace and
    ONNX exports as a chain of shape ops. For a known resolution the padding is a constant; the state-dict keys
    stay those of ``nn.Conv2d`` so weights move freely between the two.
    """

    def __init__(self, *args, pad: tuple[int, int, int, int] = (0, 0, 0, 0), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pad = tuple(int(p) for p in pad)  # (left, right, top, bottom) as F.pad wants

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", same_pad={self.pad}"


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF SAME padding (before, after) along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def freeze_same_padding(model: nn.Module, resolution: int) -> nn.Module:
    """Replace every dynamic SAME conv (timm ``Conv2dSame``) by a :class:`StaticSameConv2d` for ``resolution``.

    The input size each conv sees is found with one dummy forward pass; modules are swapped in place.
    """
    from timm.layers import Conv2dSame

    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, Conv2dSame):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, inp, name=name: sizes.__setitem__(name, tuple(inp[0].shape[-2:]))))
    if not hooks:
        return model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    model.train(was_training)
    for h in hooks:
        h.remove()
    for name, (h, w) in sizes.items():
        old = model.get_submodule(name)
        top, bottom = same_padding(h, old.kernel_size[0], old.stride[0], old.dilation[0])
        left, right = same_padding(w, old.kernel_size[1], old.stride[1], old.dilation[1])
        new = StaticSameConv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                               dilation=old.dilation, groups=old.groups, bias=old.bias is not None,
                               pad=(left, right, top, bottom))
        new.load_state_dict(old.state_dict())
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """TF-ported weights carry momentum 0.01 (TF 0.99); short fine-tunes on small data need ~0.1."""
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = momentum
