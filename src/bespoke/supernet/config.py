"""Typed recipes of the supernet engine (pydantic; unknown keys are errors, so a typo never changes a run, and NaN
or inf is refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bespoke.quantize import AGREEMENT_THRESHOLD, PTQSearch
from bespoke.supernet.space import SpaceOptions
from bespoke.utils.seed import Seed


class SupernetTrainConfig(BaseModel):
    """How the supernet is trained: sandwich rule + one semi-supervised loss for all subnets."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: int = Field(300, ge=0, description="optimiser steps (cost does not depend on the number of targets); "
                       "0: the supernet as built from the teacher, untrained (per-target extraction + fine-tune)")
    batch_size: int = Field(32, ge=1, description="labelled images per step")
    unlabelled_ratio: int = Field(1, ge=1, description="unlabelled images per labelled image in a step (mu)")
    semi_supervised: bool = Field(True, description="False: the ablation trained on the labelled part only")
    n_random: int = Field(2, ge=0, description="random subnets per step besides the largest and the smallest")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW, one-cycle); 1e-3 trained smaller "
                      "subnets 1.5-4 points better than 5e-4 after 60 steps on Fashion-MNIST (10 % labels)")
    weight_decay: float = Field(0.01, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    ce_weight: float = Field(1.0, ge=0, description="cross-entropy of the largest subnet on labelled images")
    self_weight: float = Field(1.0, ge=0, description="FixMatch term of the largest subnet on unlabelled images")
    kd_weight: float = Field(1.0, ge=0, description="KD of smaller subnets to the largest's soft targets")
    pseudo_weight: float = Field(1.0, ge=0, description="CE of smaller subnets on hard labels (see subnet_labels)")
    subnet_labels: bool = Field(True, description="smaller subnets learn the true label of each labelled image "
                                "(False: the largest subnet's confident pseudo-label, as for unlabelled ones)")
    threshold: float = Field(0.8, ge=0, le=1, description="confidence needed for a pseudo-label (0.8: the "
                             "largest subnet is trained with label smoothing, so its confidence stays below ~0.92)")
    temperature: float = Field(1.0, gt=0, description="KD temperature")
    soft_targets: Literal["inplace", "teacher", "both"] = Field(
        "inplace", description="where the smaller subnets' soft targets and pseudo-labels come from: the largest "
        "subnet's weak-view predictions (in-place distillation), the teacher's predictions of the clean images "
        "(computed once before training: a semi-supervised teacher's knowledge of every image), or the mean of "
        "the two distributions")
    teacher_weight: float = Field(1.0, ge=0, description="soft_targets teacher | both: weight of the largest "
                                  "subnet's KD to the teacher's targets on every image of the step")
    grad_clip: float = Field(5.0, gt=0, description="max gradient norm")
    seed: Seed = 0
    device: str = "auto"
    checkpoint_every: int = Field(25, ge=1, description="steps between checkpoints")
    eval_images: int = Field(1000, ge=0, description="test images for the final largest/smallest check")


class SupernetJob(BaseModel):
    """Everything ``bespoke supernet train`` needs; also loadable from YAML (``--config``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    teacher: str = Field(description="model directory written by `bespoke finetune`, or a zoo model name")
    data: str = Field("fashion-mnist", description="fashion-mnist | ImageFolder dir | CIFAR python dir")
    labels: float = Field(0.1, gt=0, le=1, description="fraction of training images whose label is used")
    resolution: int | None = Field(None, ge=16, le=1024, description="largest input size; default teacher's")
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    out: Path = Path("runs/supernet")
    space: SpaceOptions = Field(default_factory=SpaceOptions)
    train: SupernetTrainConfig = Field(default_factory=SupernetTrainConfig)


class SelectConfig(BaseModel):
    """How subnets are chosen per target: predictor, latency tables, evolution, BN recalibration."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    predictor_samples: int = Field(200, ge=8, description="subnets measured to train the accuracy predictor")
    predictor_val_images: int = Field(500, ge=10, description="held-out (val) images per measured subnet")
    calib_images: int = Field(256, ge=8, description="training images for BN recalibration of a subnet")
    calib_batch: int = Field(64, ge=2)
    population: int = Field(64, ge=4)
    generations: int = Field(30, ge=1)
    mutate_prob: float = Field(0.1, gt=0, le=1)
    parent_fraction: float = Field(0.25, gt=0, le=1)
    calibration_subnets: int = Field(10, ge=2, description="whole subnets, spread over the predicted cost range, "
                                     "measured to calibrate a latency table")
    budget_margin: float = Field(0.03, ge=0, lt=0.5, description="search under (1 - margin) x budget")
    budget_retries: int = Field(3, ge=0, description="extra searches steered by the measurement after export: "
                                "tighter after a miss, looser after a pick that leaves too much budget unused")
    budget_fill: float = Field(0.9, gt=0, le=1, description="a pick measured under this share of its budget is "
                               "searched again with a looser limit (the best pick within budget is delivered)")
    eval_limit: int | None = Field(None, ge=1, description="test images for the accuracy in the cards")
    ptq: PTQSearch = Field(default_factory=PTQSearch, description="int8 targets: the quantization settings tried "
                           "on the chosen subnet")
    int8_agreement: float = Field(AGREEMENT_THRESHOLD, ge=0, le=1, description="int8 targets: share of test images "
                                  "where the INT8 graph's top-1 must equal the fp32 subnet's")
    qat_epochs: int = Field(0, ge=0, le=20, description="int8 targets: epochs of fine-tuning the chosen subnet under "
                            "fake quantization before it is quantized (0: post-training quantization only)")
    seed: Seed = 0
    device: str = "auto"
