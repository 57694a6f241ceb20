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
from tests.test_supernet_elastic import _perturb_bn

RES = 32
CONVERTIBLE = ["timm:mobilenetv3_large_100", "timm:mobilenetv3_small_100", "timm:efficientnet_b0",
               "timm:mnasnet_100", "torchvision:mobilenet_v3_small", "torchvision:mnasnet0_5",
               "torchvision:efficientnet_b0",
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
    return _perturb_bn(model, seed)


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
    layout = enumerate_parts(net.spec, net.space, 1)
    assert any("_se" in key for key in layout.parts)
    head = layout.parts[layout.heads[RES]][0]()
    assert head.fc is not None  # the pooled linear layer is costed with the head


# --- fine-tuning memory format -------------------------------------------------------------------------------


def test_auto_memory_format_avoids_channels_last_for_repvgg_on_cpu() -> None:
    from bespoke.train.finetune import resolve_memory_format

    repvgg = timm.create_model("repvgg_a0", pretrained=False, num_classes=3)
    plain = torchvision.models.mobilenet_v3_small(weights=None, num_classes=3)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_memory_format(repvgg, "auto", cpu) == "contiguous"
    assert resolve_memory_format(repvgg, "auto", cuda) == "channels_last"
    assert resolve_memory_format(plain, "auto", cpu) == "channels_last"
    assert resolve_memory_format(repvgg, "channels_last", cpu) == "channels_last"  # an explicit choice stands
    assert resolve_memory_format(plain, "contiguous", cpu) == "contiguous"
    # a student assembled from a RepVGG teacher's traced segments no longer names RepVggBlock: its teacher decides
    assert resolve_memory_format(plain, "auto", cpu, repvgg) == "contiguous"


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_finetune_trains_in_the_requested_memory_format(fmt, tiny_net, tiny_splits, tmp_path) -> None:
    from bespoke.train import FinetuneConfig, finetune

    seen: list[bool] = []
    conv = next(m for m in tiny_net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_pre_hook(lambda _m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous()))
    cfg = FinetuneConfig(epochs=1, batch_size=8, device="cpu", memory_format=fmt)
    result = finetune(tiny_net, tiny_splits.train, tiny_splits.test, cfg, mean=(0.5,) * 3, std=(0.5,) * 3,
                      out_dir=tmp_path)
    assert result.memory_format == fmt
    assert seen and seen[0] == (fmt == "channels_last")  # the first training step's input layout
    assert all(p.is_contiguous() for p in tiny_net.parameters())  # plain layout afterwards, whatever was used


# --- CLI: memory format, model arguments, conv heads -----------------------------------------------------------


def _job(tmp_path, model: str, resolution: int, extra: str = "") -> list[str]:
    from tests.test_cli import make_image_folder

    data = make_image_folder(tmp_path / "data", n=4)
    (tmp_path / "job.yaml").write_text(f"data: {data}\nmodel: '{model}'\nresolution: {resolution}\npretrained: false\n"
                                       f"train:\n  batch_size: 4\n  epochs: 1\n{extra}")
    return ["finetune", "--config", str(tmp_path / "job.yaml"), "--out", str(tmp_path / "m")]


def _card(tmp_path) -> dict:
    import json

    return json.loads((tmp_path / "m" / "card.json").read_text())


def test_cli_memory_format_is_recorded_in_the_recipe(tmp_path, capsys) -> None:
    from tests.test_cli import run_cli

    code, _, err = run_cli([*_job(tmp_path, "torchvision:squeezenet1_1", 32), "--memory-format", "contiguous"],
                           capsys)
    assert code == 0, err
    card = _card(tmp_path)
    assert card["provenance"]["recipe"]["memory_format"] == "contiguous"


def test_cli_bad_memory_format_is_one_line(tmp_path, capsys) -> None:
    from tests.test_cli import _assert_one_line_error, run_cli

    code, _, err = run_cli([*_job(tmp_path, "timm:resnet18", 16), "--memory-format", "nhwc"], capsys)
    _assert_one_line_error(code, err, "memory_format")
    assert not (tmp_path / "m" / "card.json").exists()


def test_conv_classifier_head_finetunes_exports_and_rebuilds(tmp_path, capsys) -> None:
    from bespoke.export import load_model_dir
    from tests.test_cli import run_cli

    code, _, err = run_cli(_job(tmp_path, "torchvision:squeezenet1_1", 32), capsys)
    assert code == 0, err
    model, card = load_model_dir(tmp_path / "m")
    assert card.num_classes == 2 and card.provenance["recipe"]["memory_format"] == "channels_last"
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2)


def test_reset_head_replaces_a_conv_classifier() -> None:
    from bespoke.zoo import head_classes, head_linear, reset_head

    model = torchvision.models.squeezenet1_0(weights=None, num_classes=1000)
    name, layer = head_linear(model)
    assert name == "classifier.1" and isinstance(layer, torch.nn.Conv2d) and head_classes(layer) == 1000
    reset_head(model, 7)
    assert head_classes(head_linear(model)[1]) == 7
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_model_args_build_a_vit_at_a_small_resolution_and_rebuild_from_the_card(tmp_path, capsys) -> None:
    from bespoke.export import load_model_dir
    from tests.test_cli import run_cli

    argv = _job(tmp_path, "timm:vit_tiny_patch16_224", 32)
    code, _, err = run_cli([*argv, "--model-args", "img_size=32"], capsys)
    assert code == 0, err
    assert _card(tmp_path)["arch_config"]["model_args"] == {"img_size": 32}
    model, _ = load_model_dir(tmp_path / "m")
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize(("args", "needles"), [
    ([], ("does not accept 32 px input", "--model-args img_size=32")),
    (["--model-args", "img_size"], ("'img_size' is not key=value",)),
    (["--model-args", "no_such_arg=1"], ("cannot be built with model arguments no_such_arg=1",
                                         "unexpected keyword argument 'no_such_arg'")),
    (["--model-args", "num_classes=3"], ("'num_classes' is set by bespoke itself",)),
])
def test_model_args_errors_are_one_line(args, needles, tmp_path, capsys) -> None:
    from tests.test_cli import _assert_one_line_error, run_cli

    code, _, err = run_cli([*_job(tmp_path, "timm:vit_tiny_patch16_224", 32), *args], capsys)
    _assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "m" / "card.json").exists()


def test_zoo_model_refuses_model_args() -> None:
    from bespoke.zoo import create_model

    with pytest.raises(BespokeError, match="mobilenet_v2 takes no model arguments"):
        create_model("mobilenet_v2", pretrained=False, resolution=32, model_args={"width_mult": 0.5})


def test_model_args_are_typed_as_yaml_scalars() -> None:
    from bespoke.zoo import parse_model_args

    parsed = parse_model_args(["img_size=64,drop_rate=0.1", "dynamic_img_size=true", "global_pool=avg",
                               "act_layer=null", "name='64'"])
    assert parsed == {"img_size": 64, "drop_rate": 0.1, "dynamic_img_size": True, "global_pool": "avg",
                      "act_layer": None, "name": "64"}
    assert parse_model_args({"img_size": 64}) == {"img_size": 64}
    for bad in (["a=[1, 2]"], ["1x=3"], ["a=1", "a=2"], ["a=.inf"]):
        with pytest.raises(BespokeError):
            parse_model_args(bad)


def test_supernet_engine_end_to_end_on_a_mobilenetv3_teacher(tmp_path) -> None:
    """train -> select on a squeeze-excite, h-swish teacher: a delivered subnet within a params budget."""
    from PIL import Image
    from typer.testing import CliRunner

    from bespoke.cli.supernet import supernet_app
    from bespoke.export import ModelCard, load_model_dir, save_model_dir, zoo_arch_config
    from bespoke.zoo import create_model

    name = "timm:mobilenetv3_small_050"
    data = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    # noise normalised to unit variance, like the random input the ONNX check feeds: a random-init net's
    # activations grow with every layer when BN statistics come from narrower images (flat colours), until the
    # absolute ONNX tolerance fails on float rounding alone
    for split, count in (("train", 12), ("test", 6)):
        for ci, cls in enumerate("rgb"):
            (data / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 256, (RES, RES, 3), generator=g, dtype=torch.uint8)
                pixels[: RES // 2, :, ci] = 255
                Image.fromarray(pixels.numpy()).save(data / split / cls / f"{i}.png")
    card = ModelCard(arch=name, arch_config=zoo_arch_config(name, 3, RES), engine="finetune", num_classes=3,
                     resolution=RES, mean=(0.5, 0.5, 0.5), std=(0.29, 0.29, 0.29))
    teacher = create_model(name, num_classes=3, pretrained=False, resolution=RES)
    for m in teacher.modules():  # BN statistics of real activations, as a fine-tuned teacher has them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        teacher.train()(torch.randn(32, 3, RES, RES))
    save_model_dir(tmp_path / "teacher", teacher.eval(), card)
    runner = CliRunner()
    result = runner.invoke(supernet_app, [
        "train", "--teacher", str(tmp_path / "teacher"), "--data", str(data), "--labels", "0.5", "--out",
        str(tmp_path / "sn"), "--steps", "2", "--batch-size", "4", "--labelled-only"])
    assert result.exit_code == 0, result.output
    (tmp_path / "targets.yaml").write_text("targets:\n  - {name: small, runtime: params, budget: 0.8x}\n")
    (tmp_path / "select.yaml").write_text("predictor_val_images: 10\ncalib_images: 16\npopulation: 8\n"
                                          "generations: 2\ncalibration_subnets: 2\n")
    result = runner.invoke(supernet_app, ["select", str(tmp_path / "sn"), "--targets", str(tmp_path / "targets.yaml"),
                                          "--out", str(tmp_path / "out"), "--predictor-samples", "8", "--config",
                                          str(tmp_path / "select.yaml")])
    assert result.exit_code == 0, result.output
    model, card = load_model_dir(tmp_path / "out" / "small")
    assert card.engine == "tofa" and card.params <= card.budget_resolved
    net = card.arch_config["net"]
    assert "pooled_fc" in net and any("se" in b for b in net["blocks"])
    assert model.spec == NetSpec.from_dict(net)
