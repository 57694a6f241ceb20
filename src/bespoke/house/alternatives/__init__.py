"""Alternative kinds, one registry: donor spans, pruned, low-rank and skipped teacher spans."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from torch import nn

from bespoke.errors import BespokeError
from bespoke.house.alternatives.base import AlternativeKind, ProposalContext
from bespoke.house.alternatives.donor import DonorKind
from bespoke.house.alternatives.lowrank import LowRankKind, decompose
from bespoke.house.alternatives.prune import PruneKind, apply_pruning, plan_pruning
from bespoke.house.alternatives.skip import SkipKind
from bespoke.house.recipe import Recipe
from bespoke.house.sources import SourceSet

KINDS: Mapping[str, type] = MappingProxyType({
    "donor": DonorKind, "prune": PruneKind, "lowrank": LowRankKind, "skip": SkipKind,
})


def make_kind(name: str) -> AlternativeKind:
    if name not in KINDS:
        raise BespokeError(f"unknown alternative kind {name!r}", f"one of {', '.join(KINDS)}")
    return KINDS[name]()


def build_alternative(recipe: Recipe, sources: SourceSet) -> nn.Module:
    """The module a recipe describes (weights from ``sources``; load trained weights afterwards)."""
    return make_kind(recipe.kind).build(recipe, sources)


__all__ = [
    "KINDS",
    "AlternativeKind",
    "DonorKind",
    "LowRankKind",
    "ProposalContext",
    "PruneKind",
    "SkipKind",
    "apply_pruning",
    "build_alternative",
    "decompose",
    "make_kind",
    "plan_pruning",
]
