"""Donor spans: a segment range of a public pretrained network, with 1x1 adapters where channels differ."""

from __future__ import annotations

import copy

import torch
from torch import nn

from bespoke.graph import Segmentation, Span, enumerate_spans, span_of
from bespoke.house.alternatives.base import ProposalContext
from bespoke.house.cost import layer_macs, projection_macs
from bespoke.house.module import Alternative, make_adapter
from bespoke.house.recipe import AdapterSpec, Recipe
from bespoke.house.sources import SourceSet


def adapter_spec(c_in: int, c_out: int) -> AdapterSpec | None:
    return None if c_in == c_out else AdapterSpec(in_channels=c_in, out_channels=c_out)


class DonorKind:
    """Donor spans with the same spatial reduction as the teacher span (checked by a dry run)."""

    name = "donor"

    def __init__(self) -> None:
        self._dry: dict[tuple[str, int, int, tuple[int, ...]], tuple[tuple[int, ...], int] | None] = {}
        self._teacher_macs: dict[tuple[int, int], int] = {}

    def describe(self, span: Span, ctx: ProposalContext) -> list[Recipe]:
        found = []
        for donor in ctx.donors:
            dseg = ctx.sources.segmentation(donor)
            for dspan in enumerate_spans(dseg, ctx.max_span):
                if len(dspan.in_shape) != len(span.in_shape) or len(dspan.out_shape) != len(span.out_shape):
                    continue
                if dspan.reduction != span.reduction:
                    continue
                found.append(Recipe(
                    id="", kind="donor", span=(span.start, span.end), in_shape=list(span.in_shape),
                    out_shape=list(span.out_shape), source=donor, source_span=(dspan.start, dspan.end),
                    in_adapter=adapter_spec(span.in_channels, dspan.in_channels),
                    out_adapter=adapter_spec(dspan.out_channels, span.out_channels),
                ))
        return found

    def complete(self, recipe: Recipe, ctx: ProposalContext) -> Recipe | None:
        """The recipe when the donor span, fed the teacher span's input size, gives its output size and costs
        at most ``max_cost_ratio`` times the teacher span's MACs (adapters included); else ``None``."""
        span = span_of(ctx.teacher, *recipe.span)
        dseg = ctx.sources.segmentation(recipe.source)
        dspan = span_of(dseg, *(recipe.source_span or (0, 0)))
        dry = self._dry_run(recipe.source, dseg, dspan, span)
        if dry is None or dry[0][1:] != span.out_shape[1:]:
            return None
        macs = (dry[1] + projection_macs(span.in_channels, dspan.in_channels, span.in_shape)
                * (span.in_channels != dspan.in_channels)
                + projection_macs(dspan.out_channels, span.out_channels, span.out_shape)
                * (dspan.out_channels != span.out_channels))
        return recipe if macs <= ctx.max_cost_ratio * self._span_macs(span, ctx) else None

    def _span_macs(self, span: Span, ctx: ProposalContext) -> int:
        key = (span.start, span.end)
        if key not in self._teacher_macs:
            body = ctx.teacher.span(span.start, span.end)
            self._teacher_macs[key] = layer_macs(body, torch.zeros(1, *span.in_shape))
        return self._teacher_macs[key]

    def _dry_run(self, donor: str, dseg: Segmentation, dspan: Span, span: Span
                 ) -> tuple[tuple[int, ...], int] | None:
        """Output shape and MACs of the donor span fed a tensor of the teacher span's spatial size (cached)."""
        key = (donor, dspan.start, dspan.end, span.in_shape[1:])
        if key not in self._dry:
            x = torch.zeros(1, dspan.in_channels, *span.in_shape[1:])
            try:
                with torch.no_grad():
                    y = dseg.run(x, dspan.start, dspan.end)
                self._dry[key] = (tuple(y.shape[1:]), layer_macs(dseg.span(dspan.start, dspan.end), x))
            except RuntimeError:  # too small for the donor's kernels/strides
                self._dry[key] = None
        return self._dry[key]

    def build(self, recipe: Recipe, sources: SourceSet) -> nn.Module:
        dseg = sources.segmentation(recipe.source)
        a, b = recipe.source_span or (0, 0)
        body = copy.deepcopy(dseg.span(a, b))
        spatial = len(recipe.in_shape) == 3
        return Alternative(body, make_adapter(recipe.in_adapter, spatial, recipe.seed),
                           make_adapter(recipe.out_adapter, len(recipe.out_shape) == 3, recipe.seed + 1))
