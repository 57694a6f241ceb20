"""``make_loader``: a seeded DataLoader over a dataset, optionally through a transform."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bespoke.data.datasets import TransformedDataset
from bespoke.errors import BespokeError


def _seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy in a worker from torch's per-worker seed (drawn from the loader generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    ds: Dataset,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over ``ds`` (wrapped in :class:`TransformedDataset` unless ``transform`` is ``None``).

    Shuffling order (and, with workers, augmentation randomness) comes from a generator seeded with ``seed``:
    the same seed gives the same sequence of epochs. Pass a :class:`TwoViewDataset` with ``transform=None``
    for semi-supervised batches ``(weak, strong, label)``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BespokeError(f"batch_size must be a positive integer, got {batch_size!r}", "use e.g. 64")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise BespokeError(f"num_workers must be >= 0, got {num_workers!r}", "use 0 to load in-process")
    data = ds if transform is None else TransformedDataset(ds, transform)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
    )
