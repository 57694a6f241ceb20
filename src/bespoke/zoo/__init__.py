"""Model zoo: a registry of architectures with offline pretrained weights, and one factory for all of them.

>>> from bespoke.zoo import create_model, list_models
>>> model = create_model("efficientnet_lite0", num_classes=10, resolution=64)
"""

from bespoke.zoo import efficientnet_lite, external, mobilenet  # noqa: F401  (register models)
from bespoke.zoo.config import PretrainedCfg
from bespoke.zoo.layers import StaticSameConv2d, freeze_same_padding, set_bn_momentum
from bespoke.zoo.model_args import ModelArgs, parse_model_args
from bespoke.zoo.registry import (
    ModelEntry,
    create_model,
    get_entry,
    get_pretrained_cfg,
    head_classes,
    head_linear,
    list_models,
    register_model,
    register_prefix,
    reset_head,
)
from bespoke.zoo.weights import apply_state_dict, load_state_dict

__all__ = [
    "ModelArgs",
    "ModelEntry",
    "PretrainedCfg",
    "StaticSameConv2d",
    "apply_state_dict",
    "create_model",
    "freeze_same_padding",
    "get_entry",
    "get_pretrained_cfg",
    "head_classes",
    "head_linear",
    "list_models",
    "load_state_dict",
    "parse_model_args",
    "register_model",
    "register_prefix",
    "reset_head",
    "set_bn_momentum",
]
