"""Quantization-aware training: fake quantization that rounds like the INT8 graph, removed without a trace."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bespoke.quantize.qat import FakeQuantized, QATConfig, fake_quantized


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def test_weights_round_per_channel_to_int8_and_activations_to_uint8() -> None:
    net, x = _net().eval(), torch.randn(4, 3, 8, 8)
    plain = net(x)
    prepared = FakeQuantized(net, QATConfig(reduce_range=False))
    assert prepared.layers == 2
    w, original = net[0].weight, net[0].parametrizations.weight.original  # what the forward pass sees; the float
    scale = (original.detach().abs().flatten(1).amax(1) / 127)[:, None, None, None]  # onnxruntime's: max|w| / 127
    assert torch.allclose(w / scale, torch.round(w / scale), atol=1e-3) and (w / scale).abs().max() <= 127.001
    prepared.calibrate([x])
    prepared.round_activations(True)
    rounded = net(x)
    assert not torch.equal(rounded, plain) and torch.allclose(rounded, plain, atol=0.1)
    assert float(net[2].qat_max) > 0 and float(net[2].qat_min) == 0  # ReLU6 output range tracked


def test_gradients_pass_straight_through_and_stripping_leaves_a_plain_model() -> None:
    net = _net().train()
    keys = set(net.state_dict())
    with fake_quantized(net, calibration=[torch.randn(2, 3, 8, 8)]):
        loss = net(torch.randn(2, 3, 8, 8)).sum()
        loss.backward()
        grad = net[0].parametrizations.weight.original.grad
        assert grad is not None and grad.abs().sum() > 0
    assert set(net.state_dict()) == keys and not hasattr(net[0], "parametrizations")
    assert "qat_min" not in dict(net.named_buffers()).keys() | {k.split(".")[-1] for k in net.state_dict()}


@pytest.mark.parametrize("reduce_range", [True, False])
def test_reduce_range_uses_seven_bit_weights(reduce_range: bool) -> None:
    net = _net()
    FakeQuantized(net, QATConfig(reduce_range=reduce_range))
    w, original = net[0].weight, net[0].parametrizations.weight.original
    qmax = 64 if reduce_range else 127
    steps = w / (original.detach().abs().flatten(1).amax(1)[:, None, None, None] / qmax)
    assert torch.allclose(steps, torch.round(steps), atol=1e-3) and steps.abs().max() <= qmax + 1e-3
