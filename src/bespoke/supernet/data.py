"""Data at every resolution of the search space, and small cached tensors for calibration and evaluation.

A subnet is deployed at its own input resolution, so its BN statistics, predictor measurements and test accuracy
use images prepared at that resolution, the way a deployer would load them. Two sources:
:class:`SpecSource` reloads a data set spec (``load_dataset``) per resolution; :class:`ResizedSource` resizes
given splits in memory (synthetic or custom data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from bespoke.data import DataSplits, build_transform, dataset_labels, load_dataset


class DataSource(Protocol):
    """Where the supernet engine gets its images: the same data set at any resolution."""

    def splits(self, resolution: int) -> DataSplits: ...

    def describe(self) -> dict[str, Any]: ...


class SpecSource:
    """A ``load_dataset`` spec, loaded once per resolution (same seed: same train/val/test membership)."""

    def __init__(self, spec: str, *, seed: int = 0, val_fraction: float = 0.1, train_limit: int | None = None,
                 test_limit: int | None = None) -> None:
        self.spec, self.seed, self.val_fraction = spec, seed, val_fraction
        self.train_limit, self.test_limit = train_limit, test_limit
        self._cache: dict[int, DataSplits] = {}

    def splits(self, resolution: int) -> DataSplits:
        if resolution not in self._cache:
            self._cache[resolution] = load_dataset(self.spec, resolution=resolution, seed=self.seed,
                                                   val_fraction=self.val_fraction, train_limit=self.train_limit,
                                                   test_limit=self.test_limit)
        return self._cache[resolution]

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "seed": self.seed, "val_fraction": self.val_fraction,
                "train_limit": self.train_limit, "test_limit": self.test_limit}


class ResizedDataset(Dataset):
    """``dataset`` with every uint8 image resized (antialiased bilinear) to ``resolution``."""

    def __init__(self, dataset: Dataset, resolution: int) -> None:
        self.dataset, self.resolution = dataset, resolution

    @property
    def labels(self) -> torch.Tensor:
        return dataset_labels(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        if image.shape[-1] != self.resolution:
            image = TF.resize(image, [self.resolution, self.resolution], antialias=True)
        return image, label


class ResizedSource:
    """Given splits, resized in memory to any other resolution."""

    def __init__(self, splits: DataSplits) -> None:
        self.base = splits

    def splits(self, resolution: int) -> DataSplits:
        b = self.base
        return DataSplits(b.name, b.classes, ResizedDataset(b.train, resolution), ResizedDataset(b.val, resolution),
                          ResizedDataset(b.test, resolution))

    def describe(self) -> dict[str, Any]:
        return {"spec": None, "name": self.base.name}


def image_tensor(ds: Dataset, n: int | None, mean: Sequence[float], std: Sequence[float], *, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` items of ``ds`` (a seeded random subset; all when ``None``) as normalised images + labels."""
    size = len(ds)  # type: ignore[arg-type]
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)) if n is not None else None
    idx = order[: min(n, size)].tolist() if order is not None and n is not None else list(range(size))
    tf = build_transform("eval", mean, std)
    images, labels = [], []
    for i in idx:
        image, label = ds[i]
        images.append(tf(image))
        labels.append(int(label))
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)
