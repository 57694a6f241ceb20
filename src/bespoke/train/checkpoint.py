"""Resumable training state: one atomic file, loadable with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bespoke.errors import BespokeError
from bespoke.utils.atomic import torch_save


class Checkpointer:
    """Saves and restores a training-state dict (model/optimizer/scheduler state dicts, counters, RNG state).

    Only tensors and plain containers go in, so loading never unpickles code.
    """

    def __init__(self, directory: str | Path, name: str = "last.pt") -> None:
        self.path = Path(directory) / name

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict[str, Any]) -> None:
        torch_save(state, self.path)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a checkpoint we wrote atomically should never be corrupt: say so loudly
            first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
            raise BespokeError(f"cannot read checkpoint {self.path} ({type(exc).__name__}: {first})",
                               "delete it to restart the job from scratch") from None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
