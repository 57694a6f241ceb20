"""The measure-and-retry loop itself, run by both engines and the pruned baseline.

The caller supplies its search as ``propose(limit) -> Pick`` (annealing over a house, evolution over a supernet,
bisection of a pruning ratio) and its delivery check as ``measure(pick) -> value after export``;
:class:`~bespoke.delivery.BudgetBracket` moves the limit between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bespoke.delivery.policy import Attempt, BudgetBracket


@dataclass
class Pick:
    """What a search proposes under a limit: its identity, the cost model's prediction, the engine's score (the
    best measured pick within budget wins), whether nothing cheaper exists, and what the engine needs later."""

    key: str
    predicted: float
    score: float
    cheapest: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def retry_to_budget(bracket: BudgetBracket, propose: Callable[[float], Pick | None],
                    measure: Callable[[Pick], float]) -> Attempt | None:
    """Search under the bracket's limit, measure every new pick, let the bracket move the limit; stop when it says
    so, or when the search proposes nothing new (``None`` or a pick already measured: the limit moved too little
    to change it). Returns the best attempt within budget (``None``: every pick missed); the attempts stay in
    ``bracket.attempts``. An attempt's ``info`` is its pick's (``measure`` may add to it)."""
    while True:
        limit = bracket.limit
        pick = propose(limit)
        if pick is None or bracket.tried(pick.key):
            return bracket.best
        measured = float(measure(pick))
        if bracket.record(Attempt(pick.key, limit, pick.predicted, measured, pick.score, pick.info),
                          cheapest=pick.cheapest):
            return bracket.best
