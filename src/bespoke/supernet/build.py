"""Build a supernet from a pretrained network: timm EfficientNet-family (EfficientNet-Lite, timm MobileNetV2…)
or torchvision MobileNetV2.

Conversion reads the network into a :class:`NetSpec` plus a state dict keyed like :class:`StaticNet` (so the
converted static net computes exactly what the source computes), then loads it into an :class:`ElasticNet` and
sorts every block's hidden channels by importance. Anything the elastic blocks cannot express (squeeze-excite,
anti-aliasing, dilation, biased convs, unknown activations) fails loudly, naming the module.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.supernet.elastic import ElasticNet
from bespoke.supernet.space import SearchSpace, SpaceOptions, default_space
from bespoke.supernet.specs import BlockSpec, ConvSpec, LayerSpec, NetSpec, same_padding
from bespoke.supernet.static import StaticNet

State = dict[str, torch.Tensor]
_ACTS: dict[type[nn.Module], str | None] = {nn.Identity: None, nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu",
                                            nn.Hardswish: "hardswish"}
_HINT = "the supernet engine supports inverted-residual networks without squeeze-excite (EfficientNet-Lite, " \
        "MobileNetV2)"


def _act_name(module: nn.Module, where: str) -> str | None:
    for cls, name in _ACTS.items():
        if type(module) is cls:
            return name
    raise BespokeError(f"{where}: unsupported activation {type(module).__name__}", _HINT)


def _conv_spec(conv: nn.Module, where: str, resolution_in: int) -> ConvSpec:
    from timm.layers import Conv2dSame

    from bespoke.zoo import StaticSameConv2d

    if not isinstance(conv, nn.Conv2d):
        raise BespokeError(f"{where}: expected a Conv2d, found {type(conv).__name__}", _HINT)
    k, s = conv.kernel_size[0], conv.stride[0]
    if conv.kernel_size != (k, k) or conv.stride != (s, s) or conv.dilation != (1, 1) or conv.bias is not None:
        raise BespokeError(f"{where}: only square, undilated, bias-free convs are supported ({conv})", _HINT)
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    if conv.groups != 1 and not depthwise:
        raise BespokeError(f"{where}: grouped convs are not supported ({conv})", _HINT)
    if isinstance(conv, StaticSameConv2d):
        before, after = same_padding(resolution_in, k, s)
        if tuple(conv.pad) != (before, after, before, after):
            raise BespokeError(f"{where}: static SAME padding {conv.pad} does not fit input size {resolution_in}",
                               "build the teacher at the supernet's largest resolution")
        mode = "tf_same"
    elif isinstance(conv, Conv2dSame):
        mode = "tf_same"
    elif conv.padding == (k // 2, k // 2):
        mode = "symmetric"
    else:
        raise BespokeError(f"{where}: padding {conv.padding} is neither SAME nor k//2", _HINT)
    return ConvSpec(conv.in_channels, conv.out_channels, k, s, depthwise, mode)


def _layer(conv: nn.Module, bn: nn.Module, act: nn.Module, where: str, size: int) -> tuple[LayerSpec, State]:
    if not isinstance(bn, nn.BatchNorm2d):
        raise BespokeError(f"{where}: expected BatchNorm2d after the conv, found {type(bn).__name__}", _HINT)
    spec = LayerSpec(_conv_spec(conv, where, size), _act_name(act, where), float(bn.eps))
    state = {"conv.weight": conv.weight}
    state.update({f"bn.{k}": v for k, v in bn.state_dict().items()})
    return spec, state


def _timm_bn_act(bn: nn.Module) -> nn.Module:
    """timm's BatchNormAct2d carries its activation (and an identity ``drop``) inside."""
    drop = getattr(bn, "drop", nn.Identity())
    if not isinstance(drop, nn.Identity):
        raise BespokeError(f"batch norm with dropout {drop} is not supported", _HINT)
    return getattr(bn, "act", nn.Identity())


def _check_identity(block: nn.Module, names: tuple[str, ...], where: str) -> None:
    for name in names:
        mod = getattr(block, name, None)
        if mod is not None and not isinstance(mod, nn.Identity):
            raise BespokeError(f"{where}.{name}: {type(mod).__name__} is not supported", _HINT)


def _prefixed(prefix: str, state: State) -> State:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _timm_layers(model: nn.Module, resolution: int) -> Iterator[tuple[str, LayerSpec | BlockSpec, State]]:
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    size = resolution
    stem, st = _layer(model.conv_stem, model.bn1, _timm_bn_act(model.bn1), "conv_stem", size)
    yield "stem", stem, st
    size = stem.conv.out_size(size)
    for si, stage in enumerate(model.blocks):
        for bi, blk in enumerate(stage):
            where = f"blocks.{si}.{bi}"
            if getattr(blk, "conv_s2d", None) is not None:
                raise BespokeError(f"{where}: space-to-depth blocks are not supported", _HINT)
            _check_identity(blk, ("se", "aa", "drop_path"), where)
            if isinstance(blk, DepthwiseSeparableConv):
                expand = None
                dw, dws = _layer(blk.conv_dw, blk.bn1, _timm_bn_act(blk.bn1), f"{where}.conv_dw", size)
                proj, prs = _layer(blk.conv_pw, blk.bn2, _timm_bn_act(blk.bn2), f"{where}.conv_pw",
                                   dw.conv.out_size(size))
                state = {**_prefixed("dw", dws), **_prefixed("project", prs)}
            elif isinstance(blk, InvertedResidual):
                expand, exs = _layer(blk.conv_pw, blk.bn1, _timm_bn_act(blk.bn1), f"{where}.conv_pw", size)
                dw, dws = _layer(blk.conv_dw, blk.bn2, _timm_bn_act(blk.bn2), f"{where}.conv_dw", size)
                proj, prs = _layer(blk.conv_pwl, blk.bn3, _timm_bn_act(blk.bn3), f"{where}.conv_pwl",
                                   dw.conv.out_size(size))
                state = {**_prefixed("expand", exs), **_prefixed("dw", dws), **_prefixed("project", prs)}
            else:
                raise BespokeError(f"{where}: block type {type(blk).__name__} is not supported", _HINT)
            yield where, BlockSpec(expand, dw, proj, bool(blk.has_skip)), state
            size = dw.conv.out_size(size)
    if isinstance(model.conv_head, nn.Identity):
        return
    head, hs = _layer(model.conv_head, model.bn2, _timm_bn_act(model.bn2), "conv_head", size)
    yield "head", head, hs


def _torchvision_layers(model: nn.Module, resolution: int) -> Iterator[tuple[str, LayerSpec | BlockSpec, State]]:
    from torchvision.models.mobilenetv2 import InvertedResidual

    def cna(seq: nn.Module, where: str, size: int) -> tuple[LayerSpec, State]:
        if len(seq) != 3:
            raise BespokeError(f"{where}: expected conv-bn-activation, found {seq}", _HINT)
        return _layer(seq[0], seq[1], seq[2], where, size)

    feats = model.features
    size = resolution
    stem, st = cna(feats[0], "features.0", size)
    yield "stem", stem, st
    size = stem.conv.out_size(size)
    for i in range(1, len(feats) - 1):
        blk, where = feats[i], f"features.{i}"
        if not isinstance(blk, InvertedResidual):
            raise BespokeError(f"{where}: block type {type(blk).__name__} is not supported", _HINT)
        layers = list(blk.conv)
        state: State = {}
        expand = None
        if len(layers) == 4:
            expand, exs = cna(layers.pop(0), f"{where}.conv.0", size)
            state.update(_prefixed("expand", exs))
        dw, dws = cna(layers[0], f"{where}.dw", size)
        proj, prs = _layer(layers[1], layers[2], nn.Identity(), f"{where}.project", dw.conv.out_size(size))
        state.update({**_prefixed("dw", dws), **_prefixed("project", prs)})
        yield where, BlockSpec(expand, dw, proj, bool(blk.use_res_connect)), state
        size = dw.conv.out_size(size)
    head, hs = cna(feats[-1], f"features.{len(feats) - 1}", size)
    yield "head", head, hs


def convert(model: nn.Module, resolution: int) -> tuple[NetSpec, State]:
    """The :class:`NetSpec` of ``model`` at ``resolution`` and its weights keyed like :class:`StaticNet`."""
    from timm.models.efficientnet import EfficientNet
    from torchvision.models import MobileNetV2

    if isinstance(model, EfficientNet):
        if getattr(model.global_pool, "pool_type", "avg") != "avg":
            raise BespokeError(f"global pool {model.global_pool} is not supported", _HINT)
        layers, classifier, dropout = _timm_layers(model, resolution), model.classifier, float(model.drop_rate)
    elif isinstance(model, MobileNetV2):
        cls = model.classifier
        if not (len(cls) == 2 and isinstance(cls[0], nn.Dropout)):
            raise BespokeError("MobileNetV2 classifier must be Dropout -> Linear", _HINT)
        layers, classifier, dropout = _torchvision_layers(model, resolution), cls[1], float(cls[0].p)
    else:
        raise BespokeError(f"cannot build a supernet from {type(model).__name__}", _HINT)
    if not isinstance(classifier, nn.Linear):
        raise BespokeError(f"classifier must be nn.Linear, found {type(classifier).__name__}", _HINT)
    stem: LayerSpec | None = None
    head: LayerSpec | None = None
    blocks: list[BlockSpec] = []
    state: State = {}
    for where, spec, layer_state in layers:
        if where == "stem":
            stem, prefix = spec, "stem"  # type: ignore[assignment]
        elif where == "head":
            head, prefix = spec, "head.conv"  # type: ignore[assignment]
        else:
            prefix = f"blocks.{len(blocks)}"
            blocks.append(spec)  # type: ignore[arg-type]
        state.update(_prefixed(prefix, layer_state))
    state.update(_prefixed("head.classifier", classifier.state_dict()))
    assert stem is not None
    spec = NetSpec(resolution, stem, tuple(blocks), head, classifier.out_features, dropout)
    return spec, {k: v.detach().clone() for k, v in state.items()}


def to_static(model: nn.Module, resolution: int) -> StaticNet:
    """``model`` rebuilt as a :class:`StaticNet` (same function, our module layout)."""
    spec, state = convert(model, resolution)
    net = StaticNet(spec)
    net.load_state_dict(state, strict=True)
    return net


def load_static_state(net: ElasticNet, state: State) -> None:
    """Load a :class:`StaticNet`-keyed state of the *largest* subnet into ``net`` (kernel transforms untouched)."""
    owners: dict[int, str] = {}
    index = 0
    for si, n in enumerate(net.space.stage_lengths):
        for bi in range(n):
            owners[index] = f"stages.{si}.{bi}"
            index += 1
    mapped = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            key = f"{owners[int(i)]}.{rest}"
        mapped[key] = value
    result = net.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if ".transforms." not in k]
    if missing or result.unexpected_keys:
        raise BespokeError(f"weights do not fit the supernet: missing {missing[:3]}, unexpected "
                           f"{result.unexpected_keys[:3]}", "the network and the search space disagree")


def build_supernet(model: nn.Module, resolution: int, *, space: SearchSpace | None = None,
                   options: SpaceOptions | None = None, sort_channels: bool = True) -> ElasticNet:
    """An :class:`ElasticNet` whose largest subnet is ``model`` at ``resolution`` (weights inherited).

    ``space`` defaults to :func:`default_space` with ``options``. ``sort_channels`` reorders hidden channels
    by importance so every narrower width keeps the most important ones (the function is unchanged).
    """
    spec, state = convert(model, resolution)
    space = space or default_space(spec, options)
    net = ElasticNet(spec, space)
    load_static_state(net, state)
    if sort_channels:
        net.sort_channels()
    return net.train(model.training)
