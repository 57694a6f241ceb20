"""Extraction: a chosen subnet as a plain module, its JSON recipe, and the arch builder that rebuilds it.

A delivered subnet's ``card.arch_config`` is ``{"builder": "tofa-subnet", "base": <teacher arch>, "subnet":
<SubnetConfig>, "net": <NetSpec>}``: ``net`` alone rebuilds the :class:`StaticNet` (weights come from
``model.safetensors``); ``base`` + ``subnet`` say where it came from.
"""

from __future__ import annotations

from typing import Any

from bespoke.errors import BespokeError
from bespoke.export import register_arch_builder
from bespoke.supernet.elastic import ElasticNet
from bespoke.supernet.space import SubnetConfig
from bespoke.supernet.specs import NetSpec
from bespoke.supernet.static import StaticNet

BUILDER = "tofa-subnet"


def extract_subnet(net: ElasticNet, cfg: SubnetConfig) -> StaticNet:
    """Activate ``cfg`` and return the standalone subnet (weights copied and sliced, eval mode)."""
    net.set_active_subnet(cfg)
    return net.get_active_subnet().eval()


def subnet_arch_config(base: str, cfg: SubnetConfig, spec: NetSpec) -> dict[str, Any]:
    """The JSON recipe stored in the model card."""
    return {"builder": BUILDER, "base": base, "subnet": cfg.to_dict(), "net": spec.to_dict()}


def build_subnet(arch_config: dict[str, Any]) -> StaticNet:
    """Rebuild an (untrained) subnet from its recipe; the arch builder registered as ``tofa-subnet``."""
    if "net" not in arch_config:
        raise BespokeError("tofa-subnet recipe without 'net'", "the card was not written by the supernet engine")
    return StaticNet(NetSpec.from_dict(arch_config["net"]))


register_arch_builder(BUILDER, build_subnet)
