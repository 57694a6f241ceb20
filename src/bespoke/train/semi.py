"""Semi-supervised fine-tuning: a teacher that learns from the unlabelled share too.

Rounds of self-training by distillation. Round 0 fine-tunes the model on the labelled images alone (or starts from
a model already trained that way). Each later round trains a fresh copy of the pretrained model on *all* training
images: cross-entropy on the labelled ones, and distillation from the previous round's model on every image, the
teacher seeing the same augmented view as the student at each step (a consistent, "patient" teacher), with strong
augmentation so the student is pushed past its teacher rather than copying it. Each round is one resumable
:func:`~bespoke.train.finetune` stage, so an interrupted run continues in the round it stopped in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from bespoke.errors import BespokeError
from bespoke.train.finetune import UNLABELLED, FinetuneConfig, FinetuneResult, finetune


class SemiSupervisedConfig(BaseModel):
    """How the unlabelled share is used: the number of distillation rounds and each round's recipe."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rounds: int = Field(1, ge=1, le=5, description="distillation rounds after the labelled-only round 0")
    epochs: int = Field(3, ge=1, le=100, description="passes over all training images per round")
    kd_weight: float = Field(0.7, gt=0, le=1, description="weight of distillation against cross-entropy on the "
                                                          "labelled images")
    kd_temperature: float = Field(1.0, gt=0, le=100)
    augment: Literal["flip", "weak", "strong"] = Field("strong", description="augmentation of the rounds' "
                                                                             "images (student and teacher alike)")


class HiddenLabels(Dataset):
    """``dataset`` with every label replaced by :data:`~bespoke.train.finetune.UNLABELLED`: training on it can
    only use the images."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = self.dataset[index]
        return image, UNLABELLED


@dataclass
class SemiSupervisedResult:
    """The last round's fine-tune result and every round's (round 0 first; ``None`` when it was given)."""

    final: FinetuneResult
    rounds: list[FinetuneResult | None] = field(default_factory=list)

    @property
    def cpu_s(self) -> float:
        return sum(r.cpu_s for r in self.rounds if r is not None)

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
    everything = ConcatDataset([labelled, HiddenLabels(unlabelled)])
    recipe = round_config(cfg, semi)
    for r in range(1, semi.rounds + 1):
        student = make_model()
        last = finetune(student, everything, test, recipe, mean=mean, std=std, out_dir=out_dir,
                        teacher=teacher.eval(), stage=f"semi-round{r}")
        rounds.append(last)
        teacher = student
    return teacher.eval(), SemiSupervisedResult(final=last, rounds=rounds)
