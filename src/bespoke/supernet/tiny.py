"""Tiny stand-ins for tests and examples: a genuine timm EfficientNet (~28k parameters) and a learnable
3-class image set. Both build in milliseconds, so the whole engine can be exercised on CPU in seconds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bespoke.data import DataSplits, TensorImageDataset
from bespoke.export import register_arch_builder
from bespoke.zoo import freeze_same_padding

TINY_ARCH = (("ds_r1_k3_s1_e1_c8",), ("ir_r2_k3_s2_e6_c12",), ("ir_r3_k5_s2_e6_c16",), ("ir_r1_k3_s1_e6_c24",))
TINY_BUILDER = "tiny-efficientnet"


def tiny_efficientnet(num_classes: int = 3, resolution: int = 32, seed: int = 0) -> nn.Module:
    """A timm ``EfficientNet`` with TF-SAME padding (frozen for ``resolution``), ReLU6, kernels 3 and 5."""
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    torch.manual_seed(seed)
    model = EfficientNet(decode_arch_def([list(s) for s in TINY_ARCH]), num_classes=num_classes, stem_size=8,
                         num_features=64, act_layer=nn.ReLU6, pad_type="same", fix_stem=True,
                         round_chs_fn=lambda c: c, drop_rate=0.2)
    return freeze_same_padding(model, resolution)


def tiny_arch_config(num_classes: int, resolution: int) -> dict[str, Any]:
    """Recipe of :func:`tiny_efficientnet` for a model card (rebuilt by the ``tiny-efficientnet`` builder)."""
    return {"builder": TINY_BUILDER, "num_classes": num_classes, "resolution": resolution}


register_arch_builder(TINY_BUILDER, lambda c: tiny_efficientnet(c["num_classes"], c["resolution"]))


def tiny_splits(resolution: int = 32, n_train: int = 96, n_val: int = 30, n_test: int = 60) -> DataSplits:
    """3 classes; the class sets which colour channel is bright (learnable in a few steps)."""

    def make(n: int, seed: int) -> TensorImageDataset:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % 3
        images = torch.randint(0, 60, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        images[torch.arange(n), labels] += 150
        return TensorImageDataset(images, labels, resolution)

    return DataSplits(name="tiny", classes=["r", "g", "b"], train=make(n_train, 1), val=make(n_val, 2),
                      test=make(n_test, 3))
