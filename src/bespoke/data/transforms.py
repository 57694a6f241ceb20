"""Image transforms on uint8 ``[3, R, R]`` tensors (torchvision.transforms.v2, no PIL): eval, flip, weak, strong.

- ``eval``: to float in [0, 1] + normalise.
- ``flip``: random horizontal flip + normalise (the plain fine-tuning recipe).
- ``weak``: random horizontal flip + random translation up to 12.5% (FixMatch's flip-and-shift) + normalise.
- ``strong``: weak + RandAugment (2 ops, magnitude 9) + normalise + RandomErasing (one box, Cutout-like).

Randomness comes from torch's RNG: in DataLoader workers it is seeded per worker from the loader's generator
(see :func:`bespoke.data.make_loader`); with ``num_workers=0`` it is the process RNG (``seed_everything``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torchvision.transforms import v2

from bespoke.errors import BespokeError

TransformKind = Literal["eval", "flip", "weak", "strong"]
TRANSFORM_KINDS: tuple[str, ...] = ("eval", "flip", "weak", "strong")
MAX_TRANSLATE = 0.125


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise BespokeError(
            f"mean/std must be 3 values each with std > 0, got mean={mean} std={std}",
            "pass the model's normalisation (get_pretrained_cfg(name).mean / .std), in 0..1 units",
        )
    return mean, std


def build_transform(
    kind: TransformKind, mean: Sequence[float], std: Sequence[float]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A transform mapping one uint8 ``[3, R, R]`` image to a normalised float32 ``[3, R, R]`` tensor.

    ``mean``/``std`` are per-channel, in 0..1 units (as in timm's pretrained configs).
    """
    if kind not in TRANSFORM_KINDS:
        raise BespokeError(f"unknown transform kind {kind!r}", f"use one of {', '.join(TRANSFORM_KINDS)}")
    mean_, std_ = _check_stats(mean, std)
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean_, std_)]
    if kind == "eval":
        return v2.Compose(to_float)
    if kind == "flip":
        return v2.Compose([v2.RandomHorizontalFlip(), *to_float])
    weak = [
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=0.0, translate=(MAX_TRANSLATE, MAX_TRANSLATE)),
    ]
    if kind == "weak":
        return v2.Compose(weak + to_float)
    return v2.Compose(
        [
            *weak,
            v2.RandAugment(num_ops=2, magnitude=9),
            *to_float,
            # After Normalize, value 0 is the mean colour: the erased box carries no signal.
            v2.RandomErasing(p=1.0, scale=(0.02, 0.25), ratio=(0.3, 3.3), value=0.0),
        ]
    )
