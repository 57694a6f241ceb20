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
    card = update_card(tmp_path, latency_ms={"b": 2.0}, method="m")
    assert card.latency_ms == {"a": 1.0, "b": 2.0} and read_card(tmp_path).method == "m"


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


def test_float32_error_grows_with_how_ill_conditioned_the_model_is(tiny_net):
    from bespoke.export.onnx_export import float32_error

    calm = float32_error(tiny_net, (1, 3, 16, 16))
    loud = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(6)])
    with torch.no_grad():
        for layer in loud:
            layer.weight.mul_(40.0)  # each layer multiplies the activations' scale: float32 rounding grows with it
    assert 0 < calm < 1e-5 < float32_error(loud, (1, 64))
    assert loud[0].weight.dtype == torch.float32  # the float64 twin is a copy


@pytest.mark.parametrize(("rounding", "accepted"), [(0.1, True), (0.01, False), (float("nan"), False)])
def test_an_export_within_pytorchs_own_float32_error_passes(tmp_path, tiny_net, monkeypatch, rounding, accepted):
    import bespoke.export.onnx_export as ox

    monkeypatch.setattr(ox, "onnx_max_abs_diff", lambda *a, **k: 0.5)
    monkeypatch.setattr(ox, "float32_error", lambda *a, **k: rounding)
    if accepted:  # 0.5 <= FP32_SLACK x 0.1: ORT is as far from exact as PyTorch's float32 is
        assert save_model_dir(tmp_path, tiny_net, _card()).onnx_max_abs_diff == 0.5
        return
    with pytest.raises(BespokeError, match=r"differs from PyTorch by 0\.5") as err:
        save_model_dir(tmp_path, tiny_net, _card())
    assert ("own float32 error is 0.01" in str(err.value)) == (rounding == 0.01)
    assert not (tmp_path / "model.onnx").exists()


def _engine_model(kind: str) -> tuple[torch.nn.Module, dict]:
    """A small model of each of bespoke's own builders, with its card recipe."""
    from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet

    base, base_config = tiny_efficientnet(3, 32), tiny_arch_config(3, 32)
    if kind == "tiny-efficientnet":
        return base, base_config
    if kind == "pruned":
        from bespoke.baselines.pruning import prune_uniform, pruned_arch_config

        model = prune_uniform(base, 0.5, resolution=32)
        return model, pruned_arch_config(base_config, model)
    if kind == "tofa-subnet":
        from bespoke.supernet import build_supernet
        from bespoke.supernet.extract import extract_subnet, subnet_arch_config

        net = build_supernet(base, 32)
        smallest = net.space.smallest()
        sub = extract_subnet(net, smallest)
        return sub, subnet_arch_config("tiny", smallest, sub.spec)
    from bespoke.house.sources import TEACHER, SourceSet
    from bespoke.house.student import STUDENT_BUILDER, build_student

    segments = len(SourceSet({TEACHER: base_config}, (3, 32, 32), lambda _: base).segmentation(TEACHER))
    config = {"builder": STUDENT_BUILDER, "resolution": 32, "num_segments": segments, "num_classes": 3,
              "sources": {TEACHER: base_config}, "alternatives": []}
    return build_student(config), config


@pytest.mark.parametrize("kind", ["tiny-efficientnet", "pruned", "tofa-subnet", "bespoke-block"])
def test_every_command_works_on_every_engines_model_dir_in_a_fresh_process(kind, tmp_path):
    """``bespoke export`` / ``profile`` import no engine: the builder comes from the card's architecture name."""
    import subprocess
    import sys

    model, arch_config = _engine_model(kind)
    assert arch_config["builder"] == kind
    save_model_dir(tmp_path / "m", model, _card(arch_config=arch_config, resolution=32))
    (tmp_path / "t.yaml").write_text("targets:\n  - {name: count, runtime: macs}\n")
    cli = "import sys; from bespoke.cli.main import main; sys.argv[0] = 'bespoke'; main()"
    for argv in (["export", str(tmp_path / "m")],
                 ["profile", str(tmp_path / "m"), "--targets", str(tmp_path / "t.yaml")]):
        done = subprocess.run([sys.executable, "-c", cli, *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    card = read_card(tmp_path / "m")
    assert card.latency["count"]["value"] == card.macs > 0


def test_a_card_with_an_unknown_key_is_refused(tmp_path, tiny_net):
    """``ModelCard`` is ``extra="forbid"``: a typo or an engine's untyped extra is an error, not a silent field."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="meets_budgte"):
        _card(meets_budgte=True)
    save_model_dir(tmp_path, tiny_net, _card())
    on_disk = json.loads((tmp_path / "card.json").read_text())
    (tmp_path / "card.json").write_text(json.dumps({**on_disk, "meets_budgte": True}))
    with pytest.raises(BespokeError, match="meets_budgte"):
        read_card(tmp_path)
