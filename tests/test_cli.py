"""CLI: help texts, one-line errors with exit code 2 and nothing half-written, YAML config precedence."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest.mock import ANY

import pytest
import torch
from PIL import Image

from bespoke.cli.main import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["bespoke", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def make_image_folder(root: Path, classes=("a", "b"), test_classes=None, n=4) -> Path:
    for split, names in (("train", classes), ("test", test_classes or classes)):
        for ci, cls in enumerate(names):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (40 * ci + i, 80, 120)).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("cmd", [[], ["finetune"], ["export"], ["profile"], ["profile-device"], ["demo"],
                                 ["zoo", "list"]])
def test_help(cmd, capsys):
    code, out, _ = run_cli([*cmd, "--help"], capsys)
    assert code == 0 and "Usage" in out


def test_zoo_list(capsys):
    code, out, _ = run_cli(["zoo", "list"], capsys)
    assert code == 0 and "efficientnet_lite2" in out and "mobilenet_v2" in out


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _finetune(args: list[str], out: Path, capsys) -> tuple[int, str, str]:
    return run_cli(["finetune", "--resolution", "16", "--epochs", "1", "--batch-size", "4", "--out", str(out), *args],
                   capsys)


@pytest.mark.parametrize("case", ["missing_data", "empty_data", "unknown_model", "class_mismatch", "non_image",
                                  "wrong_weights", "truncated_weights", "bad_config", "unknown_config_key"])
def test_bad_inputs_fail_cleanly(case, tmp_path, capsys):
    out = tmp_path / "out"
    data = make_image_folder(tmp_path / "data")
    args: list[str] = ["--data", str(data), "--model", "timm:resnet18"]
    needles: tuple[str, ...] = ()
    if case == "missing_data":
        args = ["--data", str(tmp_path / "nope")]
        needles = ("nope",)
    elif case == "empty_data":
        (tmp_path / "empty" / "train").mkdir(parents=True)
        args = ["--data", str(tmp_path / "empty")]
    elif case == "unknown_model":
        args = ["--data", str(data), "--model", "resnet9000"]
        needles = ("unknown model 'resnet9000'",)
    elif case == "class_mismatch":
        data = make_image_folder(tmp_path / "mm", classes=("a", "b"), test_classes=("a", "c"))
        args = ["--data", str(data)]
        needles = ("c",)
    elif case == "non_image":
        (data / "train" / "a" / "notes.txt").write_text("hello")
        args = ["--data", str(data)]
        needles = ("notes.txt",)
    elif case == "wrong_weights":
        torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "w.pth")
        args += ["--weights", str(tmp_path / "w.pth")]
        needles = ("do not fit",)
    elif case == "truncated_weights":
        (tmp_path / "w.safetensors").write_bytes(b"\x10\x00\x00")
        args += ["--weights", str(tmp_path / "w.safetensors")]
        needles = ("safetensors",)
    elif case == "bad_config":
        (tmp_path / "c.yaml").write_text("epochs: [1,\n")
        args += ["--config", str(tmp_path / "c.yaml")]
        needles = ("YAML",)
    elif case == "unknown_config_key":
        (tmp_path / "c.yaml").write_text("epoch: 3\n")
        args += ["--config", str(tmp_path / "c.yaml")]
        needles = ("epoch",)
    code, _, err = _finetune(args, out, capsys)
    _assert_one_line_error(code, err, *needles)
    assert not (out / "card.json").exists() and not (out / "model.onnx").exists()


def test_profile_bad_targets(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text("targets:\n  - name: a\n    runtime: tpu9000\n")
    code, _, err = run_cli(["profile", str(tmp_path), "--targets", str(tmp_path / "t.yaml")], capsys)
    _assert_one_line_error(code, err, "tpu9000")
    code, _, err = run_cli(["profile", str(tmp_path), "--targets", str(tmp_path / "missing.yaml")], capsys)
    _assert_one_line_error(code, err, "missing.yaml")


def test_finetune_config_file_and_override(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", n=6)
    (tmp_path / "job.yaml").write_text(f"data: {data}\nmodel: timm:resnet18\nresolution: 16\nepochs: 3\n"
                                       "pretrained: false\ntrain:\n  batch_size: 4\n  lr: 0.01\n")
    code, _out, err = run_cli(["finetune", "--config", str(tmp_path / "job.yaml"), "--epochs", "1", "--out",
                              str(tmp_path / "m")], capsys)
    assert code == 0, err
    import json

    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["provenance"]["recipe"]["epochs"] == 1          # command line beats YAML
    assert card["provenance"]["recipe"]["lr"] == 0.01           # YAML beats default
    assert card["provenance"]["recipe"]["batch_size"] == 4
    assert card["resolution"] == 16 and card["onnx_max_abs_diff"] < 1e-4
    code, _out, err = run_cli(["profile", str(tmp_path / "m"), "--targets",
                              str(Path(__file__).parents[1] / "configs" / "targets.yaml")], capsys)
    assert code == 0, err
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert set(card["latency_ms"]) == {"ort1-0.7x", "ort1-0.5x", "ort1-0.35x"}
    assert all(v > 0 for v in card["latency_ms"].values())


def test_block_engine_cli_api_and_bench_read_one_recipe(tmp_path, capsys, monkeypatch):
    """`house build` / `search` (with and without --config) hand the engine the same BlockJob the API and the
    benchmark build: partial retraining overrides keep DEFAULT_RETRAIN's other keys (flip, KD temperature)."""
    import bespoke.house as house
    import bespoke.search as search
    from bespoke.quantize import QATConfig
    from bespoke.search import DEFAULT_RETRAIN, BlockJob

    seen: dict = {}

    from types import SimpleNamespace

    built = SimpleNamespace(index=SimpleNamespace(memory={}, cost_cpu_s={}, counts=dict))

    monkeypatch.setattr(house, "build_house", lambda *a, **kw: seen.update(house=(a, kw)) or built)
    monkeypatch.setattr(search, "search_and_deliver", lambda *a, **kw: seen.update(search=kw) or [])
    monkeypatch.setattr("bespoke.cli.block.write_block_report", lambda out, dirs: out / "report.md")

    code, _, err = run_cli(["house", "build", "--teacher", "t", "--data", "d", "--out", str(tmp_path / "h")], capsys)
    assert code == 0, err
    assert seen["house"][1] | {"targets": None} == {**BlockJob().house.build_kwargs(), "targets": None,
                                                    "data": "d", "out": tmp_path / "h", "executor": ANY}
    (tmp_path / "t.yaml").write_text("targets:\n  - {name: a, runtime: macs, budget: 0.5x}\n")
    code, _, err = run_cli(["search", str(tmp_path / "h"), "--targets", str(tmp_path / "t.yaml"),
                            "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert seen["search"]["retrain"] == DEFAULT_RETRAIN and DEFAULT_RETRAIN.augment == "flip"
    assert seen["search"]["anneal_config"] == BlockJob().search.anneal
    assert seen["search"]["qat"] is None  # int8 students retrain in fp32 unless asked
    code, _, err = run_cli(["search", str(tmp_path / "h"), "--targets", str(tmp_path / "t.yaml"),
                            "--out", str(tmp_path / "o"), "--qat"], capsys)
    assert code == 0, err
    assert seen["search"]["qat"] == QATConfig() == BlockJob.model_validate({"qat": {}}).qat  # CLI = recipe YAML

    (tmp_path / "job.yaml").write_text("house: {size: 7, distill: {group_size: 3}}\nretrain: {epochs: 1}\n"
                                       "search: {margin: 0.1}\nout: " + str(tmp_path / "o2") + "\n")
    code, _, err = run_cli(["search", str(tmp_path / "h"), "--targets", str(tmp_path / "t.yaml"), "--config",
                            str(tmp_path / "job.yaml"), "--lr", "0.002"], capsys)
    assert code == 0, err
    want = DEFAULT_RETRAIN.model_copy(update={"epochs": 1, "lr": 0.002})
    assert seen["search"]["retrain"] == want and seen["search"]["margin"] == 0.1
    assert seen["search"]["out"] == tmp_path / "o2"
    bench_job = BlockJob.model_validate({"retrain": {"epochs": 1, "lr": 0.002}, "search": {"margin": 0.1}})
    assert bench_job.retrain == want

    code, _, err = run_cli(["house", "build", "--config", str(tmp_path / "job.yaml"), "--teacher", "t",
                            "--data", "d"], capsys)
    assert code == 0, err
    kwargs = seen["house"][1]
    assert kwargs["size"] == 7 and kwargs["distill"].group_size == 3 and kwargs["out"] == tmp_path / "o2"

    code, _, err = run_cli(["house", "build", "--data", "d", "--out", str(tmp_path / "h")], capsys)
    assert code == 2 and "--teacher is required" in err
