"""Architecture builders: rebuild a delivered model from the JSON recipe in its card (never a pickled module).

Engines register a builder for their own recipes (``register_arch_builder("tofa-subnet", fn)``); ``"zoo"`` is here.
The builders of bespoke's own engines are also known by the module that registers them
(:data:`BUILDER_MODULES`), so any command rebuilds any model directory in a fresh process: the module is
imported the first time its builder is asked for (as ``bespoke.bench.engines`` resolves engines).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from bespoke.errors import BespokeError
from bespoke.zoo import create_model

ArchBuilder = Callable[[dict[str, Any]], nn.Module]
_BUILDERS: dict[str, ArchBuilder] = {}

#: Builder name -> the module whose import registers it (bespoke's own engines and baselines).
BUILDER_MODULES: dict[str, str] = {
    "bespoke-block": "bespoke.house.student",
    "pruned": "bespoke.baselines.pruning",
    "tofa-subnet": "bespoke.supernet.extract",
    "tiny-efficientnet": "bespoke.supernet.tiny",
}


def register_arch_builder(name: str, fn: ArchBuilder) -> None:
    """Register how to rebuild architectures whose ``arch_config["builder"] == name``."""
    if name in _BUILDERS and _BUILDERS[name] is not fn:
        raise ValueError(f"arch builder {name!r} registered twice")
    _BUILDERS[name] = fn


def get_arch_builder(name: str) -> ArchBuilder:
    """The builder registered as ``name``, importing the module that provides it when it is one of bespoke's."""
    if name not in _BUILDERS and name in BUILDER_MODULES:
        importlib.import_module(BUILDER_MODULES[name])
    if name not in _BUILDERS:
        known = sorted({*_BUILDERS, *BUILDER_MODULES})
        raise BespokeError(f"no builder {name!r} for this model's architecture",
                           f"known builders: {', '.join(known)}; a model of another tool needs that tool's "
                           f"register_arch_builder({name!r}, fn) first")
    return _BUILDERS[name]


def build_arch(arch_config: dict[str, Any]) -> nn.Module:
    """An untrained module of the architecture ``arch_config`` describes."""
    name = arch_config.get("builder")
    if not isinstance(name, str):
        raise BespokeError("the card's arch_config names no builder", "re-export the model with bespoke")
    return get_arch_builder(name)(arch_config)


def zoo_arch_config(name: str, num_classes: int, resolution: int,
                    model_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recipe of a zoo model (architecture only; weights come from model.safetensors). ``model_args``: the
    constructor keyword arguments it was built with (kept only when there are any)."""
    config = {"builder": "zoo", "name": name, "num_classes": num_classes, "resolution": resolution}
    if model_args:
        config["model_args"] = dict(model_args)
    return config


register_arch_builder("zoo", lambda c: create_model(c["name"], num_classes=c["num_classes"], pretrained=False,
                                                    resolution=c["resolution"], model_args=c.get("model_args")))
