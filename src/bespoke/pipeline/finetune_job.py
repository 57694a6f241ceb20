"""``bespoke finetune``: a pretrained zoo model fine-tuned on a data set, delivered as a verified model directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from bespoke.data import DataSplits, load_dataset, split_labelled
from bespoke.errors import BespokeError
from bespoke.export import ModelCard, check_out_dir, save_model_dir, zoo_arch_config
from bespoke.train import FinetuneConfig, FinetuneResult, SemiSupervisedConfig, finetune, semi_supervised_finetune
from bespoke.utils.distributed import DistContext, distributed
from bespoke.utils.lock import output_lock
from bespoke.zoo import ModelArgs, create_model, get_pretrained_cfg, parse_model_args


class FinetuneJob(BaseModel):
    """Everything ``bespoke finetune`` needs; also loadable from YAML (``--config``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field("efficientnet_lite0", description="zoo name, timm:<arch> or torchvision:<arch>")
    model_args: ModelArgs = Field(default_factory=dict, description="constructor keyword arguments of a timm / "
                                                                    "torchvision model: key=value items or a mapping")
    weights: Path | None = Field(None, description="local .safetensors/.pth instead of the zoo's weights")
    pretrained: bool = True
    data: str = Field("fashion-mnist", description="fashion-mnist | ImageFolder dir | CIFAR python dir")
    resolution: int = Field(64, ge=16, le=1024)
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    labels: float = Field(1.0, gt=0, le=1, description="share of training images whose labels are used "
                                                        "(stratified, seeded by train.seed)")
    semi_supervised: SemiSupervisedConfig | None = Field(None, description="also learn from the unlabelled "
                                                                           "share (needs labels < 1)")
    out: Path = Path("runs/finetune")
    train: FinetuneConfig = Field(default_factory=FinetuneConfig)

    @model_validator(mode="after")
    def _unlabelled_share_exists(self) -> FinetuneJob:
        if self.semi_supervised is not None and self.labels >= 1:
            raise ValueError("semi_supervised needs an unlabelled share: set labels below 1 (e.g. 0.1)")
        return self

    @field_validator("model_args", mode="before")
    @classmethod
    def _parse_model_args(cls, value: object) -> ModelArgs:
        try:
            return parse_model_args(value)  # type: ignore[arg-type]
        except BespokeError as exc:  # pydantic reports ValueErrors as "invalid option model_args: ..."
            raise ValueError(str(exc)) from None


def run_finetune(job: FinetuneJob, *, dist: DistContext | None = None) -> tuple[ModelCard, FinetuneResult]:
    """Fine-tune ``job.model`` on ``job.data`` and write ``job.out`` (model.safetensors, model.onnx, card.json).

    Resumes from ``job.out/checkpoints`` when a previous run was interrupted. ``dist``: the data-parallel context;
    by default read from torchrun's environment (a single process without it). Rank 0 exports and writes the
    model directory; every rank returns its card. Refused while another run writes ``job.out``.
    """
    if dist is None:
        with distributed(job.train.device) as ctx:
            return run_finetune(job, dist=ctx)
    with output_lock(job.out) if dist.is_main else contextlib.nullcontext():
        return _finetune_and_save(job, dist)


def _finetune_and_save(job: FinetuneJob, dist: DistContext) -> tuple[ModelCard, FinetuneResult]:
    check_out_dir(job.out, "finetune")
    splits = load_dataset(job.data, resolution=job.resolution, seed=job.train.seed, val_fraction=job.val_fraction,
                          train_limit=job.train_limit, test_limit=job.test_limit)
    cfg = get_pretrained_cfg(job.model)

    def make_model() -> nn.Module:
        return create_model(job.model, num_classes=splits.num_classes, pretrained=job.pretrained,
                            resolution=job.resolution, weights=job.weights, seed=job.train.seed,
                            model_args=job.model_args)

    labelled, unlabelled = (split_labelled(splits.train, job.labels, job.train.seed) if job.labels < 1
                            else (splits.train, []))
    extra: dict[str, object] = {}
    if job.semi_supervised is not None:
        if dist.enabled:
            raise BespokeError("semi-supervised fine-tuning runs in one process", "start it without torchrun")
        model, semi = semi_supervised_finetune(make_model, labelled, unlabelled, splits.test, job.train,
                                               job.semi_supervised, mean=cfg.mean, std=cfg.std, out_dir=job.out)
        result = semi.final
        cpu_s = semi.cpu_s
        extra = {"semi_supervised": {**job.semi_supervised.model_dump(), "rounds_run": semi.summary(),
                                      "targets_cpu_s": round(semi.targets_cpu_s, 1)}}
    else:
        model = make_model()
        result = finetune(model, labelled, splits.test, job.train, mean=cfg.mean, std=cfg.std, out_dir=job.out,
                          dist=dist)
        cpu_s = result.cpu_s
    if not dist.is_main:
        return dist.broadcast_object(None), result
    card = ModelCard(
        arch=job.model, arch_config=zoo_arch_config(job.model, splits.num_classes, job.resolution, job.model_args),
        engine="finetune", num_classes=splits.num_classes, classes=splits.classes, resolution=job.resolution,
        mean=cfg.mean, std=cfg.std, accuracy=result.accuracy, cost_cpu_s={"finetune": round(cpu_s, 1)},
        data=_data_info(splits, len(labelled), len(unlabelled)),
        provenance={"weights": str(job.weights) if job.weights else cfg.source,
                    "recipe": {**job.train.model_dump(), "memory_format": result.memory_format},  # the one used
                    "history": result.history, "wall_s": round(result.wall_s, 1), **extra},
        method=_method(job),
    )
    return dist.broadcast_object(save_model_dir(job.out, model, card)), result


def _data_info(splits: DataSplits, labelled: int, unlabelled: int) -> dict[str, object]:
    info: dict[str, object] = {"dataset": splits.name, "train": len(splits.train), "val": len(splits.val),
                               "test": len(splits.test)}
    if unlabelled:
        info.update({"labelled": labelled, "unlabelled": unlabelled})
    return info


def _method(job: FinetuneJob) -> str | None:
    """The report label of a label-scarce run (``None``: the card's default)."""
    if job.labels >= 1:
        return None
    share = f"{job.labels:.0%} labels"
    if job.semi_supervised is None:
        return f"finetuned {job.model} ({share})"
    return f"semi-supervised {job.model} ({share})"
