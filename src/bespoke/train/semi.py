"""Semi-supervised fine-tuning: a teacher that learns from the unlabelled share too.

Rounds of self-training by distillation. Round 0 fine-tunes the model on the labelled images alone (or starts from
a model already trained that way). Each later round trains a student (a fresh copy of the pretrained model, or the
previous round's model) on *all* training images: cross-entropy on the labelled ones, and distillation from the
previous round's model on every image. The teacher's targets come either from the clean (un-augmented) images,
once per round, while the student sees strongly augmented views, as in Noisy Student, or from the very view the
student sees at each step (a consistent teacher). Each round is one resumable :func:`~bespoke.train.finetune`
stage, so an interrupted run continues in the round it stopped in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from bespoke.data import TransformedDataset, build_transform
from bespoke.errors import BespokeError
from bespoke.train.cost import cpu_seconds
from bespoke.train.evaluate import predict_logits
from bespoke.train.finetune import UNLABELLED, FinetuneConfig, FinetuneResult, finetune
from bespoke.utils.device import pick_device


class SemiSupervisedConfig(BaseModel):
    """How the unlabelled share is used: the number of distillation rounds and each round's recipe."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rounds: int = Field(1, ge=1, le=5, description="distillation rounds after the labelled-only round 0")
    epochs: int = Field(3, ge=1, le=100, description="passes over all training images per round")
    kd_weight: float = Field(0.7, gt=0, le=1, description="weight of distillation against cross-entropy on the "
                                                          "labelled images")
    kd_temperature: float = Field(1.0, gt=0, le=100)
    augment: Literal["flip", "weak", "strong"] = Field("strong", description="augmentation of the student's "
                                                                             "images in the rounds")
    teacher_view: Literal["clean", "same"] = Field("clean", description="clean: the teacher's targets from "
                                                   "un-augmented images; same: from the student's augmented view")
    init: Literal["pretrained", "teacher"] = Field("teacher", description="each round's student: a copy of the "
                                                   "previous round's model or a fresh pretrained model")


class WithTargets(Dataset):
    """``dataset`` with one row of ``logits`` per item, appended to the item: ``(image, label)`` items become
    ``(image, label, logits[i])``, ``(weak, strong, label)`` ones ``(weak, strong, label, logits[i])``."""

    def __init__(self, dataset: Dataset, logits: torch.Tensor) -> None:
        if len(dataset) != len(logits):  # type: ignore[arg-type]
            raise ValueError(f"{len(logits)} logit rows for {len(dataset)} items")  # type: ignore[arg-type]
        self.dataset, self.logits = dataset, logits

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (*self.dataset[index], self.logits[index])


class HiddenLabels(Dataset):
    """``dataset`` with every label replaced by :data:`~bespoke.train.finetune.UNLABELLED`: training on it can
    only use the images."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def labels(self) -> torch.Tensor:
        """Every label, as :func:`~bespoke.data.dataset_labels` reads them (all unknown)."""
        return torch.full((len(self),), UNLABELLED, dtype=torch.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = self.dataset[index]
        return image, UNLABELLED


def labelled_and_unlabelled(labelled: Dataset, unlabelled: Dataset) -> ConcatDataset:
    """Every training image: ``labelled`` with its labels, then ``unlabelled`` with its labels hidden."""
    return ConcatDataset([labelled, HiddenLabels(unlabelled)])


@dataclass
class SemiSupervisedResult:
    """The last round's fine-tune result and every round's (round 0 first; ``None`` when it was given)."""

    final: FinetuneResult
    rounds: list[FinetuneResult | None] = field(default_factory=list)
    targets_cpu_s: float = 0.0  # the teachers' passes over clean images

    @property
    def cpu_s(self) -> float:
        return sum(r.cpu_s for r in self.rounds if r is not None) + self.targets_cpu_s

    def summary(self) -> list[dict[str, float | int | None]]:
        """Test top-1 and CPU-seconds per round (for the card)."""
        return [{"round": i, "accuracy": None if r is None else round(r.accuracy, 4),
                 "cpu_s": None if r is None else round(r.cpu_s, 1)} for i, r in enumerate(self.rounds)]


def round_config(cfg: FinetuneConfig, semi: SemiSupervisedConfig) -> FinetuneConfig:
    """The fine-tune recipe of a distillation round: ``cfg`` with the round's epochs, augmentation and KD."""
    return cfg.model_copy(update={"epochs": semi.epochs, "augment": semi.augment, "kd_weight": semi.kd_weight,
                                  "kd_temperature": semi.kd_temperature})


def semi_supervised_finetune(make_model: Callable[[], nn.Module], labelled: Dataset, unlabelled: Dataset,
                             test: Dataset, cfg: FinetuneConfig, semi: SemiSupervisedConfig, *,
                             mean: tuple[float, ...], std: tuple[float, ...], out_dir: str | Path,
                             start: nn.Module | None = None) -> tuple[nn.Module, SemiSupervisedResult]:
    """Train a model on ``labelled`` + ``unlabelled`` images; return it (eval mode) and each round's result.

    ``make_model`` builds a fresh pretrained model (called once per round, seeded by the caller). ``start``: a
    model already fine-tuned on ``labelled`` (round 0 is then skipped). ``unlabelled``'s labels are never read.
    Checkpoints: ``out_dir/checkpoints/semi-round<i>.pt``.
    """
    if len(unlabelled) == 0:  # type: ignore[arg-type]
        raise BespokeError("semi-supervised fine-tuning needs unlabelled images, the unlabelled share is empty",
                           "use a label fraction below 1 (e.g. --labels 0.1)")
    rounds: list[FinetuneResult | None] = []
    if start is None:
        teacher = make_model()
        rounds.append(finetune(teacher, labelled, test, cfg, mean=mean, std=std, out_dir=out_dir,
                               stage="semi-round0"))
    else:
        teacher = copy.deepcopy(start)
        rounds.append(None)
    everything = labelled_and_unlabelled(labelled, unlabelled)
    recipe = round_config(cfg, semi)
    extra_cpu = 0.0
    for r in range(1, semi.rounds + 1):
        student = make_model() if semi.init == "pretrained" else copy.deepcopy(teacher)
        train_set, round_teacher = everything, teacher.eval()
        if semi.teacher_view == "clean":
            start_cpu = cpu_seconds()
            train_set = WithTargets(everything, clean_logits(teacher, everything, mean, std, device=cfg.device,
                                                              batch_size=cfg.eval_batch_size))
            round_teacher = None
            extra_cpu += cpu_seconds() - start_cpu
        last = finetune(student, train_set, test, recipe, mean=mean, std=std, out_dir=out_dir,
                        teacher=round_teacher, stage=f"semi-round{r}")
        rounds.append(last)
        teacher = student
    return teacher.eval(), SemiSupervisedResult(final=last, rounds=rounds, targets_cpu_s=extra_cpu)


def clean_logits(model: nn.Module, dataset: Dataset, mean: tuple[float, ...], std: tuple[float, ...], *,
                 device: str = "auto", batch_size: int = 256) -> torch.Tensor:
    """``model``'s logits of every un-augmented image of ``dataset`` (float32, on CPU, in dataset order)."""
    where = pick_device(device)
    loader = DataLoader(TransformedDataset(dataset, build_transform("eval", mean, std)), batch_size=batch_size)
    with torch.inference_mode():
        logits, _ = predict_logits(model.to(where), loader, device=where)
    return logits.float().cpu()
