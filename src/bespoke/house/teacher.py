"""The teacher a house is built from: a model directory, a zoo name, or a module with its recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from bespoke.data import DataSplits
from bespoke.errors import BespokeError
from bespoke.export import CARD, load_model_dir, zoo_arch_config
from bespoke.zoo import create_model, get_pretrained_cfg, head_classes, head_linear


@dataclass
class TeacherInfo:
    """A teacher module plus what rebuilding and feeding it needs."""

    model: nn.Module
    arch_config: dict[str, Any]
    num_classes: int
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    accuracy: float | None = None
    classes: list[str] = field(default_factory=list)


def resolve_teacher(teacher: str | Path | nn.Module, *, resolution: int | None = None,
                    num_classes: int | None = None, arch_config: dict[str, Any] | None = None,
                    mean: tuple[float, float, float] | None = None,
                    std: tuple[float, float, float] | None = None) -> TeacherInfo:
    """Load the teacher.

    Args:
        teacher: a model directory written by ``bespoke finetune`` (card.json + model.safetensors), a zoo
            model name (ImageNet weights, new head of ``num_classes``), or a module (then ``arch_config``,
            ``resolution`` and ``num_classes`` are required so the house can rebuild it).
    """
    if isinstance(teacher, nn.Module):
        if arch_config is None:
            raise BespokeError("a teacher module needs its arch_config (the JSON recipe that rebuilds it)",
                               "pass a model directory or zoo name instead, or give arch_config")
        resolution = resolution or arch_config.get("resolution")
        num_classes = num_classes or arch_config.get("num_classes") or head_classes(head_linear(teacher)[1])
        if resolution is None:
            raise BespokeError("a teacher module needs its input resolution", "pass resolution=")
        return TeacherInfo(teacher.eval(), dict(arch_config), num_classes, resolution,
                           tuple(mean or (0.5, 0.5, 0.5)), tuple(std or (0.5, 0.5, 0.5)), "module")
    path = Path(teacher)
    if (path / CARD).is_file():
        model, card = load_model_dir(path)
        return TeacherInfo(model.eval(), dict(card.arch_config), card.num_classes, card.resolution,
                           tuple(card.mean), tuple(card.std), str(path), card.accuracy, list(card.classes))
    if path.exists():
        raise BespokeError(f"{path} is not a model directory (no {CARD})",
                           "pass the --out folder of `bespoke finetune`, or a zoo model name")
    name = str(teacher)
    cfg = get_pretrained_cfg(name)
    res = resolution or 64
    classes = num_classes or cfg.num_classes
    model = create_model(name, num_classes=classes, resolution=res)
    return TeacherInfo(model.eval(), zoo_arch_config(name, classes, res), classes, res,
                       tuple(mean or cfg.mean), tuple(std or cfg.std), f"zoo:{name}")


def check_teacher_fits(num_classes: int, classes: list[str], source: str, splits: DataSplits) -> None:
    """``BespokeError`` unless the teacher predicts the data's classes (their number; their names, in order, when
    the teacher's card records them): a house built otherwise would score alternatives against the wrong labels."""
    if num_classes != splits.num_classes:
        raise BespokeError(f"teacher {source} has {num_classes} classes, data set {splits.name!r} has "
                           f"{splits.num_classes}", "fine-tune the teacher on the same data set first")
    if classes and list(classes) != list(splits.classes):
        diff = next(i for i, (a, b) in enumerate(zip(classes, splits.classes, strict=True)) if a != b)
        raise BespokeError(f"teacher {source} was trained on other classes than {splits.name!r}: class {diff} is "
                           f"{classes[diff]!r} there, {splits.classes[diff]!r} here",
                           "fine-tune the teacher on the same data set first")
