"""INT8: the precision key, the card's quantization section, post-training quantization of a model directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bespoke.cost import table_settings
from bespoke.errors import BespokeError
from bespoke.export import ModelCard, load_model_dir, read_card, save_model_dir, zoo_arch_config
from bespoke.pipeline import profile_model_dir
from bespoke.quantize import PTQSearch, PTQSettings, predict, quantize_graph, quantize_model_dir, sample_images
from bespoke.quantize.choose import rank_sensitive_nodes
from bespoke.report.rows import collect_cards
from bespoke.targets import Target, targets_from_dicts
from bespoke.targets.int8 import prepare_graph
from bespoke.zoo import create_model
from tests.test_cli import run_cli
from tests.test_reliability_kill import image_folder

ARCH = "timm:mobilenetv3_small_050"
FAST = {"warmup": 1, "repeats": 10}
#: two candidates, so the tests exercise the choice without running the whole grid
#: (a tiny random-init graph is not faster in INT8, so the speed rule is off here; its own test is below)
SMALL = PTQSearch(formats=("QOperator", "QDQ"), weight_types=("uint8",), methods=("MinMax",), reduce_range=(False,),
                  min_speedup=0, max_excluded=0)


def fp32_dir(path: Path, resolution: int = 32) -> Path:
    """A real fp32 model directory (weights, verified ONNX, card), random init."""
    model = create_model(ARCH, pretrained=False, num_classes=3, resolution=resolution)
    card = ModelCard(arch=ARCH, arch_config=zoo_arch_config(ARCH, 3, resolution), engine="finetune", num_classes=3,
                     classes=list("rgb"), resolution=resolution, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                     accuracy=0.5)
    save_model_dir(path, model, card)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    return image_folder(root / "data", n_train=20, n_test=6), fp32_dir(root / "fp32")


def int8_target(**extra) -> Target:
    return Target(name="cpu1-int8", runtime="onnxruntime", precision="int8", **FAST, **extra)


def test_precision_defaults_to_fp32_and_is_part_of_the_table_settings():
    fp32 = Target(name="a", runtime="onnxruntime")
    assert fp32.precision == "fp32"
    assert table_settings(fp32) != table_settings(int8_target())


@pytest.mark.parametrize("runtime", ["torch", "macs", "params", "memory"])
def test_int8_on_a_runtime_that_cannot_run_it_is_refused(runtime):
    with pytest.raises(BespokeError, match="precision int8 needs runtime onnxruntime"):
        targets_from_dicts([{"name": "x", "runtime": runtime, "precision": "int8"}])


def test_sample_images_is_seeded_and_normalised(world):
    from bespoke.data import load_dataset

    splits = load_dataset(str(world[0]), resolution=16)
    a, la = sample_images(splits.train, 5, seed=1, mean=(0.5,) * 3, std=(0.5,) * 3, what="x")
    b, lb = sample_images(splits.train, 5, seed=1, mean=(0.5,) * 3, std=(0.5,) * 3, what="x")
    assert a.shape == (5, 3, 16, 16) and a.dtype == np.float32 and a.min() >= -1 and a.max() <= 1
    assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_quantized_graph_runs_and_sensitivity_names_fp32_nodes(world):
    fp32 = (world[1] / "model.onnx").read_bytes()
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    for fmt in ("QDQ", "QOperator"):
        graph = quantize_graph(fp32, PTQSettings(format=fmt), images)
        assert graph != fp32 and predict(graph, images).shape == (8, 3)
    ranked = rank_sensitive_nodes(fp32, PTQSettings(), images[:4])
    import onnx

    names = {n.name for n in onnx.load_from_string(prepare_graph(fp32)).graph.node}
    assert ranked and set(ranked) <= names
    excluded = quantize_graph(fp32, PTQSettings(nodes_excluded=tuple(ranked[:2])), images)
    assert predict(excluded, images).shape == (8, 3)


def test_quantize_model_dir_writes_a_verified_int8_dir_and_resumes(world, tmp_path):
    data, source = world
    out = tmp_path / "out"
    targets = [Target(name="fp32-only", runtime="onnxruntime", **FAST), int8_target(budget="1.0x")]
    written = quantize_model_dir(source, str(data), targets, out, calibration=8, search=SMALL)
    assert list(written) == ["cpu1-int8"]
    folder = written["cpu1-int8"]
    card = read_card(folder)
    q = card.quantization
    assert card.precision == "int8" and q is not None and card.card_format == 2
    assert q.format in ("QDQ", "QOperator") and q.calibration_images == 8 and "train split" in q.calibration_set
    assert q.agreement >= q.agreement_threshold and card.accuracy == q.int8_accuracy
    assert card.delivery is not None and card.delivery.target == "cpu1-int8" and card.delivery.readings
    assert (folder / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert (folder / "model.onnx").read_bytes() != (source / "model.onnx").read_bytes()
    assert len(card.provenance["ptq"]["candidates"]) == 2
    ModelCard.model_validate(json.loads((folder / "card.json").read_text()))  # round trip
    before = (folder / "card.json").stat().st_mtime_ns
    quantize_model_dir(source, str(data), targets, out, calibration=8, search=SMALL)
    assert (folder / "card.json").stat().st_mtime_ns == before  # complete: skipped

    # the commands that read model dirs: profile on onnxruntime works, re-export and torch are refused
    profiled = profile_model_dir(folder, [Target(name="ort", runtime="onnxruntime", **FAST)])
    assert "ort" in profiled.latency_ms
    with pytest.raises(BespokeError, match="torch"):
        profile_model_dir(folder, [Target(name="eager", runtime="torch", **FAST)])
    rows = collect_cards(out)
    assert [r.method for r in rows] == [f"finetune:{ARCH} int8"] and rows[0].accuracy == q.int8_accuracy
    model, loaded = load_model_dir(folder)
    with pytest.raises(BespokeError, match="not re-exported"):
        save_model_dir(folder, model, loaded)


def test_card_quantization_section_is_bounded_and_tied_to_precision(world):
    card = read_card(world[1])
    assert card.precision == "fp32" and card.quantization is None
    data = card.model_dump(mode="json")
    with pytest.raises(ValueError, match="quantization section"):
        ModelCard.model_validate({**data, "precision": "int8"})
    q = {"format": "QDQ", "weight_type": "uint8", "activation_type": "uint8", "per_channel": True,
         "reduce_range": False, "calibration_method": "MinMax", "calibration_images": 8, "calibration_set": "x",
         "agreement": 0.99, "agreement_threshold": 0.9}
    ModelCard.model_validate({**data, "precision": "int8", "quantization": q})
    for bad in ({"agreement": 1.5}, {"calibration_images": 0}, {"unknown": 1}):
        with pytest.raises(ValueError):
            ModelCard.model_validate({**data, "precision": "int8", "quantization": {**q, **bad}})


def test_cli_quantize(world, tmp_path, capsys):
    data, source = world
    targets = tmp_path / "t.yaml"
    targets.write_text("targets:\n  - {name: q, runtime: onnxruntime, precision: int8, warmup: 1, repeats: 10}\n")
    code, out, err = run_cli(["quantize", str(source), "--data", str(data), "--targets", str(targets),
                              "--out", str(tmp_path / "o"), "--calibration", "8", "--min-speedup", "0",
                              "--formats", "QOperator", "--weight-types", "uint8", "--max-fp32-nodes", "0"], capsys)
    assert code == 0, err
    card = read_card(tmp_path / "o" / "q")
    assert card.precision == "int8" and "agreement" in out and card.quantization.format == "QOperator"
    assert len(card.provenance["ptq"]["candidates"]) == 3  # MinMax, Percentile, Entropy: what was asked for
    code, _out, err = run_cli(["quantize", str(source), "--data", str(data), "--targets", str(targets),
                               "--out", str(tmp_path / "o2"), "--formats", "QInt"], capsys)
    assert code == 2 and "QInt" in err and len(err.strip().splitlines()) == 1


def test_a_setting_slower_than_fp32_is_never_chosen(world, monkeypatch):
    """The fastest accurate candidate wins only among those at least ``min_speedup`` faster; none fast: refused."""
    from bespoke.quantize import choose

    _, source = world
    fp32 = (source / "model.onnx").read_bytes()
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    labels = np.zeros(len(images), dtype=np.int64)
    speed = {"QDQ": 0.2, "QOperator": 1.5}
    monkeypatch.setattr(choose, "_time", lambda c, _f, _t: setattr(c, "speedup", speed[c.settings.format]))
    search = SMALL.model_copy(update={"min_speedup": 1.1, "tolerance": 1.0, "max_excluded": 0})
    picked = choose.choose_settings(fp32, images, images, labels, int8_target(), search)
    assert picked.best.settings.format == "QOperator"
    assert all(r["speedup"] is not None for r in picked.rows)  # every candidate was timed
    speed["QOperator"] = 1.05
    with pytest.raises(BespokeError, match=r"no INT8 setting is at least 1\.1x faster"):
        choose.choose_settings(fp32, images, images, labels, int8_target(), search)


def test_an_int8_target_times_graphs_quantized_and_leaves_quantized_ones_alone(world):
    import onnx

    from bespoke.targets import as_deployed, is_quantized, measure, timing_graph

    fp32 = (world[1] / "model.onnx").read_bytes()
    timed = timing_graph(fp32)
    ops = {n.op_type for n in onnx.load_from_string(timed).graph.node}
    assert not is_quantized(fp32) and is_quantized(timed) and "QLinearConv" in ops
    assert timing_graph(timed) is timed and as_deployed(fp32, "fp32") is fp32
    from bespoke.targets.int8 import _timing_graph

    assert _timing_graph.__wrapped__(fp32, 0) == timed  # seeded calibration: the same graph every time, uncached
    model, _ = load_model_dir(world[1])
    m = measure(model, int8_target(), 32)
    assert m.value > 0 and m.unit == "ms"


def test_an_int8_cost_table_holds_parts_timed_quantized(world, tmp_path):
    """Parts, the reference and calibration points of an int8 table are all timed as INT8 graphs, in a table of
    their own (no timing is asserted: the values are measured, not compared)."""
    import torch
    from torch import nn

    from bespoke.cost import grow_table, load_table
    from bespoke.delivery import Reference, measure_against

    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(8, 3))
    whole = nn.Sequential(a, b).eval()
    parts = {"a@1x3x16x16": (lambda: a, (1, 3, 16, 16)), "b@1x8x16x16": (lambda: b, (1, 8, 16, 16))}
    target = int8_target()
    table = grow_table(tmp_path, target, parts, reference=whole, resolution=16, reference_key="whole",
                       reference_parts=list(parts))
    assert table.settings["precision"] == "int8" and set(table.parts) == set(parts) and table.reference > 0
    assert table.reference_fp32 > 0 and table.budget_base == table.reference_fp32  # relative budgets: x fp32
    assert load_table(tmp_path, Target(name="fp32", runtime="onnxruntime", **FAST)) is None
    m, now = measure_against(whole, Reference(whole, 16, value=table.reference), target, 16)
    assert m.value > 0 and now > 0 and m.details["reference_value_ms"] == pytest.approx(table.reference, rel=1e-3)


def test_an_int8_part_is_timed_without_the_float_boundary_a_whole_model_does_not_have():
    import onnx
    from torch import nn

    from bespoke.targets import export_onnx_bytes, time_onnx
    from bespoke.targets.int8 import inner_graph, part_timing_graph

    part = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()).eval()
    fp32 = export_onnx_bytes(part, (1, 8, 8, 8))
    inner = onnx.load_from_string(part_timing_graph(fp32, "int8"))
    ops = [n.op_type for n in inner.graph.node]
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops and "QLinearConv" in ops
    assert inner.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert inner.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    onnx.checker.check_model(inner)
    assert len(time_onnx(inner.SerializeToString(), int8_target())) == FAST["repeats"]  # it runs
    assert part_timing_graph(fp32, "fp32") is fp32
    float_out = export_onnx_bytes(nn.Flatten().eval(), (1, 8, 2, 2))  # nothing quantized: left as it is
    assert inner_graph(float_out) == float_out


def test_quantization_aware_fine_tune_then_quantize(world, tmp_path):
    """``qat_epochs``: the model is fine-tuned under fake quantization (into OUT/.qat), then that model is
    quantized; the card says so and a rerun resumes (no accuracy asserted: a tiny random-init model)."""
    data, source = world
    out = tmp_path / "out"
    one = SMALL.model_copy(update={"formats": ("QOperator",), "max_excluded": 0})
    written = quantize_model_dir(source, str(data), [int8_target()], out, calibration=4, selection=4, search=one,
                                 qat_epochs=1, agreement_threshold=0.0)
    card = read_card(written["cpu1-int8"])
    assert card.quantization.method == "qat-static" and card.precision == "int8"
    assert card.quantization.fp32_twin == str((out / ".qat").resolve())
    twin = read_card(out / ".qat")
    assert twin.precision == "fp32" and twin.method.endswith("+ QAT") and twin.cost_cpu_s["qat"] > 0
    assert twin.provenance["qat"]["source"] == str(source.resolve()) and twin.accuracy is not None
    model, _ = load_model_dir(out / ".qat")  # a plain model again: no fake quantization left in it
    assert not any("parametrizations" in k or "qat_" in k for k in model.state_dict())
    before = (written["cpu1-int8"] / "card.json").stat().st_mtime_ns
    quantize_model_dir(source, str(data), [int8_target()], out, search=one, qat_epochs=1, agreement_threshold=0.0)
    assert (written["cpu1-int8"] / "card.json").stat().st_mtime_ns == before
