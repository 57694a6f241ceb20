"""Split a traced model into consecutive single-input/single-output *segments* between block cut points.

Running the segments one after the other is the original model, operation for operation (bit-identical
outputs). Segments are ``fx.GraphModule`` objects whose parameters keep their original qualified names
(``blocks.1.0.conv_pw.weight``), so a state dict maps back onto the model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from bespoke.errors import BespokeError
from bespoke.graph.cuts import block_cuts, compute_nodes, fine_cuts, is_container, merge_weightless
from bespoke.graph.trace import node_module_path, tensor_meta, trace

Shape = tuple[int, ...]


@dataclass
class Segmentation:
    """A model as a list of segments plus the activation shape (batch dimension left out) at each boundary.

    ``shapes[i]`` is the input shape of segment ``i``; ``shapes[-1]`` the model output shape.
    """

    segments: list[fx.GraphModule]
    names: list[str]
    shapes: list[Shape]

    def __len__(self) -> int:
        return len(self.segments)

    def run(self, x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Run segments ``start .. end-1`` on ``x`` (the activation at boundary ``start``)."""
        for seg in self.segments[start:end]:
            x = seg(x)
        return x

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations at every boundary (``len(self) + 1`` tensors; the first is ``x``)."""
        acts = [x]
        for seg in self.segments:
            acts.append(seg(acts[-1]))
        return acts

    def span(self, start: int, end: int) -> nn.Sequential:
        """Segments ``start .. end-1`` as one module (shared, not copied)."""
        return nn.Sequential(*self.segments[start:end])

    def module(self) -> nn.Sequential:
        """The whole model as a sequence of its segments (shared, not copied)."""
        return nn.Sequential(*self.segments)

    def params(self, index: int) -> int:
        return sum(p.numel() for p in self.segments[index].parameters())


def segment_model(model: nn.Module, input_shape: Sequence[int], *, copy_model: bool = True) -> Segmentation:
    """Trace ``model`` and split it at block cut points.

    Args:
        model: any fx-traceable module with one tensor input and one tensor output.
        input_shape: input shape without batch, e.g. ``(3, 64, 64)``.
        copy_model: segment a deep copy (default): the caller's model shares no parameters with them.
    """
    source = copy.deepcopy(model) if copy_model else model
    gm = trace(source)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise BespokeError(f"{type(model).__name__}.forward takes {len(placeholders)} inputs, expected 1",
                           "the block engine handles single-input image models")
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if not isinstance(output.args[0], fx.Node):
        raise BespokeError(f"{type(model).__name__}.forward returns a {type(output.args[0]).__name__}, "
                           "expected one tensor", "wrap the model so it returns logits only")
    cuts = block_cuts(source, fine_cuts(gm.graph))
    cut_set = set(cuts)
    groups: list[list[fx.Node]] = [[]]
    for node in compute_nodes(gm.graph):
        groups[-1].append(node)
        if node in cut_set:
            groups.append([])
    groups = [g for g in groups if g]
    groups = merge_weightless(gm, groups)
    segments = [_build_segment(gm, group, i) for i, group in enumerate(groups)]
    shapes = _boundary_shapes(segments, input_shape, was_training=model.training)
    names = [_segment_name(source, group) for group in groups]
    for seg in segments:
        seg.train(model.training)
    return Segmentation(segments=segments, names=names, shapes=shapes)


def _build_segment(gm: fx.GraphModule, nodes: list[fx.Node], index: int) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    members = set(nodes)
    entry = [a for n in nodes for a in n.all_input_nodes if a not in members and a.op != "get_attr"]
    if len({id(a) for a in entry}) != 1:
        raise BespokeError(f"segment {index} of {type(gm).__name__} has {len({id(a) for a in entry})} inputs",
                           "internal error in cut-point detection; please report the model")
    env[entry[0]] = graph.placeholder("x")

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:
            if node.op != "get_attr":
                raise BespokeError(f"segment {index}: value {node.name} crosses a cut point",
                                   "internal error in cut-point detection; please report the model")
            env[node] = graph.node_copy(node, lookup)
        return env[node]

    for node in nodes:
        for arg in node.all_input_nodes:
            lookup(arg)
        env[node] = graph.node_copy(node, lookup)
    graph.output(env[nodes[-1]])
    graph.lint()
    return fx.GraphModule(gm, graph, f"Segment{index}")


@torch.no_grad()
def _boundary_shapes(segments: list[fx.GraphModule], input_shape: Sequence[int], was_training: bool
                     ) -> list[Shape]:
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    shapes = [tuple(int(d) for d in input_shape)]
    for i, seg in enumerate(segments):
        seg.eval()
        x = seg(x)
        shape = tensor_meta(x)
        if shape is None:
            raise BespokeError(f"segment {i} returns a {type(x).__name__}, not a tensor",
                               "internal error in cut-point detection; please report the model")
        shapes.append(shape)
    return shapes


def _segment_name(model: nn.Module, nodes: list[fx.Node]) -> str:
    """A readable name: the block module the segment is (``blocks.1.0``), else ``first..last`` block names."""
    paths = [p for p in (node_module_path(n) for n in nodes) if p]
    if not paths:
        return "functional"
    common = paths[0]
    for p in paths[1:]:
        k = 0
        while k < min(len(common), len(p)) and common[k] == p[k]:
            k += 1
        common = common[:k]
    block = next((q for q in common if not is_container(model.get_submodule(q))), None)
    if block is not None:
        return block

    def block_name(path: list[str]) -> str:
        return next((q for q in path if not is_container(model.get_submodule(q))), path[-1])

    first, last = block_name(paths[0]), block_name(paths[-1])
    return first if first == last else f"{first}..{last}"
