"""Channel pruning of the teacher span's internal channels with Torch-Pruning (span in/out channels fixed).

Groups of coupled channels come from ``tp.DependencyGraph``; a group touching the span's output (its sink) or
input (a source layer's input channels) is left alone. Within each internal group the lowest-L2 channels are
removed, keeping at least one channel in every layer of the group and, where a group runs through a grouped
convolution, removing the same offsets from each of its channel blocks (so ``groups`` still divides the
channels). The recipe records, per group, its root layer and the removed indices, so the same architecture is
rebuilt from a fresh copy of the span without the original weights.
"""

from __future__ import annotations

import copy
import math
import traceback
from dataclasses import dataclass

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


@dataclass(frozen=True)
class GroupScore:
    """One internal group: its root layer, per-channel importance, and what any removal must respect.

    ``blocks``: the group's channels fall into this many equal blocks of a grouped convolution, which must lose
    the same offsets in every block to stay grouped. ``members``: the group's channels (root indices) each
    conv/linear layer of the group holds; every layer keeps at least one (a concatenation can put all of one
    layer's channels among the least important).
    """

    layer: str
    scores: torch.Tensor
    blocks: int = 1
    members: tuple[frozenset[int], ...] = ()


def _is_grouped(module: nn.Module) -> bool:
    """A grouped convolution that is not depthwise (Torch-Pruning couples depthwise in/out channels itself)."""
    groups = getattr(module, "groups", 1)
    return isinstance(module, nn.modules.conv._ConvNd) and groups > 1 and not (
        groups == module.in_channels == module.out_channels)


def _constraints(group: tp.Group, channels: int) -> tuple[int, tuple[frozenset[int], ...]] | None:
    """``(blocks, members)`` of a group (see :class:`GroupScore`), or ``None`` when a grouped conv is reached
    through an index mapping other than the identity (then no consistent removal is known: left unpruned)."""
    blocks = 1
    members = []
    for item in group:
        module = item.dep.target.module
        if not isinstance(module, _ROOTS):
            continue
        idxs = list(item.idxs)
        roots = frozenset(int(getattr(i, "root_idx", i)) for i in idxs)
        members.append(roots)
        if _is_grouped(module):
            local = sorted(int(getattr(i, "idx", i)) for i in idxs)
            identity = all(int(getattr(i, "idx", i)) == int(getattr(i, "root_idx", i)) for i in idxs)
            if not identity or local != list(range(channels)):
                return None
            blocks = math.lcm(blocks, int(module.groups))
    if channels % blocks:
        return None
    return blocks, tuple(members)


def group_scores(body: nn.Module, in_shape: list[int], out_shape: list[int]) -> list[GroupScore]:
    """Every internal group of ``body`` with its per-channel group L2 importance and constraints.

    Raises:
        BespokeError: Torch-Pruning cannot follow the span's channels (e.g. a channel shuffle's reshape).
    """
    try:
        graph, stubs = _graph(body, in_shape, out_shape)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1].name
        raise BespokeError(f"Torch-Pruning cannot follow the channels through this span ({type(exc).__name__} "
                           f"in {where}: {(str(exc).splitlines() or [''])[0][:200]})",
                           "the span is left unpruned; other kinds still replace it") from exc
    names = {m: n for n, m in body.named_modules()}
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    found = []
    for group in graph.get_all_groups(root_module_types=_ROOTS):
        if _touches_io(group, stubs):
            continue
        scores = importance(group)
        if scores is None or scores.numel() <= 1:
            continue
        constraints = _constraints(group, int(scores.numel()))
        if constraints is not None:
            found.append(GroupScore(names[group[0].dep.target.module], scores.detach(), *constraints))
    return found


def _lowest(group: GroupScore, ratio: float) -> list[int]:
    """The ``ratio`` lowest-importance channels of ``group`` that leave every member layer a channel."""
    channels = int(group.scores.numel())
    if group.blocks > 1:  # the same offsets from every block, ranked by their summed importance
        width = channels // group.blocks
        n = min(round(width * ratio), width - 1)
        offsets = torch.argsort(group.scores.reshape(group.blocks, width).sum(0))[:n].tolist()
        return sorted(b * width + o for b in range(group.blocks) for o in offsets)
    n = min(round(channels * ratio), channels - 1)
    left = [len(m) for m in group.members]
    pruned = []
    for idx in torch.argsort(group.scores).tolist():
        if len(pruned) == n:
            break
        holders = [k for k, m in enumerate(group.members) if idx in m]
        if any(left[k] <= 1 for k in holders):
            continue
        for k in holders:
            left[k] -= 1
        pruned.append(idx)
    return sorted(pruned)


def plan_from_scores(scores: list[GroupScore], ratio: float) -> list[PruneStep]:
    """Remove the ``ratio`` lowest-importance channels of each group (at least one channel per layer stays)."""
    plan = []
    for group in scores:
        pruned = _lowest(group, ratio)
        if pruned:
            plan.append(PruneStep(layer=group.layer, pruned=pruned))
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


def _prunes_cleanly(body: nn.Module, in_shape: list[int], out_shape: list[int], plan: list[PruneStep]) -> bool:
    """Whether ``plan`` applies to a copy of ``body``, leaves every layer a channel and keeps the output shape."""
    trial = copy.deepcopy(body)
    try:
        apply_pruning(trial, in_shape, out_shape, plan)
        if any(p.numel() == 0 for p in trial.parameters()):
            return False
        with torch.no_grad():
            out = trial.eval()(_example(in_shape))
    except (RuntimeError, ValueError, IndexError, KeyError, ZeroDivisionError):
        return False
    return list(out.shape[1:]) == list(out_shape)


def viable_plan(body: nn.Module, in_shape: list[int], out_shape: list[int], plan: list[PruneStep]
                ) -> list[PruneStep]:
    """``plan`` without the groups Torch-Pruning cannot remove consistently (those layers stay unpruned).

    Channels coupled in a way the dependency graph does not express (a depthwise conv of one half of a
    concatenation inside a residual, as in GhostNet) would empty or mismatch a layer; such a group is tried on
    its own after the others and dropped when it breaks the span.
    """
    if not plan or _prunes_cleanly(body, in_shape, out_shape, plan):
        return plan
    kept: list[PruneStep] = []
    for step in plan:
        if _prunes_cleanly(body, in_shape, out_shape, [*kept, step]):
            kept.append(step)
    return kept


class PruneKind:
    name = "prune"

    def __init__(self) -> None:
        self._scores: dict[tuple[int, int], list[GroupScore] | BespokeError] = {}

    def describe(self, span: Span, ctx: ProposalContext) -> list[Recipe]:
        body = ctx.teacher.span(span.start, span.end)
        if sum(isinstance(m, _ROOTS) for m in body.modules()) < 2:  # one layer has no internal channels
            return []
        return [Recipe(id="", kind="prune", span=(span.start, span.end), in_shape=list(span.in_shape),
                       out_shape=list(span.out_shape), source=TEACHER, source_span=(span.start, span.end),
                       ratio=ratio) for ratio in RATIOS]

    def complete(self, recipe: Recipe, ctx: ProposalContext) -> Recipe | None:
        """The removed channels per group (Torch-Pruning on the span, once per span for all ratios)."""
        if recipe.prune is not None:
            return recipe
        if recipe.span not in self._scores:
            body = copy.deepcopy(ctx.teacher.span(*recipe.span))
            try:
                self._scores[recipe.span] = group_scores(body, recipe.in_shape, recipe.out_shape)
            except BespokeError as exc:  # every ratio of the span fails the same way: traced once
                self._scores[recipe.span] = exc
        scores = self._scores[recipe.span]
        if isinstance(scores, BespokeError):
            raise scores
        plan = viable_plan(ctx.teacher.span(*recipe.span), recipe.in_shape, recipe.out_shape,
                           plan_from_scores(scores, recipe.ratio or 0.5))
        return recipe.model_copy(update={"prune": plan}) if plan else None

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
