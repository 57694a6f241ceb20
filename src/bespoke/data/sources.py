"""``load_dataset``: one spec string -> train/val/test splits of uint8 ``[3, R, R]`` images.

Specs: ``"fashion-mnist"`` (Debian IDX files), a CIFAR-10/100 python-format directory, or an ImageFolder
directory. The order of selection is fixed and seeded: ``train_limit`` picks a stratified subset of the
source's training pool; when the source has no val split, val is carved (stratified, ``val_fraction``) out of
that pool, so ``len(train) + len(val) == train_limit``; ``test_limit`` picks a stratified subset of test. A
source's own val split is used whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bespoke.data.cifar import cifar_kind, read_cifar
from bespoke.data.datasets import ArraySplits, DataSplits, ImageFileDataset, TensorImageDataset
from bespoke.data.idx import read_fashion_mnist
from bespoke.data.image_folder import FolderLayout, FolderSplit, is_image_folder, scan_image_folder
from bespoke.data.splits import SALT_TEST_LIMIT, SALT_TRAIN_LIMIT, carve_val, check_limit, stratified_limit
from bespoke.errors import BespokeError

FASHION_MNIST_NAMES = frozenset({"fashion-mnist", "fashion_mnist", "fashionmnist"})
_SPEC_HINT = (
    "use 'fashion-mnist', an ImageFolder directory (train/<class>/*, test/<class>/*) "
    "or a CIFAR-10/100 python-format directory (e.g. cifar-10-batches-py)"
)

Indices = np.ndarray


def load_dataset(
    spec: str,
    *,
    resolution: int,
    seed: int = 0,
    val_fraction: float = 0.1,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> DataSplits:
    """Load a data set as :class:`DataSplits` whose items are ``(uint8 [3, R, R], int label)``.

    Deterministic in ``seed``. Fashion-MNIST and CIFAR are held in memory (resized once); ImageFolder images
    are decoded lazily on access (shorter side resized to R, then center-cropped to R x R).
    """
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise BespokeError(f"resolution must be a positive integer, got {resolution!r}", "use e.g. 64 or 224")
    if not 0.0 <= val_fraction < 1.0:
        raise BespokeError(
            f"val_fraction must be in [0, 1), got {val_fraction}", "use e.g. 0.1 (10% of train held out)"
        )
    check_limit(train_limit, "train_limit")
    check_limit(test_limit, "test_limit")
    plan = _SplitPlan(seed, val_fraction, train_limit, test_limit)

    spec = str(spec)
    if spec.strip().lower() in FASHION_MNIST_NAMES:
        return _from_arrays(read_fashion_mnist(), resolution, plan)
    root = Path(spec).expanduser()
    if not root.exists():
        raise BespokeError(f"unknown data set {spec!r}: not a built-in name nor a directory", _SPEC_HINT)
    if not root.is_dir():
        raise BespokeError(f"data set {spec!r} is a file, expected a directory", _SPEC_HINT)
    if cifar_kind(root):
        return _from_arrays(read_cifar(root), resolution, plan)
    if is_image_folder(root):
        return _from_folder(scan_image_folder(root), resolution, plan)
    raise BespokeError(f"{root} is neither an ImageFolder (no train/) nor a CIFAR directory", _SPEC_HINT)


@dataclass(frozen=True)
class _SplitPlan:
    seed: int
    val_fraction: float
    train_limit: int | None
    test_limit: int | None

    def indices(
        self, train_labels: np.ndarray, test_labels: np.ndarray, *, carve: bool
    ) -> tuple[Indices, Indices | None, Indices]:
        """Indices of (train, val or ``None`` when the source has its own, test) into the source's arrays."""
        pool = stratified_limit(train_labels, self.train_limit, self.seed, SALT_TRAIN_LIMIT)
        val = None
        if carve:
            train_rel, val_rel = carve_val(train_labels[pool], self.val_fraction, self.seed)
            pool, val = pool[train_rel], pool[val_rel]
        return pool, val, stratified_limit(test_labels, self.test_limit, self.seed, SALT_TEST_LIMIT)


def _from_arrays(raw: ArraySplits, resolution: int, plan: _SplitPlan) -> DataSplits:
    if len(raw.train_labels) == 0 or len(raw.test_labels) == 0:
        raise BespokeError(f"data set {raw.name} has an empty train or test split", "check the source files")
    train, val, test = plan.indices(raw.train_labels, raw.test_labels, carve=True)
    assert val is not None

    def subset(images: np.ndarray, labels: np.ndarray, idx: Indices) -> TensorImageDataset:
        return TensorImageDataset(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]), resolution)

    return DataSplits(
        raw.name,
        raw.classes,
        subset(raw.train_images, raw.train_labels, train),
        subset(raw.train_images, raw.train_labels, val),
        subset(raw.test_images, raw.test_labels, test),
    )


def _from_folder(layout: FolderLayout, resolution: int, plan: _SplitPlan) -> DataSplits:
    train, val, test = plan.indices(layout.train.labels, layout.test.labels, carve=layout.val is None)

    def subset(split: FolderSplit, idx: Indices | None) -> ImageFileDataset:
        idx = np.arange(len(split.paths)) if idx is None else idx
        return ImageFileDataset(
            [split.paths[i] for i in idx], torch.from_numpy(split.labels[idx]), resolution
        )

    return DataSplits(
        layout.name,
        layout.classes,
        subset(layout.train, train),
        subset(layout.val, None) if layout.val is not None else subset(layout.train, val),
        subset(layout.test, test),
    )
