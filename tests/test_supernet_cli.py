"""``bespoke supernet train|select`` end to end on a tiny ImageFolder and the tiny timm EfficientNet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from bespoke.cli.supernet import supernet_app
from bespoke.export import ModelCard, load_model_dir, save_model_dir
from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet
from bespoke.targets.measure import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest single-threaded (and do not fight other jobs for the cores)."""
    with torch_threads(1):
        yield


def _image_folder(root: Path, n: int = 12) -> Path:
    """3 classes told apart by colour, ``n`` train and ``n // 2`` test images each."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", n), ("test", n // 2)):
        for ci, cls in enumerate("rgb"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                rgb = [int(v) for v in torch.randint(0, 60, (3,), generator=g)]
                rgb[ci] += 180
                Image.new("RGB", (20, 20), tuple(rgb)).save(folder / f"{i}.png")
    return root


def test_cli_train_then_select(tmp_path) -> None:
    data = _image_folder(tmp_path / "data")
    teacher = tmp_path / "teacher"
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(3, 32), engine="finetune", num_classes=3,
                     resolution=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    save_model_dir(teacher, tiny_efficientnet(), card)
    runner = CliRunner()
    result = runner.invoke(supernet_app, [
        "train", "--teacher", str(teacher), "--data", str(data), "--labels", "0.5", "--out", str(tmp_path / "sn"),
        "--steps", "3", "--batch-size", "4", "--threshold", "0.5", "--labelled-only"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "sn" / "supernet.json").read_text())
    assert meta["job"]["train"]["semi_supervised"] is False and meta["job"]["train"]["steps"] == 3
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  - {name: small, runtime: params, budget: 0.6x}\n")
    config = tmp_path / "select.yaml"
    config.write_text("predictor_val_images: 10\ncalib_images: 16\npopulation: 8\ngenerations: 3\n"
                      "calibration_subnets: 2\n")
    result = runner.invoke(supernet_app, ["select", str(tmp_path / "sn"), "--targets", str(targets), "--out",
                                          str(tmp_path / "out"), "--predictor-samples", "8", "--config", str(config)])
    assert result.exit_code == 0, result.output
    _, card = load_model_dir(tmp_path / "out" / "small")
    assert card.engine == "tofa" and card.params <= card.budget_resolved
    assert (tmp_path / "out" / "report.md").is_file()


def test_cli_train_takes_the_teacher_from_config_and_says_when_it_is_missing(tmp_path) -> None:
    data = _image_folder(tmp_path / "data", n=6)
    teacher = tmp_path / "teacher"
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(3, 32), engine="finetune", num_classes=3,
                     resolution=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    save_model_dir(teacher, tiny_efficientnet(), card)
    config = tmp_path / "job.yaml"
    config.write_text(f"teacher: {teacher}\ndata: {data}\nlabels: 0.5\nout: {tmp_path / 'sn'}\n"
                      "train: {steps: 2, batch_size: 4, threshold: 0.5, semi_supervised: false, eval_images: 6}\n")
    runner = CliRunner()
    result = runner.invoke(supernet_app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "sn" / "supernet.json").read_text())["job"]["teacher"] == str(teacher)
    result = runner.invoke(supernet_app, ["train", "--data", str(data), "--out", str(tmp_path / "sn2")])
    assert result.exit_code != 0 and "invalid option teacher: Field required" in str(result.exception)
