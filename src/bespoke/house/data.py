"""Data plumbing of the block engine: the data set of a house, seeded batch streams, held-out tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from bespoke.data import DataSplits, build_transform, load_dataset, make_loader
from bespoke.errors import BespokeError
from bespoke.house.house import House


def resolve_data(data: DataSplits | str, *, resolution: int, seed: int = 0, train_limit: int | None = None,
                 test_limit: int | None = None) -> DataSplits:
    """``data`` itself, or the data set it names loaded at ``resolution``."""
    if isinstance(data, DataSplits):
        return data
    if isinstance(data, str):
        return load_dataset(data, resolution=resolution, seed=seed, train_limit=train_limit, test_limit=test_limit)
    raise BespokeError(f"data must be a DataSplits or a data set name/path, got {type(data).__name__}")


def house_splits(house: House, data: DataSplits | str | None = None) -> DataSplits:
    """The data a house was built from (reloaded from its record), or ``data`` when given."""
    spec = data if data is not None else house.meta.data.get("spec")
    if spec is None:
        raise BespokeError("this house was built from in-memory data", "pass data= (the same DataSplits)")
    return resolve_data(spec, resolution=house.resolution, seed=int(house.meta.settings.get("seed", 0)),
                        train_limit=house.meta.data.get("train_limit"), test_limit=house.meta.data.get("test_limit"))


def data_record(data: DataSplits | str, splits: DataSplits, **limits: Any) -> dict[str, Any]:
    """What the house remembers of its data (so a later search can reload the same splits)."""
    return {"spec": data if isinstance(data, str) else None, "name": splits.name, "classes": list(splits.classes),
            "train": len(splits.train), "val": len(splits.val), "test": len(splits.test), **limits}


def batch_stream(ds: Dataset, mean: tuple[float, ...], std: tuple[float, ...], batch_size: int, seed: int,
                 kind: str = "weak") -> Callable[[], torch.Tensor]:
    """A function returning the next batch of normalised images, forever (reshuffled each pass, seeded)."""
    if len(ds) == 0:  # type: ignore[arg-type]
        raise BespokeError("the training split is empty", "check the data path and --train-limit")
    transform = build_transform(kind, mean, std)  # type: ignore[arg-type]
    drop_last = len(ds) >= batch_size  # type: ignore[arg-type]

    def batches() -> Iterator[torch.Tensor]:
        epoch = 0
        while True:
            loader = make_loader(ds, transform, batch_size, shuffle=True, seed=seed * 1009 + epoch,
                                 drop_last=drop_last)
            for x, _ in loader:
                yield x
            epoch += 1

    stream = batches()
    return lambda: next(stream)


def held_out(ds: Dataset, mean: tuple[float, ...], std: tuple[float, ...], limit: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` items of ``ds`` as normalised image and label tensors (eval transform)."""
    n = min(limit, len(ds))  # type: ignore[arg-type]
    if n == 0:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    transform = build_transform("eval", mean, std)
    items = [ds[i] for i in range(n)]
    return torch.stack([transform(x) for x, _ in items]), torch.tensor([int(y) for _, y in items])


def validation_split(splits: DataSplits) -> Dataset:
    """The split used for held-out estimates: ``val`` (never the test split; train when there is no val)."""
    return splits.val if len(splits.val) > 0 else splits.train
