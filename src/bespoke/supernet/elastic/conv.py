"""Elastic convolution: max-size weights, sliced to the active channels and kernel size at every forward.

The active input width is read from the input itself; the active output width is ``active_out`` (ignored for a
depthwise conv, whose width follows its input). A smaller depthwise kernel is the centre crop of the next larger
one passed through a learned ``k*k x k*k`` transform, identity-initialised (once-for-all's kernel transform), so
at the start of training a small kernel is exactly the centre crop. Padding is computed from the input size:
TF-SAME (possibly asymmetric) or symmetric ``k // 2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bespoke.supernet.specs import ConvSpec


class ElasticConv2d(nn.Module):
    """A bias-free conv holding the weights of ``spec`` (its largest form); see the module docstring."""

    def __init__(self, spec: ConvSpec, kernels: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.spec = spec
        self.weight = nn.Parameter(torch.empty(spec.out_ch, 1 if spec.depthwise else spec.in_ch,
                                               spec.kernel, spec.kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        smaller = sorted({k for k in kernels if k < spec.kernel}, reverse=True)
        if smaller and not spec.depthwise:
            raise ValueError("only depthwise convolutions have an elastic kernel size")
        self.kernels = (*sorted(smaller), spec.kernel)
        # one transform per step down: 7 -> 5 uses "k5", 5 -> 3 uses "k3" (names are state-dict keys)
        self.transforms = nn.ParameterDict({f"k{k}": nn.Parameter(torch.eye(k * k)) for k in smaller})
        self.active_kernel = spec.kernel
        self.active_out = spec.out_ch

    def set_active(self, *, kernel: int | None = None, out_ch: int | None = None) -> None:
        if kernel is not None:
            if kernel not in self.kernels:
                raise ValueError(f"kernel {kernel} not in {self.kernels}")
            self.active_kernel = kernel
        if out_ch is not None:
            if not 0 < out_ch <= self.spec.out_ch:
                raise ValueError(f"out_ch {out_ch} outside 1..{self.spec.out_ch}")
            self.active_out = out_ch

    def active_weight(self, in_ch: int) -> torch.Tensor:
        """The weight tensor of the active sub-conv for ``in_ch`` input channels."""
        if self.spec.depthwise:
            weight = self.weight[:in_ch]
            k = self.spec.kernel
            for step in sorted((s for s in self.kernels if s < k), reverse=True):
                if step < self.active_kernel:
                    break
                start = (k - step) // 2
                crop = weight[:, :, start:start + step, start:start + step].reshape(-1, step * step)
                weight = F.linear(crop, self.transforms[f"k{step}"]).reshape(in_ch, 1, step, step)
                k = step
            return weight
        return self.weight[: self.active_out, :in_ch]

    def pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        k = self.active_kernel
        spec = ConvSpec(1, 1, k, self.spec.stride, False, self.spec.pad_mode)
        left, right, _, _ = spec.pads(width)
        _, _, top, bottom = spec.pads(height)
        return left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_ch = x.shape[1]
        weight = self.active_weight(in_ch)
        groups = in_ch if self.spec.depthwise else 1
        left, right, top, bottom = self.pads(x.shape[-2], x.shape[-1])
        if left == right == top == bottom:
            return F.conv2d(x, weight, None, self.spec.stride, left, 1, groups)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, None, self.spec.stride, 0, 1, groups)

    def extra_repr(self) -> str:
        return f"{self.spec}, kernels={self.kernels}"
