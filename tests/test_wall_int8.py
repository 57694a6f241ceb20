"""Bad inputs of `bespoke quantize`: one clear error line each, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from bespoke.quantize import choose, quantize_model_dir
from bespoke.targets import Target
from tests.test_bad_inputs import refused_with_one_line
from tests.test_int8 import FAST, SMALL, fp32_dir
from tests.test_reliability_kill import image_folder

TARGET = "targets:\n  - {name: q, runtime: %s, precision: int8, warmup: 1, repeats: 5}\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("wall-int8")
    return image_folder(root / "data", n_train=20, n_test=6), fp32_dir(root / "fp32")


def argv(world, tmp: Path, runtime: str = "onnxruntime", *extra: str) -> list[str]:
    (tmp / "t.yaml").write_text(TARGET % runtime)
    return ["quantize", str(world[1]), "--data", str(world[0]), "--targets", str(tmp / "t.yaml"),
            "--out", str(tmp / "out"), "--calibration", "8", "--min-speedup", "0",  # tiny graphs: no gain
            "--formats", "QOperator", "--weight-types", "uint8", "--max-fp32-nodes", "0", *extra]


def nothing_written(tmp: Path) -> None:
    assert not list((tmp / "out").rglob("card.json")) and not list((tmp / "out").rglob("model.onnx"))


@pytest.mark.parametrize("runtime", ["torch", "macs", "params"])
def test_int8_on_a_runtime_that_cannot_run_it(world, tmp_path, capsys, runtime):
    refused_with_one_line(argv(world, tmp_path, runtime), ("precision int8 needs runtime onnxruntime", runtime),
                          capsys)
    nothing_written(tmp_path)


def _negated(graph: bytes) -> bytes:
    """The graph with its logits negated: every top-1 changes."""
    model = onnx.load_from_string(graph)
    out = model.graph.output[0]
    model.graph.node.append(onnx.helper.make_node("Neg", [out.name], ["negated"], name="negate"))
    out.name = "negated"
    return model.SerializeToString()


def test_a_quantized_model_whose_accuracy_collapses(world, tmp_path, capsys, monkeypatch):
    real = choose.quantize_graph
    monkeypatch.setattr(choose, "quantize_graph", lambda *a, **k: _negated(real(*a, **k)))
    refused_with_one_line(argv(world, tmp_path), ("collapsed", "nothing was written"), capsys, monkeypatch)
    nothing_written(tmp_path)


def test_calibration_data_missing(world, tmp_path, capsys):
    args = argv(world, tmp_path)
    args[args.index("--data") + 1] = str(tmp_path / "no-such-data")
    refused_with_one_line(args, ("no-such-data",), capsys)
    nothing_written(tmp_path)


def test_calibration_data_empty(world, tmp_path, capsys):
    refused_with_one_line(argv(world, tmp_path, "onnxruntime", "--calibration", "0"), ("calibration data",), capsys)
    nothing_written(tmp_path)


@pytest.fixture(scope="module")
def int8_dir(world, tmp_path_factory) -> Path:
    target = Target(name="q", runtime="onnxruntime", precision="int8", **FAST)
    out = tmp_path_factory.mktemp("int8-dir")
    return quantize_model_dir(world[1], str(world[0]), [target], out, calibration=8, search=SMALL)["q"]


@pytest.mark.parametrize("command", [["export"], ["profile-device", "--out", "{tmp}/parts"], ["quantize-again"]])
def test_commands_that_cannot_take_an_int8_dir(world, int8_dir, tmp_path, capsys, command):
    before = {p: p.read_bytes() for p in int8_dir.iterdir() if p.is_file()}
    if command == ["quantize-again"]:
        args = argv(world, tmp_path)
        args[1] = str(int8_dir)
        needles: tuple[str, ...] = ("already an int8 model directory",)
    else:
        args = [command[0], str(int8_dir), *(c.format(tmp=tmp_path) for c in command[1:])]
        needles = ("int8",)
    refused_with_one_line(args, needles, capsys)
    assert {p: p.read_bytes() for p in int8_dir.iterdir() if p.is_file()} == before
    assert not (tmp_path / "parts").exists()
