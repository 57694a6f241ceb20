"""Shared helpers of the block-engine tests: a tiny teacher, tiny donors, tiny synthetic data (no tests here)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from bespoke.data import DataSplits, TensorImageDataset
from bespoke.export import zoo_arch_config
from bespoke.zoo import create_model

R = 32
ARCH = "timm:mobilenetv3_small_050"
DONOR = "timm:mobilenetv3_small_050"
CLASSES = ["a", "b", "c", "d"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny convs on a shared 2-core machine run far faster on one thread than two (no spin-waiting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synthetic(n: int, seed: int) -> TensorImageDataset:
    """Class = which colour band is bright: learnable, tiny."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, len(CLASSES), (n,), generator=g)
    x = torch.randint(0, 60, (n, 3, R, R), generator=g, dtype=torch.uint8)
    for c in range(len(CLASSES)):
        x[y == c, c % 3, :, c * 8:(c + 1) * 8] += 150
    return TensorImageDataset(x, y, R)


def splits() -> DataSplits:
    return DataSplits("synthetic", list(CLASSES), synthetic(96, 0), synthetic(32, 1), synthetic(32, 2))


def teacher() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = create_model(ARCH, pretrained=False, num_classes=len(CLASSES), resolution=R).eval()
    return model, zoo_arch_config(ARCH, len(CLASSES), R)


def house_kwargs(**overrides) -> dict:
    """Arguments of a tiny, fast build_house (random-init donors, few steps)."""
    model, config = teacher()
    kwargs = dict(teacher=model, teacher_config=config, donors=[DONOR], data=splits(), size=8, max_span=2,
                  distill_steps=2, seed=0, pretrained_donors=False, resolution=R)
    kwargs.update(overrides)
    return kwargs
