"""Export and the output contract: verified ONNX, card, reload equality, incomplete dirs never read."""

from __future__ import annotations

import json

import pytest
import torch

from bespoke.errors import BespokeError
from bespoke.export import (
    ModelCard,
    load_model_dir,
    read_card,
    register_arch_builder,
    save_model_dir,
    update_card,
)


def _build_tiny(cfg: dict) -> torch.nn.Module:
    from tests.conftest import TinyNet

    return TinyNet(cfg["num_classes"])


register_arch_builder("tiny-test", _build_tiny)


def _card(**kw) -> ModelCard:
    base = {"arch": "tiny", "arch_config": {"builder": "tiny-test", "num_classes": 3}, "engine": "test",
            "num_classes": 3, "resolution": 16, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    return ModelCard(**{**base, **kw})


def test_save_and_load_model_dir(tmp_path, tiny_net):
    card = save_model_dir(tmp_path / "m", tiny_net, _card(accuracy=0.5))
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.safetensors", "model.onnx", "card.json",
                                                            "card.md"}
    assert card.onnx_max_abs_diff is not None and card.onnx_max_abs_diff < 1e-4
    assert card.params == sum(p.numel() for p in tiny_net.parameters())
    convs_and_linear = 16 * 16 * 8 * 27 + 8 * 8 * 8 * 72 + 24  # fvcore adds batch-norm and pooling on top
    assert convs_and_linear <= card.macs <= 1.1 * convs_and_linear
    model, card2 = load_model_dir(tmp_path / "m")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x), tiny_net.eval()(x))
    assert card2.accuracy == 0.5
    on_disk = json.loads((tmp_path / "m" / "card.json").read_text())
    for key in ("arch", "engine", "num_classes", "resolution", "accuracy", "params", "macs", "onnx_max_abs_diff",
                "latency_ms", "cost_cpu_s"):
        assert key in on_disk


def test_update_card_merges_dicts(tmp_path, tiny_net):
    save_model_dir(tmp_path, tiny_net, _card(latency_ms={"a": 1.0}))
    card = update_card(tmp_path, latency_ms={"b": 2.0}, target="b")
    assert card.latency_ms == {"a": 1.0, "b": 2.0} and read_card(tmp_path).target == "b"


def test_dir_without_card_is_incomplete(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(BespokeError, match="no model card"):
        read_card(tmp_path)
    with pytest.raises(BespokeError, match="not found"):
        read_card(tmp_path / "nope")


def test_unfaithful_export_writes_nothing(tmp_path, tiny_net, monkeypatch):
    import bespoke.export.onnx_export as ox

    monkeypatch.setattr(ox, "onnx_max_abs_diff", lambda *a, **k: 1.0)
    with pytest.raises(BespokeError, match="differs from PyTorch"):
        save_model_dir(tmp_path, tiny_net, _card())
    assert not (tmp_path / "card.json").exists() and not (tmp_path / "model.onnx").exists()
