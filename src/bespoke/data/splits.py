"""Stratified, seeded index selection: size limits, validation carving, the labelled/unlabelled split.

Every selection draws from its own NumPy generator seeded with ``(purpose, seed)``, so the same seed always
gives the same indices and different purposes (limit, val, labelled) never share a random stream. Indices come
back sorted. Per-class counts follow the class proportions (largest remainder, seeded tie-break).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from bespoke.data.datasets import dataset_labels
from bespoke.errors import BespokeError

# Purposes, mixed into the seed so each selection has an independent random stream.
SALT_TRAIN_LIMIT = 1
SALT_VAL = 2
SALT_TEST_LIMIT = 3
SALT_LABELLED = 4
SALT_SUBSET = 5


def _rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([salt, seed % 2**64])


def _allocate(
    counts: np.ndarray, total: int, low: np.ndarray, high: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Share ``total`` among classes in proportion to ``counts`` (largest remainder), clip to [low, high]."""
    n = int(counts.sum())
    if n == 0:
        return np.zeros_like(counts)
    exact = counts * (total / n)
    take = np.floor(exact).astype(np.int64)
    remainder = total - int(take.sum())
    # Largest fractional part first; ties broken at random (seeded), not always in favour of class 0.
    order = np.lexsort((rng.random(len(counts)), -(exact - take)))
    take[order[:remainder]] += 1
    return np.clip(take, low, high)


def stratified_pick(
    labels: np.ndarray,
    total: int,
    rng: np.random.Generator,
    *,
    min_per_class: int = 0,
    keep_per_class: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick about ``total`` indices stratified by label; return ``(picked, rest)``, both sorted.

    Each class gives at least ``min_per_class`` (if it has them) and keeps at least ``keep_per_class`` back.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse)
    low = np.minimum(min_per_class, counts)
    high = np.maximum(counts - keep_per_class, low)
    take = _allocate(counts, total, low, high, rng)
    groups = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    chosen = [rng.permutation(group)[:k] for group, k in zip(groups, take, strict=True)]
    picked = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(len(labels)), picked, assume_unique=True)
    return picked.astype(np.int64), rest.astype(np.int64)


def check_limit(limit: int | None, what: str) -> None:
    """``BespokeError`` unless ``limit`` is ``None`` or a positive int."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise BespokeError(f"{what} must be a positive integer, got {limit!r}", f"use {what}=None for all")


def stratified_limit(labels: np.ndarray, limit: int | None, seed: int, salt: int) -> np.ndarray:
    """Sorted indices of a stratified seeded subset of at most ``limit`` items (all of them if ``None``)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    return stratified_pick(labels, limit, _rng(seed, salt))[0]


def carve_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``(train, val)``: stratified, seeded ``val_fraction``; each class keeps 1+ train."""
    if not 0.0 <= val_fraction < 1.0:
        raise BespokeError(
            f"val_fraction must be in [0, 1), got {val_fraction}", "use e.g. 0.1 (10% of train held out)"
        )
    total = math.floor(len(labels) * val_fraction + 0.5)
    val, train = stratified_pick(labels, total, _rng(seed, SALT_VAL), keep_per_class=1)
    return train, val


def split_labelled(ds: Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Split ``ds`` into ``(labelled, unlabelled)`` subsets, stratified by class, deterministic in ``seed``.

    ``fraction`` of the items (rounded, at least one per class) is labelled. Unlabelled items still carry
    their true label: it exists only to measure pseudo-label quality; training must never use it as a target.
    """
    if not 0.0 < fraction <= 1.0:
        raise BespokeError(
            f"label fraction must be in (0, 1], got {fraction}", "use e.g. 0.1 to keep 10% of labels"
        )
    labels = dataset_labels(ds).numpy()
    if len(labels) == 0:
        raise BespokeError("cannot split an empty dataset into labelled/unlabelled", "check the train split")
    total = math.floor(len(labels) * fraction + 0.5)
    labelled, unlabelled = stratified_pick(labels, total, _rng(seed, SALT_LABELLED), min_per_class=1)
    return Subset(ds, labelled.tolist()), Subset(ds, unlabelled.tolist())


def stratified_subset(ds: Dataset, size: int, seed: int) -> Subset:
    """A stratified seeded subset of ``ds`` with at most ``size`` items (e.g. a quick evaluation slice)."""
    check_limit(size, "size")
    labels = dataset_labels(ds).numpy()
    return Subset(ds, stratified_limit(labels, size, seed, SALT_SUBSET).tolist())


def class_counts(ds: Dataset, num_classes: int) -> torch.Tensor:
    """Items per class of ``ds`` (int64 ``[num_classes]``), from labels only."""
    return torch.bincount(dataset_labels(ds), minlength=num_classes)
