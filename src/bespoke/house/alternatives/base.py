"""The interface every alternative kind implements, and what kinds get to see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn

from bespoke.graph import Segmentation, Span
from bespoke.house.recipe import Recipe
from bespoke.house.sources import SourceSet


@dataclass(frozen=True)
class ProposalContext:
    """What a kind needs to propose candidates for a teacher span."""

    teacher: Segmentation
    sources: SourceSet
    donors: tuple[str, ...]
    max_span: int
    max_cost_ratio: float = 1.0  # drop candidates costing more MACs than this times the teacher span


class AlternativeKind(Protocol):
    """An alternative generator: describes candidates for a teacher span, completes one, builds a recipe's module.

    Planning is two-phase so that a house costs what its size costs: ``describe`` lists candidate recipes from
    shapes alone (no module built, no Torch-Pruning run), the planner samples among them, and ``complete`` does
    the expensive part for the sampled ones only: it returns the finished recipe, ``None`` when the candidate
    turns out not to fit (a donor span of another output size or costing more than the teacher span), or raises
    when the alternative cannot be made (recorded as failed with the reason). ``build`` may complete the recipe
    too (pruning fills in the removed channel indices when a recipe has none) and must give the same
    architecture every time for a completed recipe.
    """

    name: str

    def describe(self, span: Span, ctx: ProposalContext) -> list[Recipe]: ...

    def complete(self, recipe: Recipe, ctx: ProposalContext) -> Recipe | None: ...

    def build(self, recipe: Recipe, sources: SourceSet) -> nn.Module: ...
