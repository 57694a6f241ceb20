"""Skip: drop the span. Identity when shapes agree; a 1x1 projection when only the channels differ."""

from __future__ import annotations

from torch import nn

from bespoke.graph import Span
from bespoke.house.alternatives.base import ProposalContext
from bespoke.house.alternatives.donor import adapter_spec
from bespoke.house.module import Alternative, make_adapter
from bespoke.house.recipe import Recipe
from bespoke.house.sources import TEACHER, SourceSet


class SkipKind:
    name = "skip"

    def describe(self, span: Span, ctx: ProposalContext) -> list[Recipe]:
        if span.in_shape[1:] != span.out_shape[1:]:
            return []
        return [Recipe(id="", kind="skip", span=(span.start, span.end), in_shape=list(span.in_shape),
                       out_shape=list(span.out_shape), source=TEACHER,
                       in_adapter=adapter_spec(span.in_channels, span.out_channels))]

    def complete(self, recipe: Recipe, ctx: ProposalContext) -> Recipe | None:
        return recipe

    def build(self, recipe: Recipe, sources: SourceSet) -> nn.Module:
        return Alternative(nn.Identity(), make_adapter(recipe.in_adapter, len(recipe.in_shape) == 3, recipe.seed))
