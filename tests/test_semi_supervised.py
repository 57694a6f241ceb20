"""Semi-supervised fine-tuning (``bespoke finetune --labels F --semi-supervised``): the masked loss, hidden labels,
rounds that resume, the card, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from bespoke.pipeline import FinetuneJob
from bespoke.train import (
    UNLABELLED,
    FinetuneConfig,
    HiddenLabels,
    SemiSupervisedConfig,
    finetune,
    kd_loss,
    semi_supervised_finetune,
)
from bespoke.train.finetune import labelled_cross_entropy
from bespoke.train.semi import WithTargets, clean_logits
from tests.test_bad_inputs import ARCH, refused_with_one_line
from tests.test_cli import run_cli
from tests.test_reliability_kill import image_folder


def test_labelled_cross_entropy_ignores_unlabelled_images() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 3, UNLABELLED, 1, UNLABELLED, 2])
    known = labels != UNLABELLED
    expected = F.cross_entropy(logits[known], labels[known], label_smoothing=0.1)
    assert torch.allclose(labelled_cross_entropy(logits, labels, 0.1), expected)
    assert torch.allclose(labelled_cross_entropy(logits[known], labels[known], 0.1), expected)
    nothing = labelled_cross_entropy(logits, torch.full((6,), UNLABELLED), 0.1)
    assert float(nothing) == 0.0 and torch.isfinite(nothing)


def test_hidden_labels_expose_only_images() -> None:
    images = torch.arange(12, dtype=torch.uint8).view(3, 1, 2, 2)
    hidden = HiddenLabels(TensorDataset(images, torch.tensor([5, 6, 7])))
    assert len(hidden) == 3
    assert all(hidden[i][1] == UNLABELLED for i in range(3))
    assert torch.equal(hidden[1][0], images[1])


class _Images(Dataset):
    """uint8 images with int labels, as the data sets yield them."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, 3, (n,), generator=g).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], self.labels[i]


def _images(n: int, seed: int) -> _Images:
    return _Images(n, seed)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_rounds_distil_from_the_previous_round_and_resume(tmp_path: Path) -> None:
    cfg = FinetuneConfig(epochs=1, batch_size=4, augment="none", device="cpu", memory_format="contiguous")
    semi = SemiSupervisedConfig(rounds=2, epochs=1, augment="flip", init="pretrained")
    labelled, unlabelled, test = _images(8, 1), _images(16, 2), _images(6, 3)
    calls: list[int] = []

    def make() -> nn.Module:
        calls.append(1)
        return _tiny()

    model, result = semi_supervised_finetune(make, labelled, unlabelled, test, cfg, semi, mean=(0.5,) * 3,
                                             std=(0.5,) * 3, out_dir=tmp_path)
    assert len(calls) == 3 and len(result.rounds) == 3  # round 0 + 2 distillation rounds, each a fresh model
    assert result.rounds[0].steps == 2 and result.rounds[1].steps == 6  # 8 labelled; then 8 + 16 images
    assert result.cpu_s == pytest.approx(sum(r.cpu_s for r in result.rounds) + result.targets_cpu_s)
    assert [r["round"] for r in result.summary()] == [0, 1, 2]
    for i in range(3):
        assert (tmp_path / "checkpoints" / f"semi-round{i}.pt").is_file()
    again, result2 = semi_supervised_finetune(_tiny, labelled, unlabelled, test, cfg, semi, mean=(0.5,) * 3,
                                              std=(0.5,) * 3, out_dir=tmp_path)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert result2.final.accuracy == result.final.accuracy


def test_a_started_teacher_skips_round_zero_and_is_not_changed(tmp_path: Path) -> None:
    cfg = FinetuneConfig(epochs=1, batch_size=4, augment="none", device="cpu", memory_format="contiguous")
    start = _tiny()
    before = {k: v.clone() for k, v in start.state_dict().items()}
    _, result = semi_supervised_finetune(_tiny, _images(8, 1), _images(8, 2), _images(4, 3), cfg,
                                         SemiSupervisedConfig(epochs=1), mean=(0.5,) * 3, std=(0.5,) * 3,
                                         out_dir=tmp_path, start=start)
    assert result.rounds[0] is None and len(result.rounds) == 2
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())


def test_clean_targets_are_the_teachers_eval_logits_and_drive_distillation(tmp_path: Path) -> None:
    cfg = FinetuneConfig(epochs=1, batch_size=4, augment="none", device="cpu", memory_format="contiguous",
                         kd_weight=1.0, lr=0.05)
    data = ConcatDataset([_images(4, 1), HiddenLabels(_images(8, 2))])
    teacher = _tiny().eval()
    logits = clean_logits(teacher, data, (0.5,) * 3, (0.5,) * 3, device=cfg.device, batch_size=cfg.eval_batch_size)
    x = torch.stack([(data[i][0].float() / 255 - 0.5) / 0.5 for i in range(len(data))])
    with torch.no_grad():
        assert torch.allclose(logits, teacher(x), atol=1e-5)
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        before = float(kd_loss(student(x), logits, 4.0))
    finetune(student, WithTargets(data, logits), _images(4, 3), cfg.model_copy(update={"epochs": 20}),
             mean=(0.5,) * 3, std=(0.5,) * 3, out_dir=tmp_path)  # no teacher module: the dataset's logits
    with torch.no_grad():
        assert float(kd_loss(student.eval()(x), logits, 4.0)) < before


def test_same_view_teacher_and_student_from_teacher(tmp_path: Path) -> None:
    cfg = FinetuneConfig(epochs=1, batch_size=4, augment="none", device="cpu", memory_format="contiguous")
    semi = SemiSupervisedConfig(epochs=1, augment="flip", teacher_view="same", init="teacher")
    calls: list[int] = []

    def make() -> nn.Module:
        calls.append(1)
        return _tiny()

    _, result = semi_supervised_finetune(make, _images(8, 1), _images(8, 2), _images(4, 3), cfg, semi,
                                         mean=(0.5,) * 3, std=(0.5,) * 3, out_dir=tmp_path)
    assert len(calls) == 1 and result.targets_cpu_s == 0.0 and len(result.rounds) == 2


def test_semi_supervised_needs_an_unlabelled_share() -> None:
    with pytest.raises(ValueError, match="labels below 1"):
        FinetuneJob(semi_supervised=SemiSupervisedConfig())
    assert FinetuneJob(labels=0.5, semi_supervised={"rounds": 2}).semi_supervised.rounds == 2


@pytest.fixture(scope="module")
def png_data(tmp_path_factory) -> Path:
    root = image_folder(tmp_path_factory.mktemp("semi-data"), n_train=10, n_test=2)
    (root / "job.yaml").write_text("pretrained: false\nval_fraction: 0\n")
    return root


def test_cli_writes_a_semi_supervised_card(png_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m"
    code, _, err = run_cli(["finetune", "--model", ARCH, "--data", str(png_data), "--config",
                            str(png_data / "job.yaml"), "--resolution", "16", "--epochs", "1", "--batch-size", "4",
                            "--device", "cpu", "--labels", "0.2", "--semi-supervised", "--round-epochs", "1",
                            "--out", str(out)], capsys)
    assert code == 0, err
    card = json.loads((out / "card.json").read_text())
    assert card["data"]["labelled"] == 6 and card["data"]["unlabelled"] == 24
    assert card["method"] == f"semi-supervised {ARCH} (20% labels)"
    semi = card["provenance"]["semi_supervised"]
    assert semi["rounds"] == 1 and [r["round"] for r in semi["rounds_run"]] == [0, 1]
    assert card["cost_cpu_s"]["finetune"] == pytest.approx(
        sum(r["cpu_s"] for r in semi["rounds_run"]) + semi["targets_cpu_s"], abs=0.3)


@pytest.mark.parametrize(("args", "needle"), [
    (["--semi-supervised"], "labels below 1"),
    (["--labels", "0", "--semi-supervised"], "labels"),
    (["--labels", "0.2", "--semi-supervised", "--rounds", "9"], "rounds"),
])
def test_cli_refuses_bad_semi_supervised_settings(png_data: Path, tmp_path: Path, capsys, args: list[str],
                                                  needle: str) -> None:
    out = tmp_path / "m"
    refused_with_one_line(["finetune", "--model", ARCH, "--data", str(png_data), "--config",
                           str(png_data / "job.yaml"), "--resolution", "16", "--out", str(out), *args], (needle,),
                          capsys)
    assert not out.exists()
