"""Build a supernet from a pretrained network: the timm EfficientNet / MobileNetV3 families (EfficientNet-Lite,
EfficientNet-B0, MnasNet, timm MobileNetV2 / MobileNetV3) or torchvision MobileNetV2 / MobileNetV3 / MNASNet /
EfficientNet.

Conversion reads the network into a :class:`NetSpec` plus a state dict keyed like :class:`StaticNet` (so the
converted static net computes exactly what the source computes), then loads it into an :class:`ElasticNet` and
sorts every block's hidden channels by importance. Inverted residuals may carry a squeeze-excite; MobileNetV3's
pooled linear head layer is kept. Anything the elastic blocks cannot express (ghost modules, anti-aliasing,
dilation, biased convs, unknown activations) fails loudly, naming the module.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.supernet.elastic import ElasticNet
from bespoke.supernet.space import SearchSpace, SpaceOptions, default_space
from bespoke.supernet.specs import (
    ACTIVATIONS,
    GATES,
    BlockSpec,
    ConvSpec,
    LayerSpec,
    NetSpec,
    PooledFcSpec,
    SESpec,
    same_padding,
)
from bespoke.supernet.static import StaticNet

State = dict[str, torch.Tensor]
Layers = Iterator[tuple[str, "LayerSpec | BlockSpec | PooledFcSpec", State]]
_HINT = "the supernet engine supports inverted-residual networks with or without squeeze-excite: timm " \
        "EfficientNet / MnasNet / MobileNetV2 / MobileNetV3, torchvision MobileNetV2 / MobileNetV3 / MNASNet / " \
        "EfficientNet"


def _acts() -> dict[type[nn.Module], str | None]:
    from timm.layers import activations as timm_acts

    return {nn.Identity: None, nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", timm_acts.Swish: "silu",
            nn.Hardswish: "hardswish", timm_acts.HardSwish: "hardswish", nn.Sigmoid: "sigmoid",
            timm_acts.Sigmoid: "sigmoid", nn.Hardsigmoid: "hardsigmoid", timm_acts.HardSigmoid: "hardsigmoid"}


def _act_name(module: nn.Module, where: str, allowed: tuple[str, ...] = ACTIVATIONS) -> str | None:
    name = _acts().get(type(module), "unknown")
    if name is not None and name not in allowed:
        raise BespokeError(f"{where}: unsupported activation {type(module).__name__}", _HINT)
    return name


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


def _pointwise(conv: nn.Module, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight [out, in, 1, 1] and bias of a dense 1x1 conv acting on pooled features (zero bias if it has none)."""
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1):
        raise BespokeError(f"{where}: expected a dense 1x1 conv, found {conv}", _HINT)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    return conv.weight, bias


def _squeeze_excite(module: nn.Module, where: str, channels: int) -> tuple[SESpec, State]:
    """timm's ``SqueezeExcite`` or torchvision's ``SqueezeExcitation`` as a :class:`SESpec` and its weights."""
    from timm.models._efficientnet_blocks import SqueezeExcite
    from torchvision.ops import SqueezeExcitation

    if isinstance(module, SqueezeExcite):
        reduce, act, expand, gate = module.conv_reduce, module.act1, module.conv_expand, module.gate
    elif isinstance(module, SqueezeExcitation):
        reduce, act, expand, gate = module.fc1, module.activation, module.fc2, module.scale_activation
    else:
        raise BespokeError(f"{where}: squeeze-excite {type(module).__name__} is not supported", _HINT)
    rw, rb = _pointwise(reduce, f"{where}.reduce")
    ew, eb = _pointwise(expand, f"{where}.expand")
    if rw.shape[1] != channels or ew.shape[0] != channels:
        raise BespokeError(f"{where}: squeeze-excite of {rw.shape[1]} channels in a block of {channels}", _HINT)
    act_name = _act_name(act, f"{where}.act")
    if act_name is None:
        raise BespokeError(f"{where}: squeeze-excite without an activation is not supported", _HINT)
    spec = SESpec(channels, rw.shape[0], act_name, _act_name(gate, f"{where}.gate", GATES))  # type: ignore[arg-type]
    return spec, {"reduce.weight": rw, "reduce.bias": rb, "expand.weight": ew, "expand.bias": eb}


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


def _optional_se(module: nn.Module | None, where: str, channels: int) -> tuple[SESpec | None, State]:
    if module is None or isinstance(module, nn.Identity):
        return None, {}
    se, state = _squeeze_excite(module, where, channels)
    return se, _prefixed("se", state)


def _timm_layers(model: nn.Module, resolution: int, *, pooled_head: bool) -> Layers:
    """timm EfficientNet (``pooled_head=False``: conv_head + bn2 before pooling) or MobileNetV3 (its last block is
    the 1x1 head conv; ``conv_head`` acts on pooled features)."""
    from timm.models._efficientnet_blocks import ConvBnAct, DepthwiseSeparableConv, InvertedResidual

    size = resolution
    stem, st = _layer(model.conv_stem, model.bn1, _timm_bn_act(model.bn1), "conv_stem", size)
    yield "stem", stem, st
    size = stem.conv.out_size(size)
    last = (len(model.blocks) - 1, len(model.blocks[-1]) - 1)
    for si, stage in enumerate(model.blocks):
        for bi, blk in enumerate(stage):
            where = f"blocks.{si}.{bi}"
            if getattr(blk, "conv_s2d", None) is not None:
                raise BespokeError(f"{where}: space-to-depth blocks are not supported", _HINT)
            _check_identity(blk, ("aa", "drop_path"), where)
            if pooled_head and (si, bi) == last and isinstance(blk, ConvBnAct) and not blk.has_skip:
                head, hs = _layer(blk.conv, blk.bn1, _timm_bn_act(blk.bn1), f"{where}.conv", size)
                yield "head", head, hs
                continue
            if isinstance(blk, DepthwiseSeparableConv):
                expand = None
                dw, dws = _layer(blk.conv_dw, blk.bn1, _timm_bn_act(blk.bn1), f"{where}.conv_dw", size)
                se, ses = _optional_se(blk.se, f"{where}.se", dw.conv.out_ch)
                proj, prs = _layer(blk.conv_pw, blk.bn2, _timm_bn_act(blk.bn2), f"{where}.conv_pw",
                                   dw.conv.out_size(size))
                state = {**_prefixed("dw", dws), **ses, **_prefixed("project", prs)}
            elif isinstance(blk, InvertedResidual):
                expand, exs = _layer(blk.conv_pw, blk.bn1, _timm_bn_act(blk.bn1), f"{where}.conv_pw", size)
                dw, dws = _layer(blk.conv_dw, blk.bn2, _timm_bn_act(blk.bn2), f"{where}.conv_dw", size)
                se, ses = _optional_se(blk.se, f"{where}.se", dw.conv.out_ch)
                proj, prs = _layer(blk.conv_pwl, blk.bn3, _timm_bn_act(blk.bn3), f"{where}.conv_pwl",
                                   dw.conv.out_size(size))
                state = {**_prefixed("expand", exs), **_prefixed("dw", dws), **ses, **_prefixed("project", prs)}
            else:
                raise BespokeError(f"{where}: block type {type(blk).__name__} is not supported", _HINT)
            yield where, BlockSpec(expand, dw, proj, bool(blk.has_skip), se), state
            size = dw.conv.out_size(size)
    if pooled_head:
        _check_identity(model, ("norm_head",), "model")
        weight, bias = _pointwise(model.conv_head, "conv_head")
        fc = PooledFcSpec(weight.shape[0], _act_name(model.act2, "act2"))
        yield "fc", fc, {"linear.weight": weight.flatten(1), "linear.bias": bias}
    elif not isinstance(model.conv_head, nn.Identity):
        head, hs = _layer(model.conv_head, model.bn2, _timm_bn_act(model.bn2), "conv_head", size)
        yield "head", head, hs


def _cna(seq: nn.Module, where: str, size: int) -> tuple[LayerSpec, State]:
    """torchvision's Conv2dNormActivation: conv, BN and (unless it is linear) an activation."""
    if not isinstance(seq, nn.Sequential) or len(seq) not in (2, 3):
        raise BespokeError(f"{where}: expected conv-bn[-activation], found {type(seq).__name__}", _HINT)
    return _layer(seq[0], seq[1], seq[2] if len(seq) == 3 else nn.Identity(), where, size)


def _torchvision_layers(model: nn.Module, resolution: int) -> Layers:
    """torchvision MobileNetV2 / MobileNetV3 / EfficientNet: stem, inverted residuals, 1x1 head conv in
    ``features``."""
    from torchvision.models.efficientnet import MBConv
    from torchvision.models.mobilenetv2 import InvertedResidual as InvertedResidualV2
    from torchvision.models.mobilenetv3 import InvertedResidual as InvertedResidualV3
    from torchvision.ops import SqueezeExcitation

    feats = model.features
    size = resolution
    stem, st = _cna(feats[0], "features.0", size)
    yield "stem", stem, st
    size = stem.conv.out_size(size)
    body = []  # EfficientNet nests its blocks one stage deeper
    for i in range(1, len(feats) - 1):
        stage = feats[i]
        if isinstance(stage, nn.Sequential) and all(isinstance(b, MBConv) for b in stage):
            body += [(f"features.{i}.{j}", b) for j, b in enumerate(stage)]
        else:
            body.append((f"features.{i}", stage))
    for where, blk in body:
        if isinstance(blk, InvertedResidualV2):
            layers = list(blk.conv)
            if len(layers) < 3:
                raise BespokeError(f"{where}: expected [expand] -> depthwise -> projection", _HINT)
            layers[-2:] = [nn.Sequential(layers[-2], layers[-1])]  # projection conv + BN, linear
        elif isinstance(blk, InvertedResidualV3 | MBConv):  # stochastic depth (MBConv) is the identity in eval
            layers = list(blk.block)
        else:
            raise BespokeError(f"{where}: block type {type(blk).__name__} is not supported", _HINT)
        state: State = {}
        expand = None
        first = layers[0][0] if isinstance(layers[0], nn.Sequential) and len(layers[0]) else None
        if isinstance(first, nn.Conv2d) and first.groups == 1:
            expand, exs = _cna(layers.pop(0), f"{where}.expand", size)
            state.update(_prefixed("expand", exs))
        dw, dws = _cna(layers.pop(0), f"{where}.dw", size)
        se = None
        if layers and isinstance(layers[0], SqueezeExcitation):
            se, ses = _optional_se(layers.pop(0), f"{where}.se", dw.conv.out_ch)
            state.update(ses)
        if len(layers) != 1:
            raise BespokeError(f"{where}: expected [expand] -> depthwise -> [squeeze-excite] -> projection", _HINT)
        proj, prs = _cna(layers[0], f"{where}.project", dw.conv.out_size(size))
        state.update({**_prefixed("dw", dws), **_prefixed("project", prs)})
        yield where, BlockSpec(expand, dw, proj, bool(blk.use_res_connect), se), state
        size = dw.conv.out_size(size)
    head, hs = _cna(feats[-1], f"features.{len(feats) - 1}", size)
    yield "head", head, hs


def _torchvision_mnasnet_layers(model: nn.Module, resolution: int) -> Layers:
    """torchvision MNASNet: ``layers`` is a flat list: stem conv-BN-ReLU, a depthwise-separable conv, six stacks of
    inverted residuals, the 1x1 head conv-BN-ReLU."""
    from torchvision.models.mnasnet import _InvertedResidual

    flat = list(model.layers)
    if len(flat) != 17:
        raise BespokeError(f"MNASNet layers: expected 17 modules, found {len(flat)}", _HINT)
    size = resolution
    stem, st = _layer(*flat[0:3], "layers.0", size)
    yield "stem", stem, st
    size = stem.conv.out_size(size)
    dw, dws = _layer(*flat[3:6], "layers.3", size)
    proj, prs = _layer(flat[6], flat[7], nn.Identity(), "layers.6", size)
    yield "layers.3", BlockSpec(None, dw, proj, False), {**_prefixed("dw", dws), **_prefixed("project", prs)}
    for si in range(8, 14):
        for bi, blk in enumerate(flat[si]):
            where = f"layers.{si}.{bi}"
            if not isinstance(blk, _InvertedResidual) or len(blk.layers) != 8:
                raise BespokeError(f"{where}: block type {type(blk).__name__} is not supported", _HINT)
            ls = list(blk.layers)
            expand, exs = _layer(*ls[0:3], f"{where}.layers.0", size)
            dw, dws = _layer(*ls[3:6], f"{where}.layers.3", size)
            proj, prs = _layer(ls[6], ls[7], nn.Identity(), f"{where}.layers.6", dw.conv.out_size(size))
            state = {**_prefixed("expand", exs), **_prefixed("dw", dws), **_prefixed("project", prs)}
            yield where, BlockSpec(expand, dw, proj, bool(blk.apply_residual)), state
            size = dw.conv.out_size(size)
    head, hs = _layer(*flat[14:17], "layers.14", size)
    yield "head", head, hs


def _classifier_parts(model: nn.Module) -> tuple[Layers | None, nn.Module, float]:
    """The extra pooled layer (torchvision MobileNetV3), the classifier and the dropout of a torchvision model
    (MobileNetV2, MNASNet: Dropout -> Linear)."""
    from torchvision.models import MobileNetV3 as TvMobileNetV3

    cls = model.classifier
    if isinstance(model, TvMobileNetV3):
        if not (len(cls) == 4 and isinstance(cls[0], nn.Linear) and isinstance(cls[2], nn.Dropout)):
            raise BespokeError("MobileNetV3 classifier must be Linear -> activation -> Dropout -> Linear", _HINT)
        fc = PooledFcSpec(cls[0].out_features, _act_name(cls[1], "classifier.1"))
        return iter([("fc", fc, _prefixed("linear", cls[0].state_dict()))]), cls[3], float(cls[2].p)
    if not (len(cls) == 2 and isinstance(cls[0], nn.Dropout)):
        raise BespokeError(f"{type(model).__name__} classifier must be Dropout -> Linear", _HINT)
    return None, cls[1], float(cls[0].p)


def convert(model: nn.Module, resolution: int) -> tuple[NetSpec, State]:
    """The :class:`NetSpec` of ``model`` at ``resolution`` and its weights keyed like :class:`StaticNet`."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from torchvision.models import EfficientNet as TvEfficientNet
    from torchvision.models import MNASNet, MobileNetV2
    from torchvision.models import MobileNetV3 as TvMobileNetV3

    if isinstance(model, EfficientNet | MobileNetV3):
        if getattr(model.global_pool, "pool_type", "avg") != "avg":
            raise BespokeError(f"global pool {model.global_pool} is not supported", _HINT)
        layers = _timm_layers(model, resolution, pooled_head=isinstance(model, MobileNetV3))
        classifier, dropout = model.classifier, float(model.drop_rate)
    elif isinstance(model, MobileNetV2 | TvMobileNetV3 | MNASNet | TvEfficientNet):
        extra, classifier, dropout = _classifier_parts(model)
        layers = (_torchvision_mnasnet_layers if isinstance(model, MNASNet) else _torchvision_layers)(model, resolution)
        if extra is not None:
            layers = itertools.chain(layers, extra)
    else:
        raise BespokeError(f"cannot build a supernet from {type(model).__name__}{_unsupported_parts(model)}", _HINT)
    if not isinstance(classifier, nn.Linear):
        raise BespokeError(f"classifier must be nn.Linear, found {type(classifier).__name__}", _HINT)
    stem: LayerSpec | None = None
    head: LayerSpec | None = None
    fc: PooledFcSpec | None = None
    blocks: list[BlockSpec] = []
    state: State = {}
    for where, spec, layer_state in layers:
        if where == "stem":
            stem, prefix = spec, "stem"  # type: ignore[assignment]
        elif where == "head":
            head, prefix = spec, "head.conv"  # type: ignore[assignment]
        elif where == "fc":
            fc, prefix = spec, "head.fc"  # type: ignore[assignment]
        else:
            prefix = f"blocks.{len(blocks)}"
            blocks.append(spec)  # type: ignore[arg-type]
        state.update(_prefixed(prefix, layer_state))
    state.update(_prefixed("head.classifier", classifier.state_dict()))
    assert stem is not None
    spec = NetSpec(resolution, stem, tuple(blocks), head, classifier.out_features, dropout, fc)
    return spec, {k: v.detach().clone() for k, v in state.items()}


def _unsupported_parts(model: nn.Module) -> str:
    """': its <Module> (at <path>) ...' for the first module of a kind no elastic block can express, else ''."""
    known = {"GhostModule": "ghost modules (a primary conv plus cheap depthwise features, concatenated) have no "
                            "inverted-residual form", "GhostModuleV2": "ghost modules have no inverted-residual form"}
    for path, module in model.named_modules():
        why = known.get(type(module).__name__)
        if why is not None:
            return f": its {type(module).__name__} at {path}: {why}"
    return ""


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
