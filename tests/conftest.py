"""Shared fixtures: tiny models and tiny synthetic data sets keep the suite fast and CPU-only."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

os.environ.setdefault("BESPOKE_PROGRESS", "0")
# under pytest-xdist (./run test: two workers on two cores) each worker keeps to one thread
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

FASHION_DIR = Path(os.environ.get("BESPOKE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
needs_fashion = pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                   reason="Debian dataset-fashion-mnist not installed")


BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (scripts, not a package) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through the module
    spec.loader.exec_module(module)
    return module


class TinyNet(nn.Module):
    """A 2-conv classifier, fast enough for any unit test."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def tiny_splits():
    """A learnable 3-class problem: the class sets which colour channel is bright."""
    from bespoke.data import DataSplits, TensorImageDataset

    def make(n: int, seed: int) -> TensorImageDataset:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % 3
        images = torch.randint(0, 60, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        images[torch.arange(n), labels] += 150
        return TensorImageDataset(images, labels, 16)

    return DataSplits(name="tiny", classes=["r", "g", "b"], train=make(96, 1), val=make(30, 2), test=make(60, 3))
