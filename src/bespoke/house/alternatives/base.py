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
    """An alternative generator: proposes recipe stubs for a teacher span, and builds a recipe's module.

    ``build`` may complete the recipe (e.g. pruning fills in the removed channel indices from the source's
    weights the first time) and must give the same architecture every time for a completed recipe.
    """

    name: str

    def propose(self, span: Span, ctx: ProposalContext) -> list[Recipe]: ...

    def build(self, recipe: Recipe, sources: SourceSet) -> nn.Module: ...
