"""Resumable batch streams: seeded per-epoch permutations read in order, position saved in checkpoints.

Items are fetched in this process (no workers). Each item's augmentation draws come from a generator seeded by
``(seed, salt, epoch, index)``, so a batch is the same whatever process fetches it: a resumed run repeats an
uninterrupted one, and a data-parallel run (each rank fetching its share of every global batch) trains on the very
images the single-process run does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from bespoke.errors import BespokeError


class BatchStream:
    """Endless batches of ``batch_size`` items of ``dataset``, reshuffled each epoch (last partial batch dropped).

    With ``world_size`` > 1 every rank walks the same global batches and returns its share (every
    ``world_size``-th item from position ``rank``); the global batch must split evenly.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, salt: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n == 0:
            raise ValueError("empty dataset")
        self.batch_size = min(batch_size, self.n)
        if self.batch_size % world_size:
            raise BespokeError(f"a batch of {self.batch_size} images does not split evenly over {world_size} "
                               "processes", f"use a batch size (and data set) that is a multiple of {world_size}")
        self.seed, self.salt, self.rank, self.world_size = seed, salt, rank, world_size
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.salt * 10_007 + self.epoch)
        return torch.randperm(self.n, generator=gen)

    def _item(self, index: int) -> Any:
        seed = int(np.random.SeedSequence([self.seed, self.salt, self.epoch, index]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]

    def next(self) -> Any:
        if self.pos + self.batch_size > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation()
        idx = self._order[self.pos:self.pos + self.batch_size].tolist()
        self.pos += self.batch_size
        return default_collate([self._item(i) for i in idx[self.rank::self.world_size]])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()
