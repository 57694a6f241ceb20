"""Planning a house: describe every candidate alternative cheaply, draw a seeded sample, complete only what is drawn.

Describing a candidate looks at shapes only (which donor spans fit a teacher span, which ratios a span can be
pruned by); completing it is the expensive part (a donor span's dry run and MAC count, Torch-Pruning's group
scores), so a house costs what its size costs, not what the whole pool would. A drawn candidate that turns out
not to fit is replaced by the next one of its kind; one that cannot be made (Torch-Pruning raising on the span)
stays in the house as ``failed`` with the reason and does not take a place: the plan goes on until ``size``
alternatives are made, closing a kind that failed :data:`CLOSE_AFTER_FAILURES` times in a row and stopping after
``size`` failures in all.

Sampling is balanced twice: across kinds (by weight, a kind that runs out hands its share to the others) and,
within a kind, across teacher spans (round-robin over spans), so a small house still covers the network. The
round-robin order is drawn weighted by the square of each span's MACs in the teacher (weighted sampling without
replacement), so a house too small to touch every span replaces the spans that hold the cost first:
a budget well under the teacher's cost cannot be reached by replacing spans that hold little of it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from bespoke.errors import BespokeError
from bespoke.graph import Span
from bespoke.house.alternatives import ProposalContext, make_kind
from bespoke.house.cost import layer_macs
from bespoke.house.recipe import Recipe
from bespoke.utils.progress import track

DEFAULT_KIND_WEIGHTS: Mapping[str, float] = {"donor": 0.35, "prune": 0.3, "lowrank": 0.15, "skip": 0.2}
SPAN_WEIGHT_POWER = 2.0
"""Span order weight = span MACs to this power: squared rather than proportional, so a house of a handful of
alternatives concentrates on the few spans that hold the cost (``benchmarks/results/house_coverage.md``)."""
CLOSE_AFTER_FAILURES = 3
"""A kind whose completion raised this many times in a row is closed for the house; its share goes to the others."""


@dataclass(frozen=True)
class Planned:
    """A drawn alternative: its completed recipe (with id and seed), or why it could not be made."""

    recipe: Recipe
    error: str | None = None


@dataclass(frozen=True)
class Plan:
    """The drawn alternatives in plan order, and how many candidates each kind described."""

    alternatives: list[Planned]
    pool: dict[str, int]


def describe_all(spans: Sequence[Span], ctx: ProposalContext, kinds: Sequence[str]) -> dict[str, list[Recipe]]:
    """Every candidate of every kind for every span, described from shapes (recipes without ids, not completed)."""
    pool: dict[str, list[Recipe]] = {}
    for name in kinds:
        kind = make_kind(name)
        pool[name] = [r for span in track(spans, f"describe {name}") for r in kind.describe(span, ctx)]
    return pool


def propose_all(spans: Sequence[Span], ctx: ProposalContext, kinds: Sequence[str]) -> dict[str, list[Recipe]]:
    """Every candidate of every kind for every span, completed (the whole pool: for tests and studies; a house
    build completes only what it samples, see :func:`plan_house`). Candidates that cannot be made are left out."""
    pool: dict[str, list[Recipe]] = {}
    for name in kinds:
        kind = make_kind(name)
        pool[name] = []
        for span in track(spans, f"propose {name}"):
            for recipe in kind.describe(span, ctx):
                try:
                    done = kind.complete(recipe, ctx)
                except Exception:  # the pool holds only what can be made
                    continue
                if done is not None:
                    pool[name].append(done)
    return pool


def plan_house(spans: Sequence[Span], ctx: ProposalContext, kinds: Sequence[str], size: int, seed: int,
               weights: Mapping[str, float] | None = None) -> Plan:
    """``size`` alternatives drawn from the described pool (deterministic in ``seed``) and completed.

    A candidate whose completion raises is kept as failed (``Planned.error``) besides the ``size`` made ones, so
    one span Torch-Pruning cannot handle costs one attempt, neither the house nor one of its places.
    """
    pool = describe_all(spans, ctx, kinds)
    macs = teacher_span_macs(ctx, {r.span for recipes in pool.values() for r in recipes})
    span_weights = {span: m ** SPAN_WEIGHT_POWER for span, m in macs.items()}
    instances = {name: make_kind(name) for name in pool}  # completion caches live in the kind objects

    def complete(recipe: Recipe) -> Planned | None:
        try:
            done = instances[recipe.kind].complete(recipe, ctx)
        except Exception as exc:  # recorded with its reason; the plan goes on
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            return Planned(recipe, f"cannot make {recipe.kind} alternative for span {list(recipe.span)}: "
                                   f"{type(exc).__name__}: {first}")
        return None if done is None else Planned(done)

    drawn = _draw(pool, size, seed, weights, complete, span_weights)
    return Plan(drawn, {k: len(v) for k, v in pool.items()})


def sample(pool: Mapping[str, list[Recipe]], size: int, seed: int,
           weights: Mapping[str, float] | None = None) -> list[Recipe]:
    """``size`` recipes drawn from ``pool`` (deterministic in ``seed``), with ids ``a0000``... and init seeds."""
    return [p.recipe for p in _draw(pool, size, seed, weights, Planned)]


def teacher_span_macs(ctx: ProposalContext, spans: set[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """MACs of the teacher over each ``(start, end)`` segment span: the weights of the planner's span order."""
    teacher = ctx.teacher
    per_segment = [layer_macs(seg, torch.zeros(1, *teacher.shapes[i])) for i, seg in enumerate(teacher.segments)]
    return {span: float(sum(per_segment[span[0]:span[1]])) for span in spans}


def _span_balanced(recipes: list[Recipe], rng: random.Random,
                   span_weights: Mapping[tuple[int, int], float] | None = None) -> list[Recipe]:
    """``recipes`` round-robin over their spans; the span order is a weighted random permutation (key
    ``log(u) / w``, Efraimidis-Spirakis), uniform without weights; a span of weight 0 comes last."""
    by_span: dict[tuple[int, int], list[Recipe]] = {}
    for recipe in recipes:
        by_span.setdefault(recipe.span, []).append(recipe)
    for queue in by_span.values():
        rng.shuffle(queue)

    def key(span: tuple[int, int]) -> float:
        w = 1.0 if span_weights is None else span_weights.get(span, 0.0)
        u = rng.random() or 1e-300
        return math.log(u) / w if w > 0 else -math.inf

    keys = {span: key(span) for span in sorted(by_span)}
    queues = [by_span[span] for span in sorted(by_span, key=lambda s: keys[s], reverse=True)]
    out: list[Recipe] = []
    depth = 0
    while len(out) < len(recipes):
        out.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return out


def _draw(pool: Mapping[str, list[Recipe]], size: int, seed: int, weights: Mapping[str, float] | None,
          complete: Callable[[Recipe], Planned | None],
          span_weights: Mapping[tuple[int, int], float] | None = None) -> list[Planned]:
    """Draw by kind share from span-balanced queues, completing each draw; a ``None`` completion is skipped."""
    if size < 1:
        raise BespokeError(f"house size must be >= 1, got {size}", "use e.g. --size 100")
    weights = dict(weights or DEFAULT_KIND_WEIGHTS)
    rng = random.Random(seed)
    queues = {k: _span_balanced(list(v), rng, span_weights) for k, v in sorted(pool.items()) if v}
    if not queues:
        raise BespokeError("no alternative could be proposed for any span of the teacher",
                           "add donors, allow longer spans (--max-span) or more kinds")
    order = sorted(queues)
    read = {k: 0 for k in queues}   # queue position
    taken = {k: 0 for k in queues}  # alternatives of the kind made for the house
    failed_in_row = {k: 0 for k in queues}
    chosen: list[Planned] = []
    made = failures = 0
    while made < size:
        open_kinds = [k for k in queues if read[k] < len(queues[k])]
        if not open_kinds:
            break
        share = {k: max(weights.get(k, 1.0), 0.0) for k in open_kinds}
        total = sum(share.values()) or 1.0
        kind = max(open_kinds, key=lambda k: (share[k] / total * (made + 1) - taken[k], -order.index(k)))
        candidate = queues[kind][read[kind]]
        read[kind] += 1
        planned = complete(candidate)
        if planned is None:
            continue
        index = len(chosen)
        update = {"id": f"a{index:04d}", "seed": seed * 1_000_003 + index}
        chosen.append(Planned(planned.recipe.model_copy(update=update), planned.error))
        if planned.error is None:
            made += 1
            taken[kind] += 1
            failed_in_row[kind] = 0
            continue
        failures += 1
        failed_in_row[kind] += 1
        if failed_in_row[kind] >= CLOSE_AFTER_FAILURES:  # e.g. Torch-Pruning on channel shuffle: every span fails
            read[kind] = len(queues[kind])
        if failures >= size:
            break
    if not any(p.error is None for p in chosen):
        raise BespokeError("no alternative could be made for any span of the teacher"
                           + (f" ({chosen[0].error})" if chosen else ""),
                           "add donors, allow longer spans (--max-span) or more kinds")
    return chosen
