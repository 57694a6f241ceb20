"""The measure-and-retry policy every engine uses to meet a budget after export.

An engine's cost model predicts a whole model to within a few to tens of percent, and a target's verdict is the
measurement after export. So an engine searches under a *limit* on its prediction, the pick is exported and
measured, and :class:`BudgetBracket` moves the limit: a pick that misses the budget tightens it (by the miss, plus
a margin that doubles with every miss), one that meets it but leaves more than ``1 - fill`` of the budget unused
loosens it, each step the secant one kept strictly inside the bracket of the largest limit that met the budget and
the smallest that missed. At most ``1 + retries`` picks are measured; the best pick that met the budget (the
engine's own score) is delivered, and a target every pick missed gets none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    """How the search limit follows the measurements after export."""

    model_config = ConfigDict(extra="forbid")

    margin: float = Field(0.03, ge=0, lt=0.5, description="the first search runs under (1 - margin) x budget")
    retries: int = Field(3, ge=0, description="extra picks steered by the measurement after export")
    fill: float = Field(0.9, gt=0, le=1, description="a pick measured under this share of its budget is searched "
                        "again with a looser limit (the best pick within budget is delivered)")


@dataclass
class Attempt:
    """One pick exported and measured: its identity, the engine's prediction and score, the measurement."""

    key: str
    limit: float
    predicted: float
    measured: float
    score: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "limit": round(self.limit, 6), "predicted": round(self.predicted, 6),
                "measured": round(self.measured, 6), "score": round(self.score, 6), **self.info}


def next_limit(limit: float, pred_cost: float, measured: float, aim: float, ok: float | None, missed: float
               ) -> float:
    """The next search limit on the cost model's scale: the secant step that would move ``measured`` to ``aim``,
    kept strictly inside the bracket (``ok``: the largest limit whose pick met the budget; ``missed``: the
    smallest limit whose pick did not), else the bracket's midpoint."""
    estimate = min(limit, pred_cost) * aim / measured
    low = ok if ok is not None else 0.0
    if low < estimate < missed:
        return estimate
    return (low + missed) / 2 if ok is not None and math.isfinite(missed) else estimate


@dataclass
class BudgetBracket:
    """The state of one target's measure-and-retry search.

    ``floor``: the cost model's prediction for the cheapest architecture the engine can offer (0 when it has
    none): a limit is never pushed below it on predictions alone, only a measured miss there ends the search.
    A floor predicted above the budget by less than the model's error (``floor_error``, its relative
    leave-one-out error, and at least the policy's margin) starts the search at the floor: the cheapest
    architecture is measured, not refused on a prediction that may be a few percent off.
    Use: ``limit`` for the next search, :meth:`record` each measured pick until it returns ``True``, then
    :attr:`best` (``None``: every pick missed).
    """

    policy: RetryPolicy
    budget: float | None
    floor: float = 0.0
    floor_error: float = 0.0
    limit: float = math.inf
    attempts: list[Attempt] = field(default_factory=list)
    best: Attempt | None = None
    _ok: float | None = None
    _missed: float = math.inf

    def __post_init__(self) -> None:
        if self.budget is not None:  # keep a safety margin, unless only the margin stands between budget and floor
            limit = self.budget * (1.0 - self.policy.margin)
            if self.floor <= self.budget:
                self.limit = max(limit, self.floor)
            elif self.floor * (1.0 - max(self.floor_error, self.policy.margin)) <= self.budget:
                self.limit = self.floor  # within the model's error of the budget: measure the cheapest
            else:
                self.limit = self.budget  # the engine's search refuses it, naming the floor

    @property
    def misses(self) -> int:
        return sum(1 for a in self.attempts if self.budget is not None and a.measured > self.budget)

    def tried(self, key: str) -> bool:
        return any(a.key == key for a in self.attempts)

    def record(self, attempt: Attempt, *, cheapest: bool = False) -> bool:
        """Take one measured pick (``cheapest``: the engine has nothing cheaper); whether the search is over."""
        misses_before = self.misses
        self.attempts.append(attempt)
        budget = self.budget
        if budget is None:
            self.best = attempt
            return True
        met = attempt.measured <= budget
        if met and (self.best is None or attempt.score > self.best.score):
            self.best = attempt
        if len(self.attempts) > self.policy.retries:
            return True
        if met:
            self._ok = max(self._ok or 0.0, attempt.limit)
            if attempt.measured >= self.policy.fill * budget or math.isinf(attempt.limit):
                return True
        else:
            self._missed = min(self._missed, attempt.limit)
            if cheapest:
                return True
        # aim under the budget by the margin, doubled after every miss: the cost model's error grows as models
        # shrink, so a step scaled by one miss can fall just short again
        aim = budget * max(0.5, 1.0 - self.policy.margin * 2 ** (misses_before + (not met)))
        self.limit = next_limit(attempt.limit, attempt.predicted, attempt.measured, aim, self._ok, self._missed)
        if self._ok is None:  # only misses so far: never declared infeasible on a prediction alone
            self.limit = max(self.limit, self.floor)
        return False
