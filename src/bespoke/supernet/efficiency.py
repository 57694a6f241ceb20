"""The supernet's view of the shared cost table (:mod:`bespoke.cost`): which parts a subnet is made of.

A subnet is stem + its active blocks + head. Each part's cost depends only on its shape config and input size
(``BlockSpec.key(size)``), so every part any subnet can contain is enumerated from the search space and measured
once per measurement setting: targets that differ only in their budget share one table. The largest subnet is the
table's reference model (the base of relative budgets); whole subnets spread over the predicted cost range, the
small ones near low budgets included, are measured against it as delivered models are and calibrate the table's
line, and selection adds every subnet it delivers. Tables live in ``SUPERNET/latency/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bespoke.cost import CostTable, Source, cache_key, grow_table, part_signature, save_table, spread_by_cost
from bespoke.delivery import Reference, measure_against
from bespoke.supernet.genome import GenomeLayout
from bespoke.supernet.space import BlockConfig, SearchSpace, SubnetConfig, block_variant, subnet_spec
from bespoke.supernet.specs import NetSpec
from bespoke.supernet.static import ConvBNAct, Head, MBConv, StaticNet
from bespoke.targets import Part, Target, export_parts_for_device, get_runtime
from bespoke.train import cpu_seconds

PosKey = tuple[int, int, float, int]  # block position, kernel, expand, resolution

#: Random subnets the calibration subnets are chosen from (spread over their predicted cost).
CALIBRATION_POOL = 256


@dataclass
class SubnetParts:
    """Every distinct part of every subnet (built only when measured) and which part each place uses."""

    parts: dict[str, Part]
    positions: dict[PosKey, str]
    stems: dict[int, str]
    heads: dict[int, str]

    def signatures(self, cfg: SubnetConfig, stage_lengths: Sequence[int]) -> list[str]:
        """The parts of ``cfg`` (valid for the space)."""
        r = cfg.resolution
        keys = [self.stems[r], self.heads[r]]
        start = 0
        for n, blocks in zip(stage_lengths, cfg.stages, strict=True):
            keys += [self.positions[(start + i, b.kernel, b.expand, r)] for i, b in enumerate(blocks)]
            start += n
        return keys


def enumerate_parts(max_spec: NetSpec, space: SearchSpace, batch: int) -> SubnetParts:
    """The parts of every subnet of ``space``: stem and head per resolution, every (block position, kernel,
    expand) variant per resolution; keyed by :func:`bespoke.cost.part_signature`."""
    out = SubnetParts({}, {}, {}, {})
    choices = [b for st in space.stages for b in st.blocks]
    for res in space.resolutions:
        spec = NetSpec(res, max_spec.stem, max_spec.blocks, max_spec.head, max_spec.num_classes, max_spec.dropout,
                       max_spec.pooled_fc)
        sizes = spec.block_sizes()
        shape = (batch, 3, res, res)
        out.stems[res] = part_signature("stem", shape)
        out.parts.setdefault(out.stems[res], (lambda spec=spec, res=res: ConvBNAct(spec.stem, res), shape))
        for pos, (block, ch) in enumerate(zip(max_spec.blocks, choices, strict=True)):
            for k in ch.kernels:
                for e in ch.expands:
                    variant = block_variant(block, BlockConfig(k, e))
                    shape = (batch, variant.in_ch, sizes[pos], sizes[pos])
                    key = part_signature(variant.key(sizes[pos]), shape)
                    out.parts.setdefault(key, (lambda v=variant, s=sizes[pos]: MBConv(v, s), shape))
                    out.positions[(pos, k, e, res)] = key
        head_in = spec.head.conv.in_ch if spec.head is not None else spec.num_features
        shape = (batch, head_in, sizes[-1], sizes[-1])
        out.heads[res] = part_signature(f"head_i{spec.blocks[-1].out_ch if spec.blocks else spec.stem.conv.out_ch}",
                                        shape)
        out.parts.setdefault(out.heads[res], (lambda spec=spec, s=sizes[-1]: Head(spec, s), shape))
    return out


@dataclass
class SubnetCosts:
    """A supernet's cost table on one target and the signatures of its parts."""

    table: CostTable
    layout: SubnetParts
    stage_lengths: list[int]
    directory: Path
    signature: str  # the table's cache key: cards name the table their prediction came from

    @property
    def reference(self) -> float | None:
        """The largest subnet measured like a delivered model (quantized on an int8 target): the table's scale."""
        return self.table.reference

    @property
    def budget_base(self) -> float | None:
        """What relative budgets multiply: the largest subnet in fp32 on the table's scale."""
        return self.table.budget_base

    @property
    def unit(self) -> str:
        return self.table.unit

    @property
    def info(self) -> dict[str, Any]:
        return {"runtime": self.table.settings.get("runtime"), "n_parts": len(self.table.parts),
                "cpu_s": round(self.table.cost_cpu_s, 1), "loo_max_abs": self.table.loo.max_abs,
                "line": list(self.table.line)}

    def signatures(self, cfg: SubnetConfig) -> list[str]:
        return self.layout.signatures(cfg, self.stage_lengths)

    def raw(self, cfg: SubnetConfig) -> float:
        """Combined part costs of ``cfg`` (before calibration)."""
        return self.table.raw(self.signatures(cfg))

    def predict(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        return np.array([self.table.predict(self.signatures(c)) for c in cfgs])

    def add_point(self, cfg: SubnetConfig, measured: float, source: Source = "delivered") -> None:
        """Record a subnet measured whole on the table's scale as a calibration point and save the table."""
        self.table.add_point(cfg.key(), self.signatures(cfg), measured, source)
        save_table(self.directory, self.table)

    def genome_cost(self, space: SearchSpace) -> Callable[[np.ndarray], np.ndarray]:
        """A vectorised predictor over genome arrays (same numbers as :meth:`predict`)."""
        layout = GenomeLayout(space)
        parts = self.table.parts
        n_k = max(len(b.kernels) for b in layout.blocks)
        n_e = max(len(b.expands) for b in layout.blocks)
        blocks = np.zeros((layout.n_blocks, n_k, n_e, len(space.resolutions)))
        base = np.zeros((2, len(space.resolutions)))
        for ri, r in enumerate(space.resolutions):
            base[:, ri] = parts[self.layout.stems[r]], parts[self.layout.heads[r]]
            for b, ch in enumerate(layout.blocks):
                for ki, k in enumerate(ch.kernels):
                    for ei, e in enumerate(ch.expands):
                        blocks[b, ki, ei, ri] = parts[self.layout.positions[(b, k, e, r)]]
        index = np.arange(layout.n_blocks)[None, :]
        combine_max = self.table.aggregate == "max"
        whole = self.table.whole

        def cost(genomes: np.ndarray) -> np.ndarray:
            res = genomes[:, 0]
            per = blocks[index, layout.kernels(genomes), layout.expands(genomes), res[:, None]]
            per = per * layout.active(genomes)
            raw = np.maximum(base[:, res].max(0), per.max(1)) if combine_max else base[:, res].sum(0) + per.sum(1)
            return np.asarray(whole(raw))

        return cost


def _device_hint(target: Target, cache_dir: Path) -> Callable[[Mapping[str, Part]], str]:
    """Exports the parts a board's table lacks for profiling there, and says so."""
    def hint(missing: Mapping[str, Part]) -> str:
        out = cache_dir / f"parts-{target.name}"
        export_parts_for_device({k: (build(), shape) for k, (build, shape) in missing.items()}, out,
                                threads=target.threads, batch=target.batch, repeats=target.repeats)
        return f"profile {out} on the device (see {out}/README.txt) and merge the rows into the table"
    return hint


def build_cost_table(net_spec: NetSpec, space: SearchSpace, target: Target, cache_dir: Path, *,
                     calibration_subnets: int = 10, seed: int = 0,
                     extract: Callable[[SubnetConfig], nn.Module] | None = None) -> SubnetCosts:
    """The cost table of ``target`` (cached in ``cache_dir``; parts measured once per measurement setting, then
    ``calibration_subnets`` whole subnets measured against the largest one, where the target can run them).

    ``extract(cfg) -> nn.Module`` builds a whole subnet (default: a randomly initialised :class:`StaticNet`;
    latency does not depend on weight values).
    """
    build = extract or (lambda c: StaticNet(subnet_spec(net_spec, space, c)))
    layout = enumerate_parts(net_spec, space, target.batch)
    largest = space.largest()
    reference = build(largest)
    directory = Path(cache_dir)
    table = grow_table(directory, target, layout.parts, reference=reference, resolution=largest.resolution,
                       reference_key=largest.key(), reference_parts=layout.signatures(largest, space.stage_lengths),
                       device_hint=_device_hint(target, directory))
    costs = SubnetCosts(table, layout, list(space.stage_lengths), directory, cache_key(target))
    if get_runtime(target.runtime).measures_whole:
        _calibrate(costs, space, target, calibration_subnets, seed, build, Reference(reference, largest.resolution,
                                                                                     costs.table.reference))
    return costs


def calibration_subnets(costs: SubnetCosts, space: SearchSpace, count: int, seed: int) -> list[SubnetConfig]:
    """``count`` subnets spread evenly over the predicted raw cost from the smallest subnet up (seeded)."""
    rng = np.random.default_rng([seed, 104729])
    pool = [space.smallest(), *(space.sample(rng) for _ in range(CALIBRATION_POOL))]
    unique = list({c.key(): c for c in pool if c != space.largest()}.values())
    return [unique[i] for i in spread_by_cost([costs.raw(c) for c in unique], count)]


def _calibrate(costs: SubnetCosts, space: SearchSpace, target: Target, count: int, seed: int,
               build: Callable[[SubnetConfig], nn.Module], reference: Reference) -> None:
    """Measure the calibration subnets the table lacks, each against the largest one as a delivered model is."""
    have = {p.key for p in costs.table.calibration}
    todo = [c for c in calibration_subnets(costs, space, count, seed) if c.key() not in have]
    for cfg in todo:
        cpu0 = cpu_seconds()
        m, _ = measure_against(build(cfg), reference, target, cfg.resolution)
        costs.table.cost_cpu_s += cpu_seconds() - cpu0
        costs.add_point(cfg, m.value, "calibration")
