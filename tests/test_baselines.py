"""bespoke.baselines: uniform pruning to a budget, the replayable pruned recipe, prune + KD with resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bespoke.baselines import (
    BudgetInfo,
    PruneSettings,
    Teacher,
    TrainData,
    build_pruned,
    prune_and_distill,
    prune_to_budget,
    prune_uniform,
    pruned_arch_config,
)
from bespoke.baselines.pruned import SEARCH_FILE
from bespoke.data import TensorImageDataset
from bespoke.errors import BespokeError
from bespoke.export import ModelCard, count_macs, load_model_dir, register_arch_builder, save_model_dir
from bespoke.train import FinetuneConfig

RES = 16


class SmallNet(nn.Module):
    """Three convs (one depthwise, one residual pair) and a classifier: enough coupling for Torch-Pruning."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32),
                                nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(32, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.dw(x)
        return self.head(self.pw(x))


def _build_small(config: dict) -> nn.Module:
    torch.manual_seed(config.get("seed", 0))
    return SmallNet(config["num_classes"])


register_arch_builder("test-small-net", _build_small)
BASE = {"builder": "test-small-net", "num_classes": 3}


def small_net() -> nn.Module:
    model = _build_small({**BASE, "seed": 1})
    with torch.no_grad():  # distinct magnitudes so importance ranking is not a tie
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def macs(model: nn.Module) -> float:
    return float(count_macs(model, RES))


def test_prune_uniform_removes_channels_but_keeps_classifier() -> None:
    model = small_net()
    pruned = prune_uniform(model, 0.5, resolution=RES, round_to=None)
    assert pruned.stem[0].out_channels == 16 and pruned.pw[0].out_channels == 24
    assert pruned.head[2].out_features == 3
    assert model.stem[0].out_channels == 32  # the original is untouched
    assert pruned(torch.randn(2, 3, RES, RES)).shape == (2, 3)


def test_round_to_keeps_multiples() -> None:
    pruned = prune_uniform(small_net(), 0.3, resolution=RES, round_to=8)
    assert pruned.stem[0].out_channels % 8 == 0 and pruned.pw[0].out_channels % 8 == 0


def test_prune_to_budget_lands_just_under_a_macs_budget() -> None:
    model = small_net()
    budget = 0.5 * macs(model)
    found = prune_to_budget(model, measure=macs, budget=budget, resolution=RES, iterations=6, round_to=None)
    assert found.value <= budget and macs(found.model) == found.value
    over = [p for p in found.probes if p["value"] > budget]
    assert over and max(p["ratio"] for p in over) >= found.ratio - 0.9 / 2**6 - 1e-9  # bisection brackets it
    assert found.value > 0.4 * macs(model)  # "just under": not pruned far more than needed


def test_a_lucky_reading_under_budget_is_confirmed_and_replaced() -> None:
    """A noisy latency: the first reading of the first two models just over budget is 30 % low. The chosen ratio
    is measured again and, found over budget, the gap up to the next ratio measured under budget is searched
    again (not skipped)."""
    model = small_net()
    budget = 0.5 * macs(model)
    seen: set[float] = set()

    def noisy(m: nn.Module) -> float:
        value = float(macs(m))
        lucky = budget < value < 1.3 * budget and value not in seen and len(seen) < 2
        if budget < value < 1.3 * budget:
            seen.add(value)
        return 0.7 * value if lucky else value

    found = prune_to_budget(model, measure=noisy, budget=budget, resolution=RES, iterations=6, round_to=None)
    assert macs(found.model) <= budget, "the delivered model really is under budget"
    assert found.ratio < 0.9 and macs(found.model) > 0.3 * macs(model), "not thrown to the largest ratio"
    confirmations = [p for p in found.probes if p.get("confirmation")]
    assert confirmations and confirmations[-1]["value"] <= budget
    assert any(p["value"] > budget for p in confirmations), "a lucky first reading was caught"
    exact = prune_to_budget(model, measure=macs, budget=budget, resolution=RES, iterations=6, round_to=None)
    assert sum(1 for p in exact.probes if p.get("confirmation")) == 1  # a steady measure is confirmed once


def test_prune_to_budget_refuses_impossible_budgets_and_skips_needless_pruning() -> None:
    model = small_net()
    with pytest.raises(BespokeError, match="cannot reach"):
        prune_to_budget(model, measure=macs, budget=1.0, resolution=RES, iterations=2, round_to=None)
    unpruned = prune_to_budget(model, measure=macs, budget=2 * macs(model), resolution=RES, round_to=None)
    assert unpruned.ratio == 0.0 and len(unpruned.attempts) == 1  # no pruning needed: one pick, verified once
    assert [p.get("confirmation") for p in unpruned.probes] == [None, 1.0]


def test_pruned_recipe_rebuilds_and_round_trips_through_a_model_dir(tmp_path: Path) -> None:
    model = small_net()
    pruned = prune_uniform(model, 0.4, resolution=RES, round_to=None)
    recipe = pruned_arch_config(BASE, pruned)
    assert recipe["builder"] == "pruned" and recipe["base"] == BASE
    assert json.loads(json.dumps(recipe)) == recipe  # plain JSON, no pickles
    rebuilt = build_pruned(recipe)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in pruned.state_dict().items()}
    card = ModelCard(arch="pruned-small", arch_config=recipe, engine="baseline-pruned", num_classes=3,
                     resolution=RES, mean=(0.5,) * 3, std=(0.5,) * 3)
    save_model_dir(tmp_path / "m", pruned, card)
    loaded, loaded_card = load_model_dir(tmp_path / "m")
    x = torch.randn(4, 3, RES, RES)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.eval()(x))
    assert loaded_card.params == sum(p.numel() for p in pruned.parameters())


def test_recipe_naming_an_unknown_layer_fails() -> None:
    with pytest.raises(BespokeError, match="absent"):
        build_pruned({"builder": "pruned", "base": BASE, "layers": {"nope": {"num_features": 3}}})


def tiny_data() -> TrainData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 3
    images = torch.randint(0, 60, (48, 3, RES, RES), generator=g, dtype=torch.uint8)
    images[torch.arange(48), labels] += 150
    ds = TensorImageDataset(images, labels, RES)
    return TrainData(train=ds, test=ds, classes=["r", "g", "b"], resolution=RES, info={"dataset": "tiny"})


def test_prune_and_distill_writes_a_model_dir_and_resumes_the_search(tmp_path: Path) -> None:
    model = small_net()
    teacher = Teacher(model=model, arch_config=BASE, arch="small", mean=(0.5,) * 3, std=(0.5,) * 3)
    cfg = FinetuneConfig(epochs=1, batch_size=16, kd_weight=0.5, device="cpu")
    budget = BudgetInfo(target="macs-half", text="0.5x", value=0.5 * macs(model), unit="MACs")
    calls: list[float] = []

    def measure(m: nn.Module) -> float:
        calls.append(1.0)
        return macs(m)

    settings = PruneSettings(iterations=3, round_to=None)
    lines: list[str] = []
    card = prune_and_distill(teacher, tiny_data(), cfg, tmp_path / "p", measure=measure, budget=budget,
                             search=settings, log=lines.append)
    assert len(lines) == len(calls) and all(line.startswith("[prune] macs-half: ratio ") for line in lines)
    assert any("(confirmation)" in line for line in lines) and any("under budget" in line for line in lines)
    assert card.engine == "baseline-pruned" and card.target == "macs-half"
    assert card.macs is not None and card.macs <= budget.value
    assert set(card.cost_cpu_s) == {"prune_search", "kd_finetune", "export"}
    assert card.method == "pruned+KD"
    assert card.delivery.target == "macs-half" and card.delivery.meets_budget and card.delivery.attempts >= 1
    assert (tmp_path / "p" / SEARCH_FILE).is_file()
    n_probes = len(calls)
    again = prune_and_distill(teacher, tiny_data(), cfg, tmp_path / "p", measure=measure, budget=budget,
                              search=settings)
    assert len(calls) == n_probes  # the recorded ratio is reused, no new measurements
    assert again.arch_config == card.arch_config and again.accuracy == card.accuracy
    with pytest.raises(BespokeError, match="kd_weight"):
        prune_and_distill(teacher, tiny_data(), FinetuneConfig(epochs=1), tmp_path / "q", measure=measure,
                          budget=budget)
