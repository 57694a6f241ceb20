"""Elastic modules and extraction: largest == pretrained, extracted == active, ONNX == PyTorch, rebuild from JSON."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from bespoke.export import ModelCard, export_onnx, load_model_dir, save_model_dir
from bespoke.supernet import (
    BUILDER,
    StaticNet,
    build_subnet,
    build_supernet,
    extract_subnet,
    subnet_arch_config,
    to_static,
)
from bespoke.supernet.elastic import ElasticBatchNorm2d, ElasticConv2d
from bespoke.supernet.specs import ConvSpec
from bespoke.supernet.tiny import tiny_efficientnet
from bespoke.targets.measure import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest single-threaded (and do not fight other jobs for the cores)."""
    with torch_threads(1):
        yield


def _perturb_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics so that equality tests are not trivially true for freshly initialised nets."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _sources() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    mbv2 = torchvision.models.mobilenet_v2(weights=None, num_classes=5)
    return {"tiny-timm": _perturb_bn(tiny_efficientnet()), "torchvision-mbv2": _perturb_bn(mbv2)}


@pytest.fixture(scope="module", params=["tiny-timm", "torchvision-mbv2"])
def pair(request):
    source = _sources()[request.param]
    return source, build_supernet(source, 32).eval()


def test_largest_subnet_is_the_source_model(pair) -> None:
    source, net = pair
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = source(x)
        assert torch.allclose(net(x), ref, atol=1e-5, rtol=1e-4)
        assert torch.allclose(to_static(source, 32).eval()(x), ref, atol=1e-6)
        assert torch.allclose(net.get_active_subnet().eval()(x), ref, atol=1e-5, rtol=1e-4)


def test_extracted_subnet_equals_active_supernet_output(pair) -> None:
    _, net = pair
    rng = np.random.default_rng(0)
    for _ in range(4):
        cfg = net.sample_active_subnet(rng)
        x = torch.randn(2, 3, cfg.resolution, cfg.resolution)
        sub = net.get_active_subnet().eval()
        assert isinstance(sub, StaticNet)
        assert not any("Elastic" in type(m).__name__ for m in sub.modules())
        with torch.no_grad():
            assert torch.allclose(sub(x), net(x), atol=1e-5)
        assert sum(p.numel() for p in sub.parameters()) <= sum(p.numel() for p in net.parameters())
    net.set_active_subnet(net.space.largest())


def test_channel_sorting_preserves_the_function() -> None:
    source = _perturb_bn(tiny_efficientnet())
    unsorted = build_supernet(source, 32, sort_channels=False).eval()
    sorted_net = build_supernet(source, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(unsorted(x), sorted_net(x), atol=1e-5)
    block = sorted_net.stages[2][0]
    importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_kernel_transform_starts_as_centre_crop() -> None:
    conv = ElasticConv2d(ConvSpec(4, 4, 7, 1, True, "symmetric"), kernels=(3, 5, 7))
    assert set(conv.transforms.keys()) == {"k3", "k5"}
    conv.set_active(kernel=3)
    assert torch.equal(conv.active_weight(4), conv.weight[:, :, 2:5, 2:5])
    conv.set_active(kernel=5)
    assert torch.equal(conv.active_weight(2), conv.weight[:2, :, 1:6, 1:6])
    with pytest.raises(ValueError):
        conv.set_active(kernel=9)


def test_elastic_bn_updates_only_the_active_prefix() -> None:
    bn = ElasticBatchNorm2d(8)
    bn.train()
    bn(torch.randn(4, 5, 3, 3) + 3.0)
    assert torch.all(bn.running_mean[:5] > 0.1) and torch.all(bn.running_mean[5:] == 0)


def test_extracted_subnet_exports_to_onnx_and_rebuilds_from_json(tmp_path) -> None:
    net = build_supernet(_perturb_bn(tiny_efficientnet()), 32).eval()
    cfg = net.space.sample(np.random.default_rng(5))
    sub = extract_subnet(net, cfg)
    shape = (1, 3, cfg.resolution, cfg.resolution)
    assert export_onnx(sub, tmp_path / "m.onnx", shape, tolerance=1e-4) <= 1e-4
    arch = subnet_arch_config("tiny", cfg, sub.spec)
    assert arch["builder"] == BUILDER
    rebuilt = build_subnet(arch)
    rebuilt.load_state_dict(sub.state_dict())
    card = ModelCard(arch="tofa:tiny", arch_config=arch, engine="tofa", num_classes=3, resolution=cfg.resolution,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    save_model_dir(tmp_path / "dir", sub, card)
    loaded, _ = load_model_dir(tmp_path / "dir")
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        assert torch.allclose(loaded(x), sub(x), atol=1e-6)
        assert torch.allclose(rebuilt.eval()(x), sub(x), atol=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_largest_subnet_equals_pretrained_zoo_model(name) -> None:
    from bespoke.zoo import create_model

    model = create_model(name, num_classes=10, resolution=64).eval()
    net = build_supernet(model, 64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(net(x), ref, atol=1e-4, rtol=1e-4)
        assert torch.allclose(net.get_active_subnet().eval()(x), ref, atol=1e-4, rtol=1e-4)
