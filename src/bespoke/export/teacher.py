"""The teacher both engines start from: one loader for a model directory, a zoo name or a module with its recipe.

:class:`TeacherInfo` is also the stored form (``house.json`` and ``supernet.json`` keep it under ``teacher``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bespoke.data import DataSplits
from bespoke.errors import BespokeError
from bespoke.export.builders import zoo_arch_config
from bespoke.export.model_dir import CARD, WEIGHTS, load_model_dir, read_card
from bespoke.zoo import create_model, get_pretrained_cfg, head_classes, head_linear

MODULE_MEAN_STD = (0.5, 0.5, 0.5)


class TeacherInfo(BaseModel):
    """What rebuilding and feeding a teacher needs (its weights travel beside it)."""

    model_config = ConfigDict(extra="forbid")

    source: str
    arch: str = ""
    arch_config: dict[str, Any] = Field(default_factory=dict)
    resolution: int
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    accuracy: float | None = None
    classes: list[str] = Field(default_factory=list)


def load_teacher(teacher: str | Path | nn.Module, *, resolution: int | None = None,
                 num_classes: int | None = None, arch_config: dict[str, Any] | None = None,
                 mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
                 ) -> tuple[nn.Module, TeacherInfo]:
    """The teacher module (eval mode) and its :class:`TeacherInfo`.

    Args:
        teacher: a model directory (``bespoke finetune``; a zoo-built one can be rebuilt at another
            ``resolution``), a zoo name (ImageNet weights, a head of ``num_classes``; ``resolution`` required), or
            a module (``arch_config`` required so it can be rebuilt).
        num_classes: for a model directory, the classes the data has (refused when the teacher has others).
    """
    if isinstance(teacher, nn.Module):
        return _from_module(teacher, resolution, num_classes, arch_config, mean, std)
    path = Path(teacher)
    if (path / CARD).is_file():
        return _from_model_dir(path, resolution, num_classes)
    if path.exists():
        raise BespokeError(f"{path} is not a model directory (no {CARD})",
                           "pass the --out folder of `bespoke finetune`, or a zoo model name")
    name = str(teacher)
    if resolution is None:
        raise BespokeError(f"teacher {name!r} is a zoo name: the resolution must be given",
                           "pass --resolution (e.g. 64), or a fine-tuned model directory as --teacher")
    cfg = get_pretrained_cfg(name)  # BespokeError for unknown names, listing the known ones
    classes = num_classes or cfg.num_classes
    model = create_model(name, num_classes=classes, resolution=resolution)
    info = TeacherInfo(source=f"zoo:{name}", arch=name, arch_config=zoo_arch_config(name, classes, resolution),
                       resolution=resolution, num_classes=classes, mean=tuple(mean or cfg.mean),
                       std=tuple(std or cfg.std))
    return model.eval(), info


def _from_module(model: nn.Module, resolution: int | None, num_classes: int | None,
                 arch_config: dict[str, Any] | None, mean: tuple[float, float, float] | None,
                 std: tuple[float, float, float] | None) -> tuple[nn.Module, TeacherInfo]:
    if arch_config is None:
        raise BespokeError("a teacher module needs its arch_config (the JSON recipe that rebuilds it)",
                           "pass a model directory or zoo name instead, or give arch_config")
    resolution = resolution or arch_config.get("resolution")
    if resolution is None:
        raise BespokeError("a teacher module needs its input resolution", "pass resolution=")
    classes = num_classes or arch_config.get("num_classes") or head_classes(head_linear(model)[1])
    info = TeacherInfo(source="module", arch=str(arch_config.get("name", type(model).__name__)),
                       arch_config=dict(arch_config), resolution=resolution, num_classes=classes,
                       mean=tuple(mean or MODULE_MEAN_STD), std=tuple(std or MODULE_MEAN_STD))
    return model.eval(), info


def _from_model_dir(path: Path, resolution: int | None, num_classes: int | None) -> tuple[nn.Module, TeacherInfo]:
    card = read_card(path)
    if num_classes is not None and card.num_classes != num_classes:
        raise BespokeError(f"teacher {path} has {card.num_classes} classes, the data {num_classes}",
                           "fine-tune the teacher on the same data set first")
    res = resolution or card.resolution
    arch_config = dict(card.arch_config)
    if res == card.resolution:
        model, _ = load_model_dir(path)
    elif arch_config.get("builder") == "zoo":
        model = create_model(card.arch, num_classes=card.num_classes, pretrained=False, resolution=res,
                             weights=path / WEIGHTS, model_args=arch_config.get("model_args"))
        arch_config["resolution"] = res
    else:
        raise BespokeError(f"teacher {path} cannot be rebuilt at resolution {res}",
                           f"use its own resolution {card.resolution}")
    info = TeacherInfo(source=str(path), arch=card.arch, arch_config=arch_config, resolution=res,
                       num_classes=card.num_classes, mean=card.mean, std=card.std, accuracy=card.accuracy,
                       classes=list(card.classes))
    return model.eval(), info


def check_teacher_fits(info: TeacherInfo, splits: DataSplits) -> None:
    """``BespokeError`` unless the teacher predicts the data's classes (their number; their names, in order, when
    the teacher records them): a student distilled otherwise would learn against the wrong labels."""
    if info.num_classes != splits.num_classes:
        raise BespokeError(f"teacher {info.source} has {info.num_classes} classes, data set {splits.name!r} has "
                           f"{splits.num_classes}", "fine-tune the teacher on the same data set first")
    if info.classes and list(info.classes) != list(splits.classes):
        diff = next(i for i, (a, b) in enumerate(zip(info.classes, splits.classes, strict=True)) if a != b)
        raise BespokeError(f"teacher {info.source} was trained on other classes than {splits.name!r}: class {diff} "
                           f"is {info.classes[diff]!r} there, {splits.classes[diff]!r} here",
                           "fine-tune the teacher on the same data set first")
