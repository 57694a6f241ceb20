"""Determinism: the same seed gives the same house index, the same search result and the same selected subnets.

Each pair of runs is independent (its own output folder, no shared caches) and the global RNGs are scrambled in
between, so a result that silently depends on what ran before in the process fails here. Equality is exact. Targets
are counted ones (MACs, parameters): a latency target depends on timings, which no seed fixes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bespoke.export import ModelCard, save_model_dir
from bespoke.house import build_house
from bespoke.search import AnnealConfig
from bespoke.search.select import search_target
from bespoke.supernet import (
    ResizedSource,
    SelectConfig,
    SupernetJob,
    SupernetTrainConfig,
    select_subnets,
    train_supernet,
)
from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet, tiny_splits
from bespoke.targets import targets_from_dicts
from tests.test_house_helpers import house_kwargs, one_thread, splits


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def scramble_global_rngs(seed: int) -> None:
    """What earlier work in the same process would leave behind."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.rand(17)


def index_entries(root: Path) -> list[dict]:
    """Every alternative's id, recipe, status, weights file and metrics (costs and memory are kept apart)."""
    return json.loads((root / "index.json").read_text())["entries"]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), f"{a} != {b}"


@pytest.fixture(scope="module")
def houses(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("houses")
    for name, scramble in (("a", 1), ("b", 2)):
        scramble_global_rngs(scramble)
        build_house(**house_kwargs(out=root / name, size=4, distill_steps=2, seed=5))
    return root / "a", root / "b"


def test_same_seed_same_house_index(houses, tmp_path) -> None:
    a, b = houses
    entries = index_entries(a)
    assert entries == index_entries(b)
    assert [e["status"] for e in entries] == ["done"] * 4 and all(e["metrics"]["val_loss"] for e in entries)
    for entry in entries:
        assert_same_weights(a / entry["file"], b / entry["file"])
    other = build_house(**house_kwargs(out=tmp_path / "c", size=4, distill_steps=1, seed=6))
    assert [e.recipe for e in other.entries()] != [e["recipe"] for e in entries], "the seed must matter"


def test_same_seed_same_search_result(houses) -> None:
    from bespoke.house import House

    targets = targets_from_dicts([{"name": "params", "runtime": "params", "budget": "0.97x"}])
    results = []
    for house_dir, scramble in zip(houses, (3, 4), strict=True):
        scramble_global_rngs(scramble)
        house = House.open(house_dir)
        results.append([search_target(house, t, data=splits(), anneal_config=AnnealConfig(iterations=20, seed=1),
                                      eval_images=16).to_dict() for t in targets])
    strip = ("seconds", "cpu_s")
    first, second = ([{k: v for k, v in r.items() if k not in strip} for r in rs] for rs in results)
    assert first == second
    assert all(r["alternatives"] and r["predicted"] <= r["budget_resolved"] for r in first)


def test_same_seed_same_supernet_and_selected_subnets(tmp_path) -> None:
    teacher = tmp_path / "teacher"
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(3, 32), engine="finetune", num_classes=3,
                     resolution=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    save_model_dir(teacher, tiny_efficientnet(), card)
    data = ResizedSource(tiny_splits(32))
    targets = targets_from_dicts([{"name": "params", "runtime": "params", "budget": "0.6x"}])
    cfg = SelectConfig(predictor_samples=8, predictor_val_images=10, calib_images=8, calib_batch=8, population=8,
                       generations=3, calibration_subnets=2, seed=4)
    choices = []
    for name, scramble in (("a", 5), ("b", 6)):
        scramble_global_rngs(scramble)
        job = SupernetJob(teacher=str(teacher), data="tiny", labels=0.25, out=tmp_path / name,
                          train=SupernetTrainConfig(steps=3, batch_size=8, n_random=1, eval_images=0, seed=3))
        train_supernet(job, data=data)
        result = select_subnets(tmp_path / name, targets, tmp_path / f"out-{name}", config=cfg, data=data)
        choices.append([(c.target, c.config, c.predicted_accuracy, c.predicted_cost, c.accuracy)
                        for c in result.choices])
    assert_same_weights(tmp_path / "a" / "supernet.safetensors", tmp_path / "b" / "supernet.safetensors")
    assert choices[0] == choices[1]
    assert [c[0] for c in choices[0]] == ["params"]
    assert_same_weights(tmp_path / "out-a" / "params" / "model.safetensors",
                        tmp_path / "out-b" / "params" / "model.safetensors")
