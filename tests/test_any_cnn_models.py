"""Models a user brings (issue 23): the supernet converter across inverted-residual families (with squeeze-excite
and h-swish), the fine-tuning memory format, timm model keyword arguments and conv-classifier heads."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision

from bespoke.errors import BespokeError
from bespoke.export import export_onnx
from bespoke.supernet import build_supernet
from bespoke.supernet.specs import NetSpec
from bespoke.targets.measure import torch_threads

RES = 32
CONVERTIBLE = ["timm:mobilenetv3_large_100", "timm:mobilenetv3_small_100", "timm:efficientnet_b0",
               "timm:mnasnet_100", "torchvision:mobilenet_v3_small",
               # controls: SE-free networks the converter handled before
               "timm:tf_efficientnet_lite0", "timm:mobilenetv2_100"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


def _source(name: str, seed: int = 0) -> torch.nn.Module:
    """A random-init model with random BN statistics (so equality is not trivially true)."""
    torch.manual_seed(seed)
    family, arch = name.split(":", 1)
    model = (timm.create_model(arch, pretrained=False, num_classes=5) if family == "timm"
             else getattr(torchvision.models, arch)(weights=None, num_classes=5))
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", CONVERTIBLE)
def test_converter_largest_subnet_is_the_source_and_a_smaller_one_exports(name, tmp_path) -> None:
    source = _source(name)
    net = build_supernet(source, RES).eval()
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        ref = source(x)
        diff = (net(x) - ref).abs().max().item()
    assert diff < 1e-4 * max(1.0, ref.abs().max().item()), diff

    rng = np.random.default_rng(3)
    for _ in range(20):  # a subnet narrower than the source somewhere (expand choices exist in every family)
        cfg = net.sample_active_subnet(rng)
        if cfg != net.space.largest():
            break
    sub = net.get_active_subnet().eval()
    spec = sub.spec
    assert NetSpec.from_dict(spec.to_dict()) == spec
    xs = torch.randn(2, 3, cfg.resolution, cfg.resolution)
    with torch.no_grad():
        assert torch.allclose(net(xs), sub(xs), atol=1e-5)
    assert export_onnx(sub, tmp_path / "sub.onnx", (1, 3, cfg.resolution, cfg.resolution)) <= 1e-4


@pytest.mark.parametrize("name", ["timm:efficientnet_b0", "timm:mobilenetv3_large_100"])
def test_squeeze_excite_reduced_width_follows_the_active_expand(name) -> None:
    net = build_supernet(_source(name), RES).eval()
    net.set_smallest()
    sub = net.get_active_subnet()
    active = [block.spec for stage, depth in zip(net.stages, net.active.depths, strict=True)
              for block in stage[:depth]]
    pairs = [(b, m) for b, m in zip(active, sub.spec.blocks, strict=True) if b.se is not None]
    assert pairs
    narrowed = [(b, m) for b, m in pairs if m.hidden < b.hidden]
    assert narrowed, "the smallest subnet narrows at least one squeeze-excite block"
    for big, small in narrowed:
        assert small.se.channels == small.hidden
        assert small.se.reduced == max(1, round(big.se.reduced * small.hidden / big.hidden))
    x = torch.randn(1, 3, net.active.resolution, net.active.resolution)
    with torch.no_grad():
        assert torch.allclose(net(x), sub(x), atol=1e-5)


def test_channel_sorting_keeps_the_function_of_squeeze_excite_blocks() -> None:
    source = _source("timm:mobilenetv3_small_100")
    unsorted = build_supernet(source, RES, sort_channels=False).eval()
    net = build_supernet(source, RES).eval()
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        assert torch.allclose(unsorted(x), net(x), atol=1e-5)


def test_ghostnet_is_refused_naming_the_ghost_module() -> None:
    with pytest.raises(BespokeError) as info:
        build_supernet(_source("timm:ghostnet_100"), RES)
    line = f"{info.value.message} ({info.value.hint})"
    assert "\n" not in line
    assert "GhostNet" in line and "GhostModule at blocks.0.0.ghost1" in line


def test_squeeze_excite_subnet_rebuilds_from_its_model_directory(tmp_path) -> None:
    from bespoke.export import ModelCard, load_model_dir, save_model_dir
    from bespoke.supernet import subnet_arch_config
    from bespoke.supernet.efficiency import enumerate_parts

    net = build_supernet(_source("torchvision:mobilenet_v3_small"), RES).eval()
    cfg = net.space.sample(np.random.default_rng(7))
    net.set_active_subnet(cfg)
    sub = net.get_active_subnet().eval()
    assert sub.spec.pooled_fc is not None and any(b.se is not None for b in sub.spec.blocks)
    arch = subnet_arch_config("mbv3s", cfg, sub.spec)
    card = ModelCard(arch="tofa:mbv3s", arch_config=arch, engine="tofa", num_classes=5, resolution=cfg.resolution,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    save_model_dir(tmp_path / "dir", sub, card)
    loaded, _ = load_model_dir(tmp_path / "dir")
    x = torch.randn(2, 3, cfg.resolution, cfg.resolution)
    with torch.no_grad():
        assert torch.allclose(loaded(x), sub(x), atol=1e-6)
    parts, _, heads = enumerate_parts(net.spec, net.space, 1)
    assert any("_se" in key for key, _, _ in parts)
    head = dict((key, module) for key, module, _ in parts)[heads[str(RES)]]
    assert head.fc is not None  # the pooled linear layer is costed with the head
