"""Architecture specs: the plain data that describes a (sub)network of the inverted-residual family.

One :class:`NetSpec` describes a whole classifier: stem conv, a list of MBConv blocks (each with an optional
squeeze-excite), an optional 1x1 head conv, global pooling, an optional pooled linear layer (MobileNetV3's), dropout
and a linear classifier. The same spec type describes the supernet at its largest (the
pretrained network) and every extracted subnet; a spec rebuilds a plain module (:mod:`bespoke.supernet.static`)
or an elastic one (:mod:`bespoke.supernet.elastic`). Specs are frozen dataclasses with strict JSON round trips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bespoke.errors import BespokeError

PadMode = Literal["tf_same", "symmetric"]
PAD_MODES: tuple[str, ...] = get_args(PadMode)
ACTIVATIONS: tuple[str, ...] = ("relu", "relu6", "silu", "hardswish")
GATES: tuple[str, ...] = ("sigmoid", "hardsigmoid")


def _check_keys(data: Any, cls: type, required: set[str], optional: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BespokeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}",
                           "the architecture JSON is damaged; re-export the model")
    optional = optional or set()
    unknown = sorted(set(data) - required - optional)
    missing = sorted(required - set(data))
    if unknown or missing:
        raise BespokeError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing}",
                           "the architecture JSON does not match this version of bespoke")
    return data


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) along one axis of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class ConvSpec:
    """A bias-free 2-D convolution: dense (groups=1) or depthwise; odd square kernel."""

    in_ch: int
    out_ch: int
    kernel: int
    stride: int = 1
    depthwise: bool = False
    pad_mode: PadMode = "symmetric"

    def __post_init__(self) -> None:
        if self.kernel % 2 != 1 or self.kernel < 1:
            raise BespokeError(f"kernel size must be odd, got {self.kernel}", "only odd square kernels are elastic")
        if self.pad_mode not in PAD_MODES:
            raise BespokeError(f"unknown pad mode {self.pad_mode!r}", f"one of {', '.join(PAD_MODES)}")
        if self.depthwise and self.in_ch != self.out_ch:
            raise BespokeError(f"depthwise conv needs in_ch == out_ch, got {self.in_ch} -> {self.out_ch}")

    def out_size(self, size: int) -> int:
        """Output spatial size for input ``size`` (odd kernels: ceil(size / stride) in both pad modes)."""
        return -(-size // self.stride)

    def pads(self, size: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding for a square input of ``size``."""
        if self.pad_mode == "symmetric":
            p = self.kernel // 2
            return (p, p, p, p)
        before, after = same_padding(size, self.kernel, self.stride)
        return (before, after, before, after)

    @property
    def groups(self) -> int:
        return self.in_ch if self.depthwise else 1

    def to_dict(self) -> dict[str, Any]:
        return {"in_ch": self.in_ch, "out_ch": self.out_ch, "kernel": self.kernel, "stride": self.stride,
                "depthwise": self.depthwise, "pad_mode": self.pad_mode}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConvSpec:
        d = _check_keys(data, cls, {"in_ch", "out_ch", "kernel", "stride", "depthwise", "pad_mode"})
        return cls(int(d["in_ch"]), int(d["out_ch"]), int(d["kernel"]), int(d["stride"]), bool(d["depthwise"]),
                   d["pad_mode"])


@dataclass(frozen=True)
class LayerSpec:
    """Conv -> BatchNorm -> activation (``act=None``: linear, as in the projection of an MBConv)."""

    conv: ConvSpec
    act: str | None
    bn_eps: float

    def __post_init__(self) -> None:
        _check_act(self.act, ACTIVATIONS)

    def to_dict(self) -> dict[str, Any]:
        return {"conv": self.conv.to_dict(), "act": self.act, "bn_eps": self.bn_eps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerSpec:
        d = _check_keys(data, cls, {"conv", "act", "bn_eps"})
        return cls(ConvSpec.from_dict(d["conv"]), d["act"], float(d["bn_eps"]))


def _check_act(act: str | None, allowed: tuple[str, ...]) -> None:
    if act is not None and act not in allowed:
        raise BespokeError(f"unsupported activation {act!r}", f"one of {', '.join(allowed)}")


@dataclass(frozen=True)
class SESpec:
    """Squeeze-excite: mean pool -> 1x1 conv to ``reduced`` (biased) -> act -> 1x1 conv back (biased) -> gate."""

    channels: int
    reduced: int
    act: str
    gate: str

    def __post_init__(self) -> None:
        if not 0 < self.reduced or not 0 < self.channels:
            raise BespokeError(f"squeeze-excite widths must be positive, got {self.channels} -> {self.reduced}")
        _check_act(self.act, ACTIVATIONS)
        _check_act(self.gate, GATES)

    def scaled(self, channels: int) -> SESpec:
        """This squeeze-excite gating ``channels`` instead: the reduced width follows in proportion (>= 1)."""
        if channels == self.channels:
            return self
        return SESpec(channels, max(1, round(self.reduced * channels / self.channels)), self.act, self.gate)

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "reduced": self.reduced, "act": self.act, "gate": self.gate}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SESpec:
        d = _check_keys(data, cls, {"channels", "reduced", "act", "gate"})
        return cls(int(d["channels"]), int(d["reduced"]), d["act"], d["gate"])


@dataclass(frozen=True)
class BlockSpec:
    """Inverted residual: [1x1 expand] -> depthwise kxk -> [squeeze-excite] -> 1x1 projection, residual when
    ``skip``."""

    expand: LayerSpec | None
    dw: LayerSpec
    project: LayerSpec
    skip: bool
    se: SESpec | None = None

    def __post_init__(self) -> None:
        hidden = self.dw.conv.in_ch
        if not self.dw.conv.depthwise or self.project.conv.in_ch != hidden:
            raise BespokeError("block spec: the depthwise conv and the projection disagree on hidden channels")
        if self.se is not None and self.se.channels != hidden:
            raise BespokeError("block spec: the squeeze-excite and the depthwise conv disagree on hidden channels")
        if self.expand is not None and self.expand.conv.out_ch != hidden:
            raise BespokeError("block spec: the expansion and the depthwise conv disagree on hidden channels")
        if self.skip and (self.stride != 1 or self.in_ch != self.out_ch):
            raise BespokeError("block spec: a residual needs stride 1 and in_ch == out_ch")

    @property
    def in_ch(self) -> int:
        return self.expand.conv.in_ch if self.expand is not None else self.dw.conv.in_ch

    @property
    def hidden(self) -> int:
        return self.dw.conv.in_ch

    @property
    def out_ch(self) -> int:
        return self.project.conv.out_ch

    @property
    def kernel(self) -> int:
        return self.dw.conv.kernel

    @property
    def stride(self) -> int:
        return self.dw.conv.stride

    def key(self, size: int) -> str:
        """Shape key of this block at input ``size`` (everything its latency depends on)."""
        e = "x" if self.expand is None else "e"
        pads = "" if self.dw.conv.pad_mode == "symmetric" else "t"
        se = "" if self.se is None else f"_se{self.se.reduced}{self.se.act}{self.se.gate}"
        return (f"mb{e}{pads}_i{self.in_ch}_h{self.hidden}_o{self.out_ch}_k{self.kernel}_s{self.stride}"
                f"_r{int(self.skip)}_{self.dw.act}{se}@{size}")

    def to_dict(self) -> dict[str, Any]:
        out = {"expand": None if self.expand is None else self.expand.to_dict(), "dw": self.dw.to_dict(),
               "project": self.project.to_dict(), "skip": self.skip}
        if self.se is not None:  # written only when present: SE-free specs keep their earlier JSON
            out["se"] = self.se.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockSpec:
        d = _check_keys(data, cls, {"expand", "dw", "project", "skip"}, {"se"})
        expand = None if d["expand"] is None else LayerSpec.from_dict(d["expand"])
        se = None if d.get("se") is None else SESpec.from_dict(d["se"])
        return cls(expand, LayerSpec.from_dict(d["dw"]), LayerSpec.from_dict(d["project"]), bool(d["skip"]), se)


@dataclass(frozen=True)
class PooledFcSpec:
    """A biased linear layer and activation between global pooling and the classifier (MobileNetV3's head)."""

    features: int
    act: str | None

    def __post_init__(self) -> None:
        if self.features < 1:
            raise BespokeError(f"pooled linear layer needs >= 1 features, got {self.features}")
        _check_act(self.act, ACTIVATIONS)

    def to_dict(self) -> dict[str, Any]:
        return {"features": self.features, "act": self.act}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PooledFcSpec:
        d = _check_keys(data, cls, {"features", "act"})
        return cls(int(d["features"]), d["act"])


@dataclass(frozen=True)
class NetSpec:
    """A whole classifier: stem, blocks, optional head conv, global average pool, optional pooled linear layer,
    dropout, linear classifier."""

    resolution: int
    stem: LayerSpec
    blocks: tuple[BlockSpec, ...]
    head: LayerSpec | None
    num_classes: int
    dropout: float = 0.0
    pooled_fc: PooledFcSpec | None = None

    def __post_init__(self) -> None:
        ch = self.stem.conv.out_ch
        for i, block in enumerate(self.blocks):
            if block.in_ch != ch:
                raise BespokeError(f"net spec: block {i} expects {block.in_ch} channels, gets {ch}")
            ch = block.out_ch
        if self.head is not None and self.head.conv.in_ch != ch:
            raise BespokeError(f"net spec: head expects {self.head.conv.in_ch} channels, gets {ch}")

    @property
    def num_features(self) -> int:
        """Channels entering the global pool."""
        if self.head is not None:
            return self.head.conv.out_ch
        return self.blocks[-1].out_ch if self.blocks else self.stem.conv.out_ch

    @property
    def classifier_in(self) -> int:
        """Features entering the classifier."""
        return self.num_features if self.pooled_fc is None else self.pooled_fc.features

    def block_sizes(self) -> list[int]:
        """Input spatial size of every block (then of the head, last) at ``resolution``."""
        size = self.stem.conv.out_size(self.resolution)
        sizes = []
        for block in self.blocks:
            sizes.append(size)
            size = block.dw.conv.out_size(size)
        return [*sizes, size]

    def to_dict(self) -> dict[str, Any]:
        out = {"resolution": self.resolution, "stem": self.stem.to_dict(),
               "blocks": [b.to_dict() for b in self.blocks],
               "head": None if self.head is None else self.head.to_dict(),
               "num_classes": self.num_classes, "dropout": self.dropout}
        if self.pooled_fc is not None:
            out["pooled_fc"] = self.pooled_fc.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetSpec:
        d = _check_keys(data, cls, {"resolution", "stem", "blocks", "head", "num_classes", "dropout"},
                        {"pooled_fc"})
        return cls(int(d["resolution"]), LayerSpec.from_dict(d["stem"]),
                   tuple(BlockSpec.from_dict(b) for b in d["blocks"]),
                   None if d["head"] is None else LayerSpec.from_dict(d["head"]), int(d["num_classes"]),
                   float(d["dropout"]), None if d.get("pooled_fc") is None else PooledFcSpec.from_dict(d["pooled_fc"]))
