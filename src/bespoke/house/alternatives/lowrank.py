"""Low-rank decomposition of the teacher span's dense convolutions.

A ``k x k`` conv ``W [O, I, k, k]`` becomes a ``k x k`` conv to ``r`` channels followed by a 1x1 conv to ``O``:
the truncated SVD of ``W`` reshaped to ``[O, I*k*k]`` gives both weights (``sqrt(S)`` split between them), so the
pair starts as the best rank-``r`` approximation. Only convs where rank ``r`` saves multiply-adds are touched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bespoke.graph import Span
from bespoke.house.alternatives.base import ProposalContext
from bespoke.house.module import Alternative
from bespoke.house.recipe import Recipe
from bespoke.house.sources import TEACHER, SourceSet

RANK_FRACTIONS = (0.25, 0.5)


def _dense_convs(body: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in body.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]


def plan_ranks(body: nn.Module, fraction: float) -> dict[str, int]:
    """Rank per conv for ``fraction`` of its full rank, keeping only convs the decomposition makes cheaper."""
    ranks = {}
    for name, conv in _dense_convs(body):
        o, fan_in = conv.out_channels, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        r = max(1, round(fraction * min(o, fan_in)))
        if r * (fan_in + o) < o * fan_in:
            ranks[name] = r
    return ranks


def decompose(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """``conv`` as (k x k conv to ``rank`` channels) -> (1x1 conv), initialised from the truncated SVD."""
    first = copy.deepcopy(conv)  # keeps the class (static SAME padding), stride, dilation
    o = conv.out_channels
    weight = conv.weight.detach().reshape(o, -1).double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = s[:rank].sqrt()
    first.weight = nn.Parameter((root[:, None] * vh[:rank]).reshape(rank, *conv.weight.shape[1:]).float())
    first.out_channels = rank
    first.bias = None
    second = nn.Conv2d(rank, o, 1, bias=conv.bias is not None)
    second.weight = nn.Parameter((u[:, :rank] * root[None, :]).reshape(o, rank, 1, 1).float())
    if conv.bias is not None:
        second.bias = nn.Parameter(conv.bias.detach().clone())
    return nn.Sequential(first, second)


def apply_ranks(body: nn.Module, ranks: dict[str, int]) -> None:
    """Replace each named conv of ``body`` in place by its decomposition."""
    for name, rank in ranks.items():
        parent_name, _, child = name.rpartition(".")
        parent = body.get_submodule(parent_name) if parent_name else body
        setattr(parent, child, decompose(body.get_submodule(name), rank))


class LowRankKind:
    name = "lowrank"

    def describe(self, span: Span, ctx: ProposalContext) -> list[Recipe]:
        body = ctx.teacher.span(span.start, span.end)
        found = []
        for fraction in RANK_FRACTIONS:
            ranks = plan_ranks(body, fraction)
            if ranks:
                found.append(Recipe(id="", kind="lowrank", span=(span.start, span.end),
                                    in_shape=list(span.in_shape), out_shape=list(span.out_shape), source=TEACHER,
                                    source_span=(span.start, span.end), rank_fraction=fraction, ranks=ranks))
        return found

    def complete(self, recipe: Recipe, ctx: ProposalContext) -> Recipe | None:
        return recipe  # ranks come from weight shapes alone: described complete

    def build(self, recipe: Recipe, sources: SourceSet) -> nn.Module:
        a, b = recipe.source_span or recipe.span
        body = copy.deepcopy(sources.segmentation(TEACHER).span(a, b))
        with torch.no_grad():
            apply_ranks(body, recipe.ranks or {})
        return Alternative(body)
