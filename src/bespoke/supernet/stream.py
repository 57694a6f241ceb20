"""Resumable batch streams: seeded per-epoch permutations read in order, position saved in checkpoints.

Items are fetched in this process (no workers), so augmentation randomness comes from the process RNG that the
trainer saves and restores; with the stream position that makes a resumed run repeat an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, default_collate


class BatchStream:
    """Endless batches of ``batch_size`` items of ``dataset``, reshuffled each epoch (last partial batch dropped)."""

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, salt: int) -> None:
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n == 0:
            raise ValueError("empty dataset")
        self.batch_size = min(batch_size, self.n)
        self.seed, self.salt = seed, salt
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.salt * 10_007 + self.epoch)
        return torch.randperm(self.n, generator=gen)

    def next(self) -> Any:
        if self.pos + self.batch_size > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation()
        idx = self._order[self.pos:self.pos + self.batch_size].tolist()
        self.pos += self.batch_size
        return default_collate([self.dataset[i] for i in idx])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()
