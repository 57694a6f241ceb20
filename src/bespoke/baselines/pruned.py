"""Pruned teacher + knowledge distillation: uniform channel pruning to a budget, then KD retraining."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bespoke.baselines.common import TrainData, cpu_timer, save_with_costs
from bespoke.baselines.pruning import prune_to_budget, prune_uniform, pruned_arch_config
from bespoke.delivery import RetryPolicy, write_delivery
from bespoke.errors import BespokeError
from bespoke.export import ModelCard
from bespoke.train import FinetuneConfig, finetune
from bespoke.utils.atomic import write_json

SEARCH_FILE = "prune_search.json"


class PruneSettings(BaseModel):
    """How the uniform pruning ratio is searched."""

    model_config = ConfigDict(extra="forbid")

    max_ratio: float = Field(0.9, gt=0, lt=1, description="largest fraction of channels removed per layer")
    iterations: int = Field(7, ge=1, le=20, description="bisection steps (precision max_ratio / 2^iterations)")
    round_to: int | None = Field(8, ge=1, description="kept channel counts rounded to multiples of this")
    retry: RetryPolicy = Field(default_factory=RetryPolicy,
                               description="how the bisection's limit follows the pick's measurement")


@dataclass(frozen=True)
class BudgetInfo:
    """The budget a model is pruned for: target name, budget as written, absolute value and its unit."""

    target: str
    text: str
    value: float
    unit: str


@dataclass(frozen=True)
class Teacher:
    """The model to prune and distil from, with its recipe and normalisation."""

    model: nn.Module
    arch_config: dict[str, Any]
    arch: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    value: float | None = None  # its own measured value on the target, when known


def prune_and_distill(teacher: Teacher, data: TrainData, cfg: FinetuneConfig, out_dir: str | Path, *,
                      measure: Callable[[nn.Module], float], budget: BudgetInfo,
                      search: PruneSettings | None = None, method: str = "pruned+KD",
                      log: Callable[[str], None] | None = None) -> ModelCard:
    """Prune ``teacher`` uniformly until ``measure <= budget.value``, retrain with KD, write ``out_dir``.

    Resumable: the found ratio is kept in ``out_dir/prune_search.json`` (re-pruning with it is deterministic for
    the same teacher weights), KD training resumes from ``out_dir/checkpoints``. ``cfg.kd_weight`` must be > 0.
    Card costs: ``prune_search`` (measured once), ``kd_finetune`` (all attempts), ``export``. ``log`` gets one
    line per probe of the ratio search.
    """
    if cfg.kd_weight <= 0:
        raise BespokeError("the pruned baseline retrains with KD: kd_weight must be > 0", "set e.g. kd_weight: 0.7")
    out_dir = Path(out_dir)
    costs: dict[str, float] = {}
    with cpu_timer(costs, "prune_search"):
        found, student = _search(teacher, data.resolution, out_dir, measure, budget, search or PruneSettings(),
                                 log)
        arch_config = pruned_arch_config(teacher.arch_config, student)
    costs["prune_search"] += found["cpu_s"] if found.pop("resumed") else 0.0
    result = finetune(student, data.train, data.test, cfg, mean=teacher.mean, std=teacher.std, out_dir=out_dir,
                      teacher=teacher.model, stage="kd")
    costs["kd_finetune"] = round(result.cpu_s, 1)
    card = ModelCard(
        arch=f"pruned-{teacher.arch}", arch_config=arch_config, engine="baseline-pruned",
        num_classes=data.num_classes, classes=list(data.classes), resolution=data.resolution, mean=teacher.mean,
        std=teacher.std, accuracy=result.accuracy, data=dict(data.info), method=method,
        provenance={"ratio": found["ratio"], "value_at_search": found["value"], "probes": found["probes"],
                    "picks": found.get("attempts", []),
                    "round_to": found["round_to"],
                    "pruning": "torch-pruning MetaPruner, L2 magnitude, uniform ratio, classifier kept",
                    "recipe": cfg.model_dump(), "history": result.history, "wall_s": round(result.wall_s, 1)},
    )
    save_with_costs(out_dir, student, card, costs)
    at_ratio = [p["value"] for p in found["probes"] if p["ratio"] == round(found["ratio"], 6)]
    return write_delivery(out_dir, (budget.target, budget.text, budget.unit), budget=budget.value,
                          readings=at_ratio or [found["value"]], attempts=len(found.get("attempts") or [found]),
                          reference=teacher.value)


def _search(teacher: Teacher, resolution: int, out_dir: Path, measure: Callable[[nn.Module], float],
            budget: BudgetInfo, settings: PruneSettings, log: Callable[[str], None] | None = None
            ) -> tuple[dict[str, Any], nn.Module]:
    """The ratio search recorded in ``out_dir`` (re-pruned deterministically), or a new one, saved atomically
    before training starts. The dict's ``resumed`` says which; its ``cpu_s`` is the original search's cost."""
    path = out_dir / SEARCH_FILE
    if path.is_file():
        found = json.loads(path.read_text())
        if found.get("budget") == budget.value and found.get("round_to") == settings.round_to:
            student = prune_uniform(teacher.model, found["ratio"], resolution=resolution,
                                    round_to=settings.round_to)
            return {**found, "resumed": True}, student
    def on_probe(entry: dict[str, float]) -> None:
        if log is not None:
            verdict = "under" if entry["value"] <= budget.value else "over"
            again = " (confirmation)" if entry.get("confirmation") else ""
            log(f"[prune] {budget.target}: ratio {entry['ratio']:.4f}{again} -> {entry['value']:.4g} {budget.unit}, "
                f"{verdict} budget {budget.value:.4g}")

    costs: dict[str, float] = {}
    with cpu_timer(costs, "search"):
        res = prune_to_budget(teacher.model, measure=measure, budget=budget.value, resolution=resolution,
                              max_ratio=settings.max_ratio, iterations=settings.iterations,
                              unpruned_value=teacher.value, round_to=settings.round_to, policy=settings.retry,
                              on_probe=on_probe)
    found = {"ratio": res.ratio, "value": res.value, "budget": budget.value, "unit": budget.unit,
             "round_to": settings.round_to, "probes": res.probes, "attempts": res.attempts, "cpu_s": costs["search"]}
    write_json(path, found)
    return {**found, "resumed": False}, res.model
