"""Model registry and factory (timm's ``register_model`` / ``create_model`` shape, our own code).

A registered entry builds an architecture and knows its pretrained weights; ``create_model`` does the rest the same
way for every model: load weights (pretrained or a user file), re-make the classifier for ``num_classes``, fix SAME
padding for the resolution, set batch-norm momentum.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.zoo.config import PretrainedCfg
from bespoke.zoo.layers import freeze_same_padding, set_bn_momentum
from bespoke.zoo.model_args import ModelArgs, parse_model_args
from bespoke.zoo.weights import apply_state_dict, load_state_dict


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it (``num_classes`` as the weights have it) and where its weights are."""

    cfg: PretrainedCfg
    #: ``build(num_classes, **model_args)``; keyword arguments only where ``takes_args``
    build: Callable[..., nn.Module]
    pretrained_state: Callable[[], dict[str, torch.Tensor]] | None
    #: run one forward at the requested resolution when built: other libraries' architectures may take only some
    #: input sizes (a ViT its own), and that must fail here, in one line, not at the first training step
    probe_input: bool = False
    #: the builder passes keyword arguments to the library's constructor (``--model-args``)
    takes_args: bool = False


_REGISTRY: dict[str, ModelEntry] = {}
# Prefix families ("timm:<arch>", "torchvision:<arch>") resolve any architecture of those libraries.
_PREFIXES: dict[str, Callable[[str], ModelEntry]] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add ``entry`` under ``entry.cfg.name``; a duplicate name is a programming error."""
    if entry.cfg.name in _REGISTRY:
        raise ValueError(f"model {entry.cfg.name!r} registered twice")
    _REGISTRY[entry.cfg.name] = entry
    return entry


def register_prefix(prefix: str, resolver: Callable[[str], ModelEntry]) -> None:
    """Resolve names ``"<prefix>:<arch>"`` with ``resolver(arch)``."""
    _PREFIXES[prefix] = resolver


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern (prefix families are listed as ``timm:*`` etc.)."""
    names = sorted(_REGISTRY) + [f"{p}:*" for p in sorted(_PREFIXES)]
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; unknown names fail with the list of known ones."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, sep, arch = name.partition(":")
    if sep and prefix in _PREFIXES:
        return _PREFIXES[prefix](arch)
    raise BespokeError(f"unknown model {name!r}",
                       f"known: {', '.join(list_models())}; see `bespoke zoo list`")


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """Metadata (mean/std, native resolution, source, licence) of a model name."""
    return get_entry(name).cfg


def head_linear(model: nn.Module) -> tuple[str, nn.Linear | nn.Conv2d]:
    """The classifier: the last ``nn.Linear`` in module order (true for every zoo/timm/torchvision classifier with
    a linear head), else the last dense 1x1 ``nn.Conv2d`` (a conv head, SqueezeNet's, pooled after)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if found:
        return found[-1]
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
    if not convs:
        raise BespokeError(f"{type(model).__name__} has neither an nn.Linear nor a 1x1 conv classifier",
                           "use a classification model")
    return convs[-1]


def head_classes(layer: nn.Linear | nn.Conv2d) -> int:
    """Classes a classifier layer of :func:`head_linear` predicts."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def reset_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the classifier by a fresh layer of the same kind for ``num_classes`` (no-op if it already has that
    size): ``Linear(in_features, num_classes)`` or a 1x1 ``Conv2d(in_channels, num_classes)``."""
    name, old = head_linear(model)
    if head_classes(old) == num_classes:
        return model
    new: nn.Module
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def create_model(name: str, *, num_classes: int | None = None, pretrained: bool = True, resolution: int = 224,
                 weights: str | Path | None = None, bn_momentum: float | None = 0.1, seed: int = 0,
                 model_args: ModelArgs | None = None) -> nn.Module:
    """Build a model by name.

    Args:
        name: a registered name (``bespoke zoo list``) or ``timm:<arch>`` / ``torchvision:<arch>``.
        num_classes: classes of the new head; ``None`` keeps the head of the weights.
        pretrained: load the registered (ImageNet) weights. Ignored when ``weights`` is given.
        resolution: input size the model will see; fixes TF-style SAME padding statically.
        weights: a local ``.safetensors``/``.pth`` file (a fine-tuned checkpoint or public weights).
        bn_momentum: batch-norm momentum to train with (TF ports ship 0.01, too slow for short runs); ``None`` keeps it.
        seed: initialises whatever the weights do not cover (a new head; everything without weights). The global RNG
            is neither read nor advanced, so the same arguments give the same model in any process.
        model_args: keyword arguments for a ``timm:``/``torchvision:`` constructor (``{"img_size": 64}``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _create(name, num_classes=num_classes, pretrained=pretrained, resolution=resolution, weights=weights,
                       bn_momentum=bn_momentum, model_args=parse_model_args(model_args))


def _build(entry: ModelEntry, name: str, model_args: ModelArgs) -> nn.Module:
    """``entry``'s architecture with ``model_args``; a constructor refusing them is one error naming them."""
    if not model_args:
        return entry.build(entry.cfg.num_classes)
    if not entry.takes_args:
        raise BespokeError(f"{name} takes no model arguments", "--model-args is for timm:<arch> and "
                                                                "torchvision:<arch> models")
    try:
        return entry.build(entry.cfg.num_classes, **model_args)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:160].rstrip(".") or type(exc).__name__
        given = ", ".join(f"{k}={v!r}" for k, v in model_args.items())
        raise BespokeError(f"{name} cannot be built with model arguments {given} ({reason})",
                           "see the architecture's constructor for its keyword arguments") from None


def _create(name: str, *, num_classes: int | None, pretrained: bool, resolution: int, weights: str | Path | None,
            bn_momentum: float | None, model_args: ModelArgs) -> nn.Module:
    entry = get_entry(name)
    state: dict[str, torch.Tensor] | None = None
    source = ""
    if weights is not None:
        state, source = load_state_dict(weights), str(weights)
    elif pretrained:
        if entry.pretrained_state is None:
            raise BespokeError(f"{name} has no offline pretrained weights",
                               "pass --weights FILE (.safetensors or .pth), or set `pretrained: false` (--config YAML) "
                               "for random init")
        state, source = entry.pretrained_state(), entry.cfg.source
    model = _build(entry, name, model_args)
    if state is not None:
        head_name, head = head_linear(model)
        state_classes = state.get(f"{head_name}.weight", head.weight).shape[0]
        if state_classes != head_classes(head):
            model = reset_head(model, state_classes)
        freeze_same_padding(model, resolution)
        apply_state_dict(model, state, source=source)
    else:
        freeze_same_padding(model, resolution)
    if num_classes is not None:
        reset_head(model, num_classes)
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    if entry.probe_input:
        check_input_size(model, name, resolution, entry.cfg.native_resolution)
    return model


def check_input_size(model: nn.Module, name: str, resolution: int, native: int) -> None:
    """Raise ``BespokeError`` when ``model`` cannot run on a ``resolution`` px image (one eval forward, batch 1)."""
    was_training = model.training  # a model fresh from its builder: every module has this same flag
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution))
    except (AssertionError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:160].rstrip(".") or type(exc).__name__
        raise BespokeError(f"{name} does not accept {resolution} px input ({reason})",
                           f"use its native resolution: --resolution {native}, or give the size as a model argument "
                           f"where the architecture takes one (timm ViTs: --model-args img_size={resolution})"
                           ) from None
    finally:
        model.train(was_training)
