"""Simulated annealing over which teacher spans to replace, under a latency (or MACs/params/memory) budget.

Search space: sets of non-overlapping alternatives. Score = estimated accuracy - penalty * relative budget
excess. Start: the solution losing least accuracy under an additive model (each alternative's swap-in accuracy
drop from distillation; a knapsack over the chain of segments, solved exactly by dynamic programming on a cost
grid), else a greedy one (least accuracy lost per latency saved), else the cheapest one. Move: revert one
replaced span, or replace one span (dropping the alternatives it overlaps). Temperature falls geometrically.
Deterministic for a given seed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from bespoke.errors import BespokeError
from bespoke.utils.progress import track
from bespoke.utils.seed import Seed

Solution = frozenset[str]


@dataclass(frozen=True)
class Candidate:
    """An alternative as the search sees it: span, measured cost, swap-in accuracy from distillation."""

    id: str
    start: int
    end: int
    cost: float
    single_accuracy: float | None = None
    params: int = 0

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.end


@dataclass
class Problem:
    """The cost model: teacher segment costs, alternatives, how costs combine, and what whole models add:
    ``overhead`` (a constant), or ``whole(sum of parts)`` when given (an increasing map; see latency.py)."""

    segment_costs: list[float]
    candidates: list[Candidate]
    overhead: float = 0.0
    aggregate: str = "sum"
    whole: Callable[[float], float] | None = None
    by_id: dict[str, Candidate] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {c.id: c for c in self.candidates}

    def cost(self, solution: Sequence[str] | Solution) -> float:
        covered = set()
        values = []
        for a in solution:
            c = self.by_id[a]
            covered.update(range(c.start, c.end))
            values.append(c.cost)
        values += [v for i, v in enumerate(self.segment_costs) if i not in covered]
        total = (max(values) if values else 0.0) if self.aggregate == "max" else sum(values)
        return total + self.overhead if self.whole is None else self.whole(total)

    def parts_room(self, budget: float) -> float:
        """The largest sum of part costs whose whole-model cost stays within ``budget``."""
        if self.whole is None:
            return budget - self.overhead
        lo, hi = 0.0, max(budget, 1e-12)
        while self.whole(hi) <= budget and hi < 1e6 * max(budget, 1.0):
            hi *= 2
        if self.whole(lo) > budget:
            return -1.0
        for _ in range(60):  # ``whole`` is increasing: bisection
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.whole(mid) <= budget else (lo, mid)
        return lo

    def overlaps(self, a: str, b: str) -> bool:
        x, y = self.by_id[a], self.by_id[b]
        return x.start < y.end and y.start < x.end

    def cheapest(self) -> tuple[float, Solution]:
        """The lowest reachable cost and a solution reaching it (dynamic programming over segment positions: the
        smallest aggregate of parts, which ``whole`` keeps the smallest)."""
        n = len(self.segment_costs)
        segs, cands = self.segment_costs, {c.id: c.cost for c in self.candidates}  # ``whole`` is increasing
        starting: dict[int, list[Candidate]] = {}
        for c in self.candidates:
            starting.setdefault(c.start, []).append(c)
        best: list[tuple[float, tuple[str, ...]]] = [(0.0 if self.aggregate == "sum" else -math.inf, ())] * (n + 1)
        combine = max if self.aggregate == "max" else (lambda x, y: x + y)
        for pos in range(n - 1, -1, -1):
            options = [(combine(segs[pos], best[pos + 1][0]), best[pos + 1][1])]
            options += [(combine(cands[c.id], best[c.end][0]), (c.id, *best[c.end][1])) for c in starting.get(pos, [])]
            best[pos] = min(options, key=lambda o: (o[0], len(o[1])))
        solution = frozenset(best[0][1])
        return self.cost(solution), solution


class AnnealConfig(BaseModel):
    """Settings of the annealing search. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(300, ge=0)
    t_start: float = Field(0.02, gt=0, description="initial temperature (accuracy units)")
    t_end: float = Field(0.0005, gt=0)
    penalty: float = Field(2.0, ge=0, description="score lost per 100% budget excess")
    revert_probability: float = Field(0.3, ge=0, le=1)
    seed: Seed = 0


@dataclass
class SearchResult:
    solution: Solution
    cost: float
    accuracy: float
    budget: float
    initial: Solution
    evaluations: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def check_feasible(problem: Problem, budget: float, *, what: str = "budget", unit: str = "") -> Solution:
    """The cheapest solution; ``BespokeError`` naming the smallest reachable value when it exceeds ``budget``."""
    lowest, cheapest = problem.cheapest()
    if lowest > budget:
        raise BespokeError(
            f"{what} {budget:.4g} {unit} cannot be met: the smallest reachable value is {lowest:.4g} {unit}".strip(),
            "relax the budget, or build a bigger house (more alternatives, --max-span, skip/prune kinds)")
    return cheapest


def greedy_initial(problem: Problem, budget: float, teacher_accuracy: float) -> Solution:
    """Add the alternative losing least accuracy per unit of cost saved until the budget is met."""
    def saving(c: Candidate) -> float:
        return sum(problem.segment_costs[c.start:c.end]) - c.cost

    ranked = sorted((c for c in problem.candidates if saving(c) > 0),
                    key=lambda c: (_drop(c, teacher_accuracy) / saving(c), c.id))
    chosen: list[str] = []
    for c in ranked:
        if problem.cost(chosen) <= budget:
            break
        if not any(problem.overlaps(c.id, other) for other in chosen):
            chosen.append(c.id)
    return frozenset(chosen)


def _drop(c: Candidate, teacher_accuracy: float) -> float:
    single = c.single_accuracy if c.single_accuracy is not None else 0.0
    return max(teacher_accuracy - single, 0.0) + 1e-4  # ties go to fewer replacements


def knapsack_initial(problem: Problem, budget: float, teacher_accuracy: float, *, grid: int = 400
                     ) -> Solution | None:
    """Least total accuracy drop within ``budget`` (part costs rounded up to a grid of ``budget / grid`` and
    summed under :meth:`Problem.parts_room`; the budget shrinks until the true cost fits); ``None`` when nothing
    fits or costs do not add up (peak memory)."""
    if problem.aggregate != "sum":
        return None
    segs, cands = problem.segment_costs, {c.id: c.cost for c in problem.candidates}
    target = budget
    for _ in range(12):
        found = _knapsack(problem, segs, cands, problem.parts_room(target), target / grid, teacher_accuracy)
        if found is None:
            return None
        if problem.cost(found) <= budget:
            return found
        target *= 0.97
    return None


def _knapsack(problem: Problem, segs: list[float], cands: dict[str, float], room: float, unit: float,
              teacher_accuracy: float) -> Solution | None:
    if room <= 0:
        return None
    limit = math.floor(room / unit)
    n = len(segs)
    starting: dict[int, list[Candidate]] = {}
    for c in problem.candidates:
        starting.setdefault(c.start, []).append(c)
    # frontier[pos]: used grid cells -> (total drop, chosen ids)
    frontier: list[dict[int, tuple[float, tuple[str, ...]]]] = [{} for _ in range(n + 1)]
    frontier[0][0] = (0.0, ())

    def push(pos: int, used: int, drop: float, ids: tuple[str, ...]) -> None:
        if used <= limit and (used not in frontier[pos] or drop < frontier[pos][used][0]):
            frontier[pos][used] = (drop, ids)

    for pos in range(n):
        for used, (drop, ids) in sorted(frontier[pos].items()):
            push(pos + 1, used + math.ceil(segs[pos] / unit - 1e-9), drop, ids)
            for c in starting.get(pos, []):
                push(c.end, used + math.ceil(cands[c.id] / unit - 1e-9), drop + _drop(c, teacher_accuracy),
                     (*ids, c.id))
        frontier[pos] = {}  # keep memory flat
    if not frontier[n]:
        return None
    return frozenset(min(frontier[n].values())[1])


def anneal(problem: Problem, budget: float, accuracy: Callable[[Solution], float], cfg: AnnealConfig, *,
           teacher_accuracy: float, on_accept: Callable[[Solution], None] | None = None,
           unit: str = "") -> SearchResult:
    """Search the best-scoring solution within ``budget``; ``accuracy(solution)`` estimates a student."""
    started = time.perf_counter()
    cheapest = check_feasible(problem, budget, unit=unit)
    rng = random.Random(cfg.seed)
    current = knapsack_initial(problem, budget, teacher_accuracy)
    if current is None or problem.cost(current) > budget:
        current = greedy_initial(problem, budget, teacher_accuracy)
    if problem.cost(current) > budget:
        current = cheapest
    initial = current

    def score(sol: Solution) -> tuple[float, float, float]:
        cost = problem.cost(sol)
        acc = accuracy(sol)
        return acc - cfg.penalty * max(cost / budget - 1.0, 0.0), acc, cost

    cur_score, cur_acc, cur_cost = score(current)
    if on_accept:
        on_accept(current)
    best, best_acc, best_cost = current, cur_acc, cur_cost
    history = [{"iteration": 0, "accuracy": cur_acc, "cost": cur_cost, "accepted": True}]
    ids = sorted(problem.by_id)
    for it in track(range(1, cfg.iterations + 1), "anneal", total=cfg.iterations):
        frac = (it - 1) / max(cfg.iterations - 1, 1)
        temperature = cfg.t_start * (cfg.t_end / cfg.t_start) ** frac
        if current and rng.random() < cfg.revert_probability:
            out = rng.choice(sorted(current))
            proposal = current - {out}
        else:
            pick = rng.choice(ids)
            if pick in current:
                proposal = current - {pick}
            else:
                proposal = frozenset({a for a in current if not problem.overlaps(a, pick)} | {pick})
        new_score, new_acc, new_cost = score(proposal)
        delta = new_score - cur_score
        accepted = delta >= 0 or rng.random() < math.exp(delta / temperature)
        if accepted:
            current, cur_score, cur_acc, cur_cost = proposal, new_score, new_acc, new_cost
            if on_accept:
                on_accept(current)
            if cur_cost <= budget and (cur_acc, -cur_cost) > (best_acc, -best_cost):
                best, best_acc, best_cost = current, cur_acc, cur_cost
        history.append({"iteration": it, "accuracy": new_acc, "cost": new_cost, "accepted": accepted})
    return SearchResult(solution=best, cost=best_cost, accuracy=best_acc, budget=budget, initial=initial,
                        evaluations=len(history), seconds=time.perf_counter() - started, history=history)
