"""Planning a house: propose every candidate alternative for every teacher span, then draw a seeded sample.

Sampling is balanced twice: across kinds (by weight, a kind that runs out hands its share to the others) and,
within a kind, across teacher spans (round-robin over spans in random order), so a small house still covers
the whole network.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from bespoke.errors import BespokeError
from bespoke.graph import Span
from bespoke.house.alternatives import ProposalContext, make_kind
from bespoke.house.recipe import Recipe
from bespoke.utils.progress import track

DEFAULT_KIND_WEIGHTS: Mapping[str, float] = {"donor": 0.35, "prune": 0.3, "lowrank": 0.15, "skip": 0.2}


def propose_all(spans: Sequence[Span], ctx: ProposalContext, kinds: Sequence[str]) -> dict[str, list[Recipe]]:
    """Every candidate of every kind for every span (recipes without ids)."""
    pool: dict[str, list[Recipe]] = {}
    for name in kinds:
        kind = make_kind(name)
        pool[name] = [r for span in track(spans, f"propose {name}") for r in kind.propose(span, ctx)]
    return pool


def _span_balanced(recipes: list[Recipe], rng: random.Random) -> list[Recipe]:
    by_span: dict[tuple[int, int], list[Recipe]] = {}
    for recipe in recipes:
        by_span.setdefault(recipe.span, []).append(recipe)
    queues = list(by_span.values())
    for queue in queues:
        rng.shuffle(queue)
    rng.shuffle(queues)
    out: list[Recipe] = []
    depth = 0
    while len(out) < len(recipes):
        out.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return out


def sample(pool: Mapping[str, list[Recipe]], size: int, seed: int,
           weights: Mapping[str, float] | None = None) -> list[Recipe]:
    """``size`` recipes drawn from ``pool`` (deterministic in ``seed``), with ids ``a0000``... and init seeds."""
    if size < 1:
        raise BespokeError(f"house size must be >= 1, got {size}", "use e.g. --size 100")
    weights = dict(weights or DEFAULT_KIND_WEIGHTS)
    rng = random.Random(seed)
    queues = {k: _span_balanced(list(v), rng) for k, v in sorted(pool.items()) if v}
    if not queues:
        raise BespokeError("no alternative could be proposed for any span of the teacher",
                           "add donors, allow longer spans (--max-span) or more kinds")
    taken = {k: 0 for k in queues}
    chosen: list[Recipe] = []
    while len(chosen) < size:
        open_kinds = [k for k in queues if taken[k] < len(queues[k])]
        if not open_kinds:
            break
        share = {k: max(weights.get(k, 1.0), 0.0) for k in open_kinds}
        total = sum(share.values()) or 1.0
        n = len(chosen) + 1
        order = sorted(queues)
        kind = max(open_kinds, key=lambda k: (share[k] / total * n - taken[k], -order.index(k)))
        recipe = queues[kind][taken[kind]]
        taken[kind] += 1
        index = len(chosen)
        chosen.append(recipe.model_copy(update={"id": f"a{index:04d}", "seed": seed * 1_000_003 + index}))
    return chosen
