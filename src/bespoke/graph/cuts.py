"""Cut points of a traced graph: places where a single tensor carries everything that flows onward.

Two levels:

* :func:`fine_cuts` — every node after which exactly one value (the node itself) is still needed later.
  Found by one liveness sweep over the execution order; parameters (``get_attr``) are constants, not flow.
* :func:`block_cuts` — the fine cuts that lie between *blocks*: a cut is kept only when every module enclosing
  both sides of it is a *container* (see :func:`is_container`: the root, a ``Sequential``-like list of blocks,
  or a stage module made of blocks). This drops the cuts inside a conv-bn-conv chain or a residual-free MBConv
  block without any per-architecture rule, while a DenseNet's ``features`` (stem layers, dense blocks,
  transitions), a RegNet ``RegStage`` (``b1, b2, ...``) or a ConvNeXt stage (downsample + blocks) is cut
  between its blocks; :func:`merge_weightless` then folds segments holding no conv/linear layer (a lone batch
  norm, pooling, flatten) into their neighbour.
"""

from __future__ import annotations

from torch import fx, nn

from bespoke.graph.trace import is_torch_layer, node_module_path

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_FLOW_OPS = ("call_module", "call_function", "call_method")


def compute_nodes(graph: fx.Graph) -> list[fx.Node]:
    """Nodes that compute something (no placeholders, parameters or output)."""
    return [n for n in graph.nodes if n.op in _FLOW_OPS]


def fine_cuts(graph: fx.Graph) -> list[fx.Node]:
    """Nodes after which the node's own value is the only live value, in execution order.

    The (single) input placeholder is the first cut. The node feeding the output is not a cut.
    """
    order = [n for n in graph.nodes if n.op != "get_attr"]
    pos = {n: i for i, n in enumerate(order)}
    last_use: dict[fx.Node, int] = {}
    for node in order:
        users = [pos[u] for u in node.users if u in pos]
        if users:
            last_use[node] = max(users)
    dying: dict[int, int] = {}
    for last in last_use.values():
        dying[last] = dying.get(last, 0) + 1
    cuts = []
    live = 0
    for i, node in enumerate(order):
        live -= dying.get(i, 0)
        if node in last_use:
            live += 1
        if node.op == "output":
            break
        feeds_output = any(u.op == "output" for u in node.users)
        if live == 1 and node in last_use and not feeds_output:
            cuts.append(node)
    return cuts


def _holds_weights(module: nn.Module) -> bool:
    return any(isinstance(m, _WEIGHTED) for m in module.modules())


def is_container(module: nn.Module) -> bool:
    """A module whose children are blocks to cut between, not the layers of one block.

    Either a ``Sequential``/``ModuleList``/``ModuleDict`` with a weighted child that is not a bare conv/linear
    layer and at most one that is (a stem conv before dense blocks; weightless norms and pools between blocks
    are folded back by :func:`merge_weightless`), or a plain module with at least two weighted children, none of
    them a bare conv/linear layer (a RegNet or ConvNeXt stage; a block made of single layers is not one, and a
    residual block has no cut inside anyway).
    """
    weighted = [c for c in module.children() if _holds_weights(c)]
    bare = sum(isinstance(c, _WEIGHTED) for c in weighted)
    if isinstance(module, _CONTAINERS):
        return len(weighted) > bare and bare <= 1
    return not is_torch_layer(module) and len(weighted) >= 2 and bare == 0


def _next_compute(node: fx.Node) -> fx.Node | None:
    nxt = node.next
    while nxt.op in ("get_attr", "placeholder"):
        nxt = nxt.next
    return None if nxt.op in ("output", "root") else nxt


def block_cuts(model: nn.Module, cuts: list[fx.Node]) -> list[fx.Node]:
    """The cuts of ``cuts`` that separate blocks (see the module docstring). The input placeholder is kept.

    ``model`` is the traced module itself (its containers; a GraphModule flattens them to plain modules).
    """
    kept = []
    for node in cuts:
        if node.op == "placeholder":
            kept.append(node)
            continue
        nxt = _next_compute(node)
        if nxt is None:
            continue
        common = []
        for a, b in zip(node_module_path(node), node_module_path(nxt), strict=False):
            if a != b:
                break
            common.append(a)
        if all(is_container(model.get_submodule(path)) for path in common):
            kept.append(node)
    return kept


def node_holds_weights(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for a call to a conv or linear layer (module or functional)."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _WEIGHTED)
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return name.startswith(("conv", "linear"))
    return False


def merge_weightless(gm: fx.GraphModule, groups: list[list[fx.Node]]) -> list[list[fx.Node]]:
    """Fold every group without a conv/linear call into the previous group (the next one for the first)."""
    merged: list[list[fx.Node]] = []
    carry: list[fx.Node] = []
    for group in groups:
        if any(node_holds_weights(gm, n) for n in group):
            merged.append(carry + group)
            carry = []
        elif merged:
            merged[-1].extend(group)
        else:
            carry.extend(group)
    if carry:
        if merged:
            merged[-1].extend(carry)
        else:
            merged.append(carry)
    return merged
