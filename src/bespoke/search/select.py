"""``search_target``: pick the alternatives of a house for one target and budget (no training).

Steps: complete the target's latency table, resolve the budget (relative budgets against the whole teacher
measured on the target), anneal with incremental held-out accuracy, then — for latency targets — assemble the
chosen student, measure it whole and let the shared measure-and-retry policy (``bespoke.delivery``) move the limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bespoke.data import DataSplits
from bespoke.delivery import BudgetBracket, Pick, RetryPolicy, retry_to_budget
from bespoke.errors import BespokeError
from bespoke.house import House
from bespoke.house.data import held_out, house_splits, validation_split
from bespoke.house.latency import HouseCosts, build_latency_table, measure_student
from bespoke.search.annealing import AnnealConfig, Candidate, Problem, anneal
from bespoke.search.estimator import AccuracyEstimator
from bespoke.targets import Target
from bespoke.train import cpu_seconds


@dataclass
class TargetSearch:
    """The outcome of a search for one target (JSON-able via :meth:`to_dict`)."""

    target: str
    unit: str
    budget: str | None
    budget_resolved: float
    alternatives: list[str]
    predicted: float
    measured: float | None
    accuracy_estimate: float
    teacher_accuracy_estimate: float
    teacher_value: float
    teacher_measured: float | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_s: float = 0.0
    evaluations: int = 0
    loo_max_abs: float | None = None  # the cost table's leave-one-out error when the pick was predicted

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSearch:
        return cls(**data)


def make_problem(house: House, table: HouseCosts) -> Problem:
    """The search space of ``house`` priced by ``table``: every finished alternative."""
    cands = []
    values = table.alternatives
    for entry in house.entries("done"):
        if entry.id not in values:
            continue
        single = entry.metrics.get("val_accuracy")
        cands.append(Candidate(entry.id, entry.recipe.span[0], entry.recipe.span[1], values[entry.id],
                               float(single) if single is not None else None, int(entry.metrics.get("params", 0))))
    slope, intercept = table.table.line  # read once: the search evaluates costs thousands of times
    segments = table.segments
    overhead = table.teacher - table.table.combine(segments)
    if table.aggregate == "max":
        return Problem(segments, cands, overhead, table.aggregate)
    return Problem(segments, cands, overhead, table.aggregate, whole=lambda parts: slope * parts + intercept)


def search_target(house: House, target: Target, *, data: DataSplits | str | None = None,
                  budget: float | None = None, anneal_config: AnnealConfig | None = None, eval_images: int = 256,
                  margin: float = 0.05, verify: bool = True, max_rounds: int = 4) -> TargetSearch:
    """Choose alternatives for ``target``.

    Args:
        budget: absolute budget in the target's unit; default: the target's own (relative ones resolve
            against the teacher in the latency table).
        eval_images: held-out images for the accuracy estimate (the validation split).
        margin: latency targets search under ``budget * (1 - margin)`` (measurement noise).
        verify: for latency targets, measure each chosen student whole (alternating with the teacher, on the
            table's scale) and add it to the table's calibration; the shared measure-and-retry policy
            (:class:`bespoke.delivery.BudgetBracket`) moves the limit (tighter after a miss, looser when budget is
            left unused, ``max_rounds`` picks at most) and the most accurate student within budget wins. A target
            every student missed raises ``BespokeError`` (no model is delivered for it).
    """
    started, cpu0 = time.perf_counter(), cpu_seconds()
    cfg = anneal_config or AnnealConfig()
    table = build_latency_table(house, target)
    if budget is None:
        if target.budget is None:
            raise BespokeError(f"target {target.name!r} has no budget", "add 'budget: 0.5x' (or 2.0ms...) to it")
        budget = float(target.resolve_budget(table.budget_base))  # type: ignore[arg-type]
    problem = make_problem(house, table)
    estimator = _estimator(house, problem, data, eval_images)
    checking = verify and target.unit == "ms" and target.runtime in ("onnxruntime", "torch")
    # counts add up exactly: one search at the budget; latency: the shared measure-and-retry policy
    bracket = BudgetBracket(RetryPolicy(margin=margin, retries=max(0, max_rounds - 1)), budget if checking else None)
    if not checking:
        bracket.limit = budget * (1.0 - margin) if target.unit == "ms" else budget
    rounds: list[dict[str, Any]] = []
    evaluations = 0

    def propose(limit: float) -> Pick:
        nonlocal evaluations
        run_cfg = cfg if not rounds else cfg.model_copy(update={"iterations": max(cfg.iterations // 2, 1)})
        result = anneal(problem, limit, lambda sol: estimator.evaluate(sol).accuracy, run_cfg,
                        teacher_accuracy=estimator.teacher.accuracy, on_accept=estimator.commit, unit=target.unit)
        evaluations += result.evaluations
        chosen = sorted(result.solution)
        entry = {"limit": limit, "alternatives": chosen,
                 "predicted": table.predict({a: problem.by_id[a].span for a in chosen}),
                 "accuracy_estimate": result.accuracy, "evaluations": result.evaluations}
        return Pick(",".join(chosen), entry["predicted"], result.accuracy, info=entry)

    def measure(pick: Pick) -> float:
        entry = pick.info
        rounds.append(entry)
        if not checking:
            return entry["predicted"]
        # the measurement becomes a calibration point: the next prediction is corrected by it
        spans = {a: problem.by_id[a].span for a in entry["alternatives"]}
        measured, now, teacher_now = measure_student(house, table, target, spans, estimator.modules,
                                                     source="delivered")
        entry.update({"measured": now, "teacher_measured": teacher_now, "measured_on_table_scale": measured,
                      "prediction_error": (entry["predicted"] - measured) / measured,
                      "loo_max_abs": table.table.loo.max_abs})
        return measured

    retry_to_budget(bracket, propose, measure)
    if bracket.best is None:
        lightest = min(a.measured for a in bracket.attempts)
        raise BespokeError(f"target {target.name!r}: budget {budget:.4g} {target.unit} missed after export by all "
                           f"{len(bracket.attempts)} student(s) tried (lightest measured {lightest:.4g} "
                           f"{target.unit}); no model was delivered for it",
                           "raise the budget, or build a house with more or lighter alternatives (--size)")
    best = (bracket.best.score, bracket.best.info["alternatives"], bracket.best.info)
    accuracy, chosen, entry = best
    return TargetSearch(target=target.name, unit=target.unit, budget=str(target.budget) if target.budget else None,
                        budget_resolved=budget, alternatives=chosen, predicted=entry["predicted"],
                        measured=entry.get("measured"), accuracy_estimate=accuracy,
                        teacher_accuracy_estimate=estimator.teacher.accuracy, teacher_value=table.teacher,
                        teacher_measured=entry.get("teacher_measured"), rounds=rounds,
                        seconds=time.perf_counter() - started, cpu_s=cpu_seconds() - cpu0, evaluations=evaluations,
                        loo_max_abs=table.table.loo.max_abs)


def _estimator(house: House, problem: Problem, data: DataSplits | str | None, eval_images: int
               ) -> AccuracyEstimator:
    splits = house_splits(house, data)
    meta = house.meta.teacher
    images, labels = held_out(validation_split(splits), meta.mean, meta.std, eval_images)
    spans = {c.id: (c.start, c.end) for c in problem.candidates}
    return AccuracyEstimator(house.teacher_segmentation(), spans, house.load_alternative, images, labels)
