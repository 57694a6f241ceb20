"""torch.fx tracing with the leaf rule the block engine needs, and errors that name the failing module.

Every module whose class derives from a ``torch.nn`` layer (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.Linear``,
activations, pooling...) stays a ``call_module`` leaf, even when a library subclasses it (timm's
``BatchNormAct2d``, bespoke's ``StaticSameConv2d``). This keeps train/eval behaviour live after tracing
(batch norm is not frozen into the graph) and lets Torch-Pruning and low-rank decomposition find the layers
as modules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from bespoke.errors import BespokeError

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_torch_layer(module: nn.Module) -> bool:
    """True when ``module`` is (a subclass of) a ``torch.nn`` layer other than a plain container."""
    if isinstance(module, _CONTAINERS):
        return False
    return any(
        cls.__module__.startswith(("torch.nn.modules", "torch.ao.nn")) and cls is not nn.Module
        for cls in type(module).__mro__
    )


class BlockTracer(fx.Tracer):
    """fx tracer keeping every ``torch.nn`` layer (and subclasses) as a leaf; remembers where it failed."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_at: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_torch_layer(m)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:  # the innermost module sets it first
                self.failed_at = f"{self.path_of_module(m) or '<root>'} ({type(m).__name__})"
            raise


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (in eval mode) into a GraphModule sharing the model's parameters.

    Python-level flags (``self.training``, dropout rates) are read once, in eval mode: the graph never applies
    functional dropout. Layers stay modules, so batch norm follows ``.train()``/``.eval()`` afterwards.

    Raises:
        BespokeError: the model cannot be traced; the message names the module where tracing failed.
    """
    was_training = model.training
    model.eval()
    tracer = BlockTracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        where = tracer.failed_at or f"<root> ({type(model).__name__})"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BespokeError(
            f"cannot trace {type(model).__name__} with torch.fx: module {where}: "
            f"{type(exc).__name__}: {first}",
            "the block engine needs an fx-traceable model (no data-dependent Python control flow); "
            "use a zoo model or wrap the offending module so it is a leaf",
        ) from exc
    finally:
        model.train(was_training)
    name = type(model).__name__
    gm = fx.GraphModule(tracer.root, graph, name)
    gm.train(was_training)
    return gm


def node_module_path(node: fx.Node) -> list[str]:
    """Qualified names of the modules a node was traced inside, outermost first (without the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _ in stack.values() if path]


def tensor_meta(value: Any) -> tuple[int, ...] | None:
    """Shape without the batch dimension of a tensor value, or ``None`` for anything else."""
    if isinstance(value, torch.Tensor):
        return tuple(int(d) for d in value.shape[1:])
    return None
