"""Architecture builders: rebuild a delivered model from the JSON recipe in its card (never a pickled module).

Engines register a builder for their own recipes (``register_arch_builder("tofa-subnet", fn)``); ``"zoo"`` is here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bespoke.errors import BespokeError
from bespoke.zoo import create_model

ArchBuilder = Callable[[dict[str, Any]], nn.Module]
_BUILDERS: dict[str, ArchBuilder] = {}


def register_arch_builder(name: str, fn: ArchBuilder) -> None:
    """Register how to rebuild architectures whose ``arch_config["builder"] == name``."""
    if name in _BUILDERS and _BUILDERS[name] is not fn:
        raise ValueError(f"arch builder {name!r} registered twice")
    _BUILDERS[name] = fn


def build_arch(arch_config: dict[str, Any]) -> nn.Module:
    """An untrained module of the architecture ``arch_config`` describes."""
    name = arch_config.get("builder")
    if name not in _BUILDERS:
        raise BespokeError(f"no builder {name!r} for this model's architecture",
                           f"known builders: {', '.join(sorted(_BUILDERS))}; import the engine that made it")
    return _BUILDERS[name](arch_config)


def zoo_arch_config(name: str, num_classes: int, resolution: int) -> dict[str, Any]:
    """Recipe of a zoo model (architecture only; weights come from model.safetensors)."""
    return {"builder": "zoo", "name": name, "num_classes": num_classes, "resolution": resolution}


register_arch_builder("zoo", lambda c: create_model(c["name"], num_classes=c["num_classes"], pretrained=False,
                                                    resolution=c["resolution"]))
