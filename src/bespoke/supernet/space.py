"""The search space — the one source of truth for what a subnet may be — and the typed subnet config.

A :class:`SearchSpace` lists, per stage, the allowed depths (a subnet keeps the first ``d`` blocks) and per block
the allowed depthwise kernel sizes and expansion ratios, plus the allowed input resolutions. The last value of
every choice list is the pretrained network's own, so the largest subnet is the pretrained model.

A :class:`SubnetConfig` holds one choice per *active* block (its depth is the number of blocks listed).
:meth:`SearchSpace.check` rejects anything outside the space with a message naming the offending value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bespoke.errors import BespokeError
from bespoke.supernet.specs import BlockSpec, ConvSpec, LayerSpec, NetSpec

_HINT = "see the supernet's search space (supernet.json) for the allowed values"


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never going below 90% of it (MobileNet/timm rule)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


@dataclass(frozen=True)
class BlockChoices:
    """Allowed depthwise kernel sizes and expansion ratios of one block position (ascending, max last)."""

    kernels: tuple[int, ...]
    expands: tuple[float, ...]


@dataclass(frozen=True)
class StageChoices:
    """Allowed depths of one stage (ascending, max last) and the choices of each of its block positions."""

    depths: tuple[int, ...]
    blocks: tuple[BlockChoices, ...]


@dataclass(frozen=True)
class BlockConfig:
    """The active kernel size and expansion ratio of one block."""

    kernel: int
    expand: float


@dataclass(frozen=True)
class SubnetConfig:
    """One subnet: input resolution and, per stage, the configs of its active (first ``depth``) blocks."""

    resolution: int
    stages: tuple[tuple[BlockConfig, ...], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"resolution": 64, "stages": [[{"kernel": 3, "expand": 6.0}, ...], ...]}``."""
        return {"resolution": self.resolution,
                "stages": [[{"kernel": b.kernel, "expand": b.expand} for b in stage] for stage in self.stages]}

    @classmethod
    def from_dict(cls, data: Any) -> SubnetConfig:
        """Parse the JSON form; unknown or missing keys and non-numeric values raise ``BespokeError``."""
        if not isinstance(data, dict) or set(data) != {"resolution", "stages"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise BespokeError(f"subnet config must have exactly the keys resolution, stages; got {keys}", _HINT)
        stages = data["stages"]
        if not isinstance(stages, list | tuple) or not all(isinstance(s, list | tuple) for s in stages):
            raise BespokeError("subnet config 'stages' must be a list of lists of blocks", _HINT)
        blocks = []
        for si, stage in enumerate(stages):
            row = []
            for bi, b in enumerate(stage):
                if not isinstance(b, dict) or set(b) != {"kernel", "expand"}:
                    got = sorted(b) if isinstance(b, dict) else repr(b)
                    raise BespokeError(f"stage {si} block {bi}: expected keys kernel, expand; got {got}", _HINT)
                row.append(BlockConfig(kernel=_as_int(b["kernel"], "kernel"), expand=_as_float(b["expand"])))
            blocks.append(tuple(row))
        return cls(resolution=_as_int(data["resolution"], "resolution"), stages=tuple(blocks))

    def key(self) -> str:
        """A compact canonical string (for caches and logs)."""
        stages = "|".join(",".join(f"{b.kernel}/{b.expand:g}" for b in s) for s in self.stages)
        return f"r{self.resolution}:{stages}"


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise BespokeError(f"subnet config: {what} must be an integer, got {value!r}", _HINT)
    return int(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BespokeError(f"subnet config: expand must be a number, got {value!r}", _HINT)
    return float(value)


@dataclass(frozen=True)
class SearchSpace:
    """Per-stage depth choices, per-block kernel and expansion choices, and input resolutions."""

    stages: tuple[StageChoices, ...]
    resolutions: tuple[int, ...]

    @property
    def stage_lengths(self) -> tuple[int, ...]:
        return tuple(len(s.blocks) for s in self.stages)

    def largest(self) -> SubnetConfig:
        """Every choice at its maximum: the pretrained network."""
        return SubnetConfig(max(self.resolutions), tuple(
            tuple(BlockConfig(b.kernels[-1], b.expands[-1]) for b in st.blocks[: st.depths[-1]])
            for st in self.stages))

    def smallest(self) -> SubnetConfig:
        """Every choice at its minimum."""
        return SubnetConfig(min(self.resolutions), tuple(
            tuple(BlockConfig(b.kernels[0], b.expands[0]) for b in st.blocks[: st.depths[0]])
            for st in self.stages))

    def sample(self, rng: np.random.Generator) -> SubnetConfig:
        """A uniformly random subnet (each choice drawn independently) from ``rng``."""
        stages = []
        for st in self.stages:
            depth = int(st.depths[rng.integers(len(st.depths))])
            stages.append(tuple(self.sample_block(st.blocks[i], rng) for i in range(depth)))
        return SubnetConfig(int(self.resolutions[rng.integers(len(self.resolutions))]), tuple(stages))

    @staticmethod
    def sample_block(choices: BlockChoices, rng: np.random.Generator) -> BlockConfig:
        return BlockConfig(int(choices.kernels[rng.integers(len(choices.kernels))]),
                           float(choices.expands[rng.integers(len(choices.expands))]))

    def check(self, cfg: SubnetConfig) -> SubnetConfig:
        """``cfg`` with expansion ratios snapped to the space's values; ``BespokeError`` if outside the space."""
        if not isinstance(cfg, SubnetConfig):
            raise BespokeError(f"expected a SubnetConfig, got {type(cfg).__name__}",
                               "build one with SubnetConfig.from_dict(...) or SearchSpace.sample(rng)")
        if cfg.resolution not in self.resolutions:
            raise BespokeError(f"resolution {cfg.resolution} is not in the search space {list(self.resolutions)}",
                               _HINT)
        if len(cfg.stages) != len(self.stages):
            raise BespokeError(f"subnet config has {len(cfg.stages)} stages, the supernet {len(self.stages)}",
                               _HINT)
        stages = []
        for si, (blocks, st) in enumerate(zip(cfg.stages, self.stages, strict=True)):
            if len(blocks) not in st.depths:
                raise BespokeError(f"stage {si}: depth {len(blocks)} not in {list(st.depths)}", _HINT)
            row = []
            for bi, (b, ch) in enumerate(zip(blocks, st.blocks, strict=False)):
                if b.kernel not in ch.kernels:
                    raise BespokeError(f"stage {si} block {bi}: kernel {b.kernel} not in {list(ch.kernels)}",
                                       _HINT)
                match = [e for e in ch.expands if math.isclose(e, b.expand, rel_tol=1e-6)]
                if not match:
                    raise BespokeError(f"stage {si} block {bi}: expand {b.expand:g} not in "
                                       f"{[float(e) for e in ch.expands]}", _HINT)
                row.append(BlockConfig(int(b.kernel), float(match[0])))
            stages.append(tuple(row))
        return SubnetConfig(int(cfg.resolution), tuple(stages))

    def to_dict(self) -> dict[str, Any]:
        return {"resolutions": list(self.resolutions),
                "stages": [{"depths": list(st.depths),
                            "blocks": [{"kernels": list(b.kernels), "expands": list(b.expands)} for b in st.blocks]}
                           for st in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        try:
            stages = tuple(
                StageChoices(tuple(int(d) for d in st["depths"]),
                             tuple(BlockChoices(tuple(int(k) for k in b["kernels"]),
                                                tuple(float(e) for e in b["expands"])) for b in st["blocks"]))
                for st in data["stages"])
            return cls(stages, tuple(int(r) for r in data["resolutions"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BespokeError(f"search space JSON is damaged ({type(exc).__name__}: {exc})",
                               "re-run bespoke supernet train") from None


class SpaceOptions(BaseModel):
    """How the default search space is derived from a pretrained network. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernels: tuple[int, ...] = Field((3, 5), description="depthwise kernel choices (capped at each block's own)")
    expands: tuple[float, ...] = Field((3.0, 4.0, 6.0), description="expansion ratios (capped at each block's own)")
    resolutions: tuple[int, ...] | None = Field(None, description="input sizes; default 3/4, 7/8, 1 x teacher's")
    min_depth_fraction: float = Field(0.5, gt=0, le=1, description="a stage keeps >= ceil(f * its blocks)")


def stage_lengths(blocks: Sequence[BlockSpec]) -> list[int]:
    """Split blocks into stages: a block without residual (stride or width change) starts a new stage."""
    lengths: list[int] = []
    for block in blocks:
        if block.skip and lengths:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


def max_expand(block: BlockSpec) -> float:
    """The pretrained expansion ratio of a block (1.0 without an expansion conv)."""
    return 1.0 if block.expand is None else round(block.hidden / block.in_ch, 4)


def default_space(spec: NetSpec, options: SpaceOptions | None = None) -> SearchSpace:
    """The search space derived from the pretrained network ``spec`` (see :class:`SpaceOptions`)."""
    opts = options or SpaceOptions()
    res = spec.resolution
    resolutions = opts.resolutions or tuple(sorted({max(8, round(res * f / 4) * 4) for f in (0.75, 0.875)} | {res}))
    if res not in resolutions or any(r > res for r in resolutions):
        raise BespokeError(f"resolutions {list(resolutions)} must include the teacher's {res} as the largest",
                           "the largest subnet is the pretrained network at its own resolution")
    stages, start = [], 0
    for n in stage_lengths(spec.blocks):
        blocks = spec.blocks[start:start + n]
        start += n
        min_depth = min(n, max(1, math.ceil(opts.min_depth_fraction * n)))
        choices = []
        for b in blocks:
            kernels = tuple(sorted({k for k in opts.kernels if k <= b.kernel} | {b.kernel}))
            top = max_expand(b)
            expands = (top,) if b.expand is None else tuple(sorted({float(e) for e in opts.expands if e < top}
                                                                   | {top}))
            choices.append(BlockChoices(kernels, expands))
        stages.append(StageChoices(tuple(range(min_depth, n + 1)), tuple(choices)))
    return SearchSpace(tuple(stages), tuple(sorted(int(r) for r in resolutions)))


def hidden_channels(block: BlockSpec, expand: float) -> int:
    """Hidden width of ``block`` at expansion ``expand`` (its own width at its pretrained ratio)."""
    if block.expand is None or math.isclose(expand, max_expand(block), rel_tol=1e-6):
        return block.hidden
    return min(block.hidden, make_divisible(block.in_ch * expand))


def block_variant(block: BlockSpec, cfg: BlockConfig) -> BlockSpec:
    """``block`` with the kernel size and hidden width of ``cfg``."""
    hidden = hidden_channels(block, cfg.expand)
    dw = block.dw.conv
    new_dw = LayerSpec(ConvSpec(hidden, hidden, cfg.kernel, dw.stride, True, dw.pad_mode), block.dw.act,
                       block.dw.bn_eps)
    p = block.project
    new_project = LayerSpec(ConvSpec(hidden, p.conv.out_ch, 1, 1, False, p.conv.pad_mode), p.act, p.bn_eps)
    new_expand = None
    if block.expand is not None:
        e = block.expand
        new_expand = LayerSpec(ConvSpec(e.conv.in_ch, hidden, 1, 1, False, e.conv.pad_mode), e.act, e.bn_eps)
    new_se = None if block.se is None else block.se.scaled(hidden)
    return BlockSpec(new_expand, new_dw, new_project, block.skip, new_se)


def subnet_spec(max_spec: NetSpec, space: SearchSpace, cfg: SubnetConfig) -> NetSpec:
    """The static architecture of subnet ``cfg`` of the supernet whose largest network is ``max_spec``."""
    cfg = space.check(cfg)
    blocks, start = [], 0
    for st, chosen in zip(space.stages, cfg.stages, strict=True):
        for i, bcfg in enumerate(chosen):
            blocks.append(block_variant(max_spec.blocks[start + i], bcfg))
        start += len(st.blocks)
    return NetSpec(cfg.resolution, max_spec.stem, tuple(blocks), max_spec.head, max_spec.num_classes,
                   max_spec.dropout, max_spec.pooled_fc)
