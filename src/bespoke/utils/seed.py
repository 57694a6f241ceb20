"""Determinism: one seed fixes Python, NumPy and torch RNGs."""

from __future__ import annotations

import random
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from bespoke.errors import BespokeError

#: Largest seed a user may give: NumPy takes 32-bit seeds, and derived seeds (``seed * 1_000_003 + i``) must still
#: fit torch's 64-bit generators.
MAX_SEED = 2**32 - 1
SEED_RULE = f"a seed is a whole number from 0 to {MAX_SEED}"

#: A user-given seed in a pydantic model: a whole number (no bool) in 0..MAX_SEED.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, strict=True, description=SEED_RULE)]


def check_seed(seed: int, what: str = "seed") -> int:
    """``seed`` itself when it is a valid user seed (see :data:`Seed`), else a ``BespokeError``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BespokeError(f"{what} {seed!r:.40} is out of range", SEED_RULE)
    return seed


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG we use and return a ``torch.Generator`` seeded the same, for samplers and loaders."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def rng_state() -> dict:
    """The RNG state of Python, NumPy and torch, as tensors/plain values (safe for ``weights_only`` loading)."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
