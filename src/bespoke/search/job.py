"""The block engine's one recipe: house, search and retraining settings as typed data (like ``SupernetJob``).

The CLI (``bespoke house build`` / ``bespoke search``, both with ``--config``), the Python API
(:func:`bespoke.search.run_block_engine`) and the benchmark (the preset's ``bespoke:`` section) all read their
defaults from these models, so the same settings give the same student everywhere. Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bespoke.distill import DistillConfig
from bespoke.quantize import AGREEMENT_THRESHOLD, PTQSearch, QATConfig
from bespoke.search.annealing import AnnealConfig
from bespoke.train import FinetuneConfig
from bespoke.utils.seed import Seed

AlternativeKind = Literal["donor", "prune", "lowrank", "skip"]

#: Short KD retraining of a searched student: flip only and light decay (on Lite0 for 3 epochs, flip + shift with
#: decay 0.05 cost 1.2 points); peak lr 1e-3 (see benchmarks/README.md for the runs behind both).
DEFAULT_RETRAIN = FinetuneConfig(epochs=3, lr=1e-3, kd_weight=0.7, kd_temperature=4.0, weight_decay=0.01,
                                 augment="flip")


class HouseSettings(BaseModel):
    """How a model house is planned and distilled (the keyword arguments of :func:`build_house`)."""

    model_config = ConfigDict(extra="forbid")

    donors: list[str] = Field(default_factory=lambda: ["efficientnet_lite0", "mobilenet_v2"],
                              description="zoo names of public pretrained networks whose spans become alternatives")
    size: int = Field(100, ge=1, le=100_000, description="alternatives to sample (50-500 is typical)")
    max_span: int = Field(3, ge=1, description="longest replaced span, in segments")
    distill_steps: int = Field(200, ge=1, description="block-distillation steps per alternative")
    kinds: list[AlternativeKind] = Field(default_factory=lambda: ["donor", "prune", "lowrank", "skip"],
                                         min_length=1, description="alternative kinds to propose")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="block distillation (its steps and "
                                   "seed are the house's distill_steps and seed)")
    train_limit: int | None = Field(None, ge=1, description="use a stratified subset of N training images")
    test_limit: int | None = Field(None, ge=1, description="evaluate on a stratified subset of N test images")
    resolution: int | None = Field(None, ge=8, le=4096, description="input size when the teacher is a zoo name")
    seed: Seed = Field(0, description="seed of sampling, initialisation and batches")

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`bespoke.house.build_house` (names match field by field)."""
        return {**self.model_dump(exclude={"distill"}), "distill": self.distill}


class SearchSettings(BaseModel):
    """How a student is chosen per target (simulated annealing, accuracy estimates, budget margin)."""

    model_config = ConfigDict(extra="forbid")

    anneal: AnnealConfig = Field(default_factory=AnnealConfig)
    eval_images: int = Field(256, ge=1, description="held-out images for accuracy estimates")
    margin: float = Field(0.05, ge=0, lt=0.5, description="latency targets search under budget x (1 - margin)")


def retrain_recipe(overrides: FinetuneConfig | dict[str, Any] | None) -> FinetuneConfig:
    """:data:`DEFAULT_RETRAIN` with ``overrides`` on top (a partial mapping keeps the other defaults)."""
    if isinstance(overrides, FinetuneConfig):
        return overrides
    return FinetuneConfig.model_validate({**DEFAULT_RETRAIN.model_dump(), **(overrides or {})})


class BlockJob(BaseModel):
    """Everything the block engine needs for a set of targets; also loadable from YAML (``--config``)."""

    model_config = ConfigDict(extra="forbid")

    teacher: str | None = Field(None, description="model directory of `bespoke finetune`, or a zoo name")
    data: str | None = Field(None, description="fashion-mnist | ImageFolder dir | CIFAR dir")
    out: Path | None = Field(None, description="output folder")
    house: HouseSettings = Field(default_factory=HouseSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    retrain: FinetuneConfig = Field(default_factory=lambda: DEFAULT_RETRAIN.model_copy(),
                                    description="KD retraining of each student; keys given override "
                                                "DEFAULT_RETRAIN's, the rest keep it")
    qat: QATConfig | None = Field(None, description="int8 targets: retrain each student under fake quantization "
                                  "matching its INT8 graph ({} for the defaults); null: retrain in fp32, then PTQ")
    ptq: PTQSearch = Field(default_factory=PTQSearch, description="int8 targets: the quantization settings tried "
                           "on each student")
    int8_agreement: float = Field(AGREEMENT_THRESHOLD, ge=0, le=1, description="int8 targets: share of test images "
                                  "where the INT8 graph's top-1 must equal the fp32 student's")

    @field_validator("retrain", mode="before")
    @classmethod
    def _over_default(cls, value: Any) -> Any:
        return retrain_recipe(value) if isinstance(value, dict) or value is None else value
