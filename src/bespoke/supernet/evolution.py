"""Evolutionary search under a budget: bounded generations, bounded sampling, loud failure when infeasible.

Fitness and cost are batch functions of genome arrays (see :mod:`bespoke.supernet.genome`): the accuracy
predictor and a cost table, so the search never builds or runs a network and a whole generation is a handful of
array operations. Every loop has a fixed bound; an impossible budget raises :class:`InfeasibleBudget` naming the
smallest value the space can reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bespoke.errors import BespokeError
from bespoke.supernet.genome import GenomeLayout
from bespoke.supernet.space import SearchSpace, SubnetConfig

GenomeFn = Callable[[np.ndarray], np.ndarray]  # [n, genes] int -> [n] float


class InfeasibleBudget(BespokeError):
    """No subnet of the space fits the budget; ``floor`` is the smallest value the space reaches."""

    def __init__(self, budget: float, floor: float, unit: str) -> None:
        super().__init__(f"budget {budget:.4g} {unit} cannot be met: the smallest subnet costs {floor:.4g} {unit}",
                         f"raise the budget to at least {floor:.4g} {unit}, or train a supernet with a wider "
                         "space (smaller resolutions, depths or expansions)")
        self.budget, self.floor, self.unit = budget, floor, unit


@dataclass
class EvolutionResult:
    best: SubnetConfig
    fitness: float
    cost: float
    generations: int
    evaluated: int
    history: list[float] = field(default_factory=list)  # best fitness per generation


def mutate(layout: GenomeLayout, genomes: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Each gene resampled uniformly with probability ``prob``."""
    fresh = layout.random(rng, len(genomes))
    return np.where(rng.random(genomes.shape) < prob, fresh, genomes)


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each gene taken from either parent (rows of ``a`` and ``b`` pair up)."""
    return np.where(rng.random(a.shape) < 0.5, a, b)


def _initial(layout: GenomeLayout, cost: GenomeFn, budget: float, population: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, int]:
    """Feasible starting genomes: the smallest subnet, random feasible ones, then mutants of feasible ones."""
    pool = [layout.encode(layout.space.smallest())[None, :]]
    evaluated, have = 0, 1
    for _ in range(10):  # bounded random sampling
        cand = layout.random(rng, 4 * population)
        ok = cost(cand) <= budget
        evaluated += len(cand)
        pool.append(cand[ok])
        have += int(ok.sum())
        if have >= population:
            break
    for _ in range(20):  # a tight budget: grow from the feasible ones
        if have >= population:
            break
        feasible = np.concatenate(pool)
        cand = mutate(layout, feasible[rng.integers(len(feasible), size=4 * population)], 0.2, rng)
        ok = cost(cand) <= budget
        evaluated += len(cand)
        pool.append(cand[ok])
        have += int(ok.sum())
    return np.concatenate(pool)[:population], evaluated


def evolve(space: SearchSpace, *, fitness: GenomeFn, cost: GenomeFn, budget: float, unit: str = "",
           population: int = 64, generations: int = 30, mutate_prob: float = 0.1, parent_fraction: float = 0.25,
           seed: int = 0) -> EvolutionResult:
    """The subnet of highest predicted fitness whose predicted cost is within ``budget``."""
    layout = GenomeLayout(space)
    rng = np.random.default_rng([seed, 31337])
    floor = float(cost(layout.encode(space.smallest())[None, :])[0])
    if floor > budget:
        raise InfeasibleBudget(budget, floor, unit)
    pop, evaluated = _initial(layout, cost, budget, population, rng)
    scores = fitness(pop)
    n_parents = max(2, min(len(pop), round(parent_fraction * population)))
    history = []
    for _ in range(generations):
        order = np.argsort(-scores, kind="stable")[:n_parents]
        parents, parent_scores = pop[order], scores[order]
        need = population - n_parents
        children = [np.zeros((0, layout.width), dtype=np.int64)]
        for _ in range(5):  # bounded attempts to fill the generation with feasible children
            if need <= 0:
                break
            pa = parents[rng.integers(n_parents, size=2 * need)]
            pb = parents[rng.integers(n_parents, size=2 * need)]
            crossed = rng.random(2 * need) < 0.5
            cand = np.where(crossed[:, None], mutate(layout, crossover(pa, pb, rng), mutate_prob / 2, rng),
                            mutate(layout, pa, mutate_prob, rng))
            ok = cost(cand) <= budget
            evaluated += len(cand)
            children.append(cand[ok][:need])
            need -= len(children[-1])
        kids = np.concatenate(children)
        pop = np.concatenate([parents, kids])
        scores = np.concatenate([parent_scores, fitness(kids)]) if len(kids) else parent_scores
        history.append(float(scores.max()))
    best = int(np.argmax(scores))
    return EvolutionResult(layout.decode(pop[best]), float(scores[best]), float(cost(pop[best:best + 1])[0]),
                           generations, evaluated, history)
