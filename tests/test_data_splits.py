"""bespoke.data splits: labels fast path, stratified selection, labelled/unlabelled split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import ConcatDataset, Dataset, Subset

from bespoke.data import (
    TensorImageDataset,
    TransformedDataset,
    TwoViewDataset,
    class_counts,
    dataset_labels,
    split_labelled,
    stratified_subset,
)
from bespoke.data.splits import carve_val, stratified_pick
from bespoke.errors import BespokeError


def tiny(labels: list[int], size: int = 4) -> TensorImageDataset:
    n = len(labels)
    images = torch.arange(n * size * size, dtype=torch.int64).remainder(256).to(torch.uint8)
    return TensorImageDataset(images.reshape(n, 1, size, size), torch.tensor(labels), resolution=size)


class PlainDataset(Dataset):
    """No labels attribute: dataset_labels must fall back to iterating."""

    def __init__(self, labels: list[int]) -> None:
        self.items = labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(3, 2, 2, dtype=torch.uint8), self.items[i]


def test_dataset_labels_fast_paths() -> None:
    ds = tiny([0, 1, 2, 0, 1, 2, 2])
    assert dataset_labels(ds).tolist() == [0, 1, 2, 0, 1, 2, 2]
    nested = Subset(Subset(ds, [6, 5, 4, 3]), [0, 2])
    assert dataset_labels(nested).tolist() == [2, 1]
    assert dataset_labels(TransformedDataset(nested, lambda x: x)).tolist() == [2, 1]
    assert dataset_labels(TwoViewDataset(ds, lambda x: x, lambda x: x)).shape == (7,)
    assert dataset_labels(ConcatDataset([nested, ds])).tolist() == [2, 1, 0, 1, 2, 0, 1, 2, 2]
    assert dataset_labels(PlainDataset([3, 1])).tolist() == [3, 1]
    assert dataset_labels(Subset(ds, [])).tolist() == []


def test_split_labelled_stratified_and_disjoint() -> None:
    labels = [c for c in range(4) for _ in range(25)]
    ds = tiny(labels)
    labelled, unlabelled = split_labelled(ds, 0.2, seed=0)
    assert class_counts(labelled, 4).tolist() == [5, 5, 5, 5]
    assert set(labelled.indices).isdisjoint(unlabelled.indices)
    assert sorted(labelled.indices + unlabelled.indices) == list(range(100))
    assert unlabelled[0][1] in range(4)  # unlabelled items still carry a label (for measurement only)


def test_split_labelled_deterministic_by_seed() -> None:
    ds = tiny([i % 5 for i in range(200)])
    a, _ = split_labelled(ds, 0.1, seed=7)
    b, _ = split_labelled(ds, 0.1, seed=7)
    c, _ = split_labelled(ds, 0.1, seed=8)
    assert a.indices == b.indices and a.indices != c.indices


def test_split_labelled_at_least_one_per_class() -> None:
    ds = tiny([0] * 50 + [1] * 50 + [2] * 2)
    labelled, unlabelled = split_labelled(ds, 0.01, seed=0)
    assert (class_counts(labelled, 3) >= 1).all()
    labelled, unlabelled = split_labelled(ds, 1.0, seed=0)
    assert len(labelled) == 102 and len(unlabelled) == 0


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_split_labelled_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(BespokeError, match="fraction"):
        split_labelled(tiny([0, 1]), fraction, seed=0)


def test_carve_val_keeps_a_train_item_per_class() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1, 2])
    train, val = carve_val(labels, 0.5, seed=0)
    assert set(labels[train]) == {0, 1, 2}
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(7))


def test_stratified_subset_is_balanced() -> None:
    ds = tiny([i % 3 for i in range(90)])
    sub = stratified_subset(ds, 30, seed=1)
    assert class_counts(sub, 3).tolist() == [10, 10, 10]
    assert sub.indices == stratified_subset(ds, 30, seed=1).indices


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**40),
    min_per_class=st.integers(0, 2),
)
def test_stratified_pick_properties(
    counts: list[int], fraction: float, seed: int, min_per_class: int
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = np.random.default_rng(seed + 1).permutation(labels)
    total = round(len(labels) * fraction)
    picked, rest = stratified_pick(labels, total, np.random.default_rng(seed), min_per_class=min_per_class)
    assert sorted(np.concatenate([picked, rest]).tolist()) == list(range(len(labels)))
    got = np.bincount(labels[picked], minlength=len(counts))
    for c, n in enumerate(counts):
        assert min(min_per_class, n) <= got[c] <= n
        assert abs(got[c] - n * total / max(len(labels), 1)) <= 1 + min_per_class
