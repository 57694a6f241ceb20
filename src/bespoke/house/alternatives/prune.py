"""Channel pruning of the teacher span's internal channels with Torch-Pruning (span in/out channels fixed).

Groups of coupled channels come from ``tp.DependencyGraph``; a group touching the span's output (its sink) or
input (a source layer's input channels) is left alone. Within each internal group the lowest-L2 channels are
removed. The recipe records, per group, its root layer and the removed indices, so the same architecture is
rebuilt from a fresh copy of the span without the original weights.
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from bespoke.errors import BespokeError
from bespoke.graph import Span
from bespoke.house.alternatives.base import ProposalContext
from bespoke.house.module import Alternative
from bespoke.house.recipe import PruneStep, Recipe
from bespoke.house.sources import TEACHER, SourceSet

RATIOS = (0.5, 0.75, 0.875)
_ROOTS = (nn.modules.conv._ConvNd, nn.Linear)


def _example(shape: list[int]) -> torch.Tensor:
    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))


def _stub(channels: int, spatial: bool) -> nn.Module:
    return nn.Conv2d(channels, channels, 1) if spatial else nn.Linear(channels, channels)


def _graph(body: nn.Module, in_shape: list[int], out_shape: list[int]
           ) -> tuple[tp.DependencyGraph, set[nn.Module]]:
    """Dependency graph of ``body`` between two stub layers that pin the span's input and output channels.

    The stubs make the span's input a layer output Torch-Pruning can see (a residual add of the raw input is
    otherwise invisible to it) and its output a layer input; any group holding a stub is a boundary group.
    """
    first, last = (_stub(in_shape[0], len(in_shape) == 3), _stub(out_shape[0], len(out_shape) == 3))
    stubs = {first, last}
    probe = nn.Sequential(first, body, last).eval()
    with torch.inference_mode(False), torch.enable_grad():  # Torch-Pruning traces through autograd
        graph = tp.DependencyGraph().build_dependency(probe, example_inputs=_example(in_shape), verbose=False)
    return graph, stubs


def _touches_io(group: tp.Group, stubs: set[nn.Module]) -> bool:
    for item in group:
        node, fn = item.dep.target, getattr(item.dep.handler, "__name__", "")
        if node.module in stubs or (fn.endswith("out_channels") and not node.outputs):
            return True
    return False


def group_scores(body: nn.Module, in_shape: list[int], out_shape: list[int]) -> list[tuple[str, torch.Tensor]]:
    """Root layer name and per-channel group L2 importance of every internal group of ``body``."""
    graph, stubs = _graph(body, in_shape, out_shape)
    names = {m: n for n, m in body.named_modules()}
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    found = []
    for group in graph.get_all_groups(root_module_types=_ROOTS):
        if _touches_io(group, stubs):
            continue
        scores = importance(group)
        if scores is not None and scores.numel() > 1:
            found.append((names[group[0].dep.target.module], scores.detach()))
    return found


def plan_from_scores(scores: list[tuple[str, torch.Tensor]], ratio: float) -> list[PruneStep]:
    """Remove the ``ratio`` lowest-importance channels of each group (at least one channel stays)."""
    plan = []
    for layer, score in scores:
        channels = int(score.numel())
        n_prune = min(round(channels * ratio), channels - 1)
        if n_prune > 0:
            plan.append(PruneStep(layer=layer, pruned=sorted(torch.argsort(score)[:n_prune].tolist())))
    return plan


def plan_pruning(body: nn.Module, in_shape: list[int], out_shape: list[int], ratio: float) -> list[PruneStep]:
    """Which channels to remove from each internal group of ``body`` (lowest group L2 norm first)."""
    return plan_from_scores(group_scores(body, in_shape, out_shape), ratio)


def apply_pruning(body: nn.Module, in_shape: list[int], out_shape: list[int], plan: list[PruneStep]) -> None:
    """Remove the planned channels from ``body`` in place (same order, same indices => same architecture)."""
    graph, _ = _graph(body, in_shape, out_shape)
    for step in plan:
        module = body.get_submodule(step.layer)
        group = graph.get_pruning_group(module, graph.get_pruner_of_module(module).prune_out_channels,
                                        idxs=list(step.pruned))
        group.prune()


class PruneKind:
    name = "prune"

    def propose(self, span: Span, ctx: ProposalContext) -> list[Recipe]:
        body = ctx.teacher.span(span.start, span.end)
        if sum(isinstance(m, _ROOTS) for m in body.modules()) < 2:  # one layer has no internal channels
            return []
        scores = group_scores(copy.deepcopy(body), list(span.in_shape), list(span.out_shape))
        found = []
        for ratio in RATIOS:
            plan = plan_from_scores(scores, ratio)
            if plan:
                found.append(Recipe(id="", kind="prune", span=(span.start, span.end), in_shape=list(span.in_shape),
                                    out_shape=list(span.out_shape), source=TEACHER,
                                    source_span=(span.start, span.end), ratio=ratio, prune=plan))
        return found

    def build(self, recipe: Recipe, sources: SourceSet) -> nn.Module:
        a, b = recipe.source_span or recipe.span
        body = copy.deepcopy(sources.segmentation(TEACHER).span(a, b))
        if recipe.prune is None:
            recipe.prune = plan_pruning(body, recipe.in_shape, recipe.out_shape, recipe.ratio or 0.5)
        if not recipe.prune:
            raise BespokeError(f"span [{a}, {b}) has no internal channels to prune")
        apply_pruning(body, recipe.in_shape, recipe.out_shape, recipe.prune)
        with torch.no_grad():
            out = body.eval()(_example(recipe.in_shape))
        if list(out.shape[1:]) != list(recipe.out_shape):
            raise BespokeError(f"pruning span [{a}, {b}) changed its output to {list(out.shape[1:])}")
        return Alternative(body)
