"""Cost tables per target: every part a subnet can be made of, measured once, summed to predict a subnet.

A subnet is stem + its active blocks + head. Each part's cost depends only on its shape config and input size
(``BlockSpec.key(size)``), so every part any subnet can contain is enumerated from the search space and
measured once per *measurement setting* (runtime, threads, batch, optimisation level, repeats): targets that
differ only in their budget share one table. The prediction ``scale * sum(parts) + offset`` is calibrated by
least squares against a few whole subnets measured with the target's own protocol (``bespoke.targets``; on
onnxruntime each is timed in alternation with the largest subnet and put on its scale, as the delivered model is
after export), which also absorbs the per-run overhead each part's timing includes. The largest subnet's
whole-model value is the reference of relative budgets. Tables are cached as JSON in ``SUPERNET/latency/``.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bespoke.errors import BespokeError
from bespoke.supernet.genome import GenomeLayout
from bespoke.supernet.space import BlockConfig, SearchSpace, SubnetConfig, block_variant, subnet_spec
from bespoke.supernet.specs import NetSpec
from bespoke.supernet.static import ConvBNAct, Head, MBConv, StaticNet
from bespoke.targets import (
    TableLookup,
    Target,
    export_onnx_bytes,
    export_parts_for_device,
    measure,
    measure_paired,
    measure_shape,
    part_key,
)
from bespoke.targets.measure import image_shape
from bespoke.train import cpu_seconds
from bespoke.utils.atomic import write_json
from bespoke.utils.progress import make_progress

Part = tuple[str, nn.Module, tuple[int, ...]]  # key, module, input shape
PosKey = tuple[int, int, float, int]  # block position, kernel, expand, resolution


def _signature(target: Target) -> str:
    settings = {"runtime": target.runtime, "threads": target.threads, "batch": target.batch,
                "opt_level": target.opt_level, "precision": target.precision, "warmup": target.warmup,
                "repeats": target.repeats}
    if target.table is not None:
        path = Path(target.table)
        settings["table"] = [str(path.resolve()), path.stat().st_mtime_ns if path.exists() else 0]
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return f"{target.runtime}-t{target.threads}-b{target.batch}-{digest}"


def enumerate_parts(max_spec: NetSpec, space: SearchSpace, batch: int
                    ) -> tuple[list[Part], dict[PosKey, str], dict[str, str]]:
    """Every distinct part of every subnet, which part each (block position, kernel, expand, res) uses, and the
    head part of each resolution."""
    parts: dict[str, Part] = {}
    positions: dict[PosKey, str] = {}
    heads: dict[str, str] = {}
    choices = [b for st in space.stages for b in st.blocks]
    for res in space.resolutions:
        spec = NetSpec(res, max_spec.stem, max_spec.blocks, max_spec.head, max_spec.num_classes, max_spec.dropout,
                       max_spec.pooled_fc)
        sizes = spec.block_sizes()
        stem_key = f"stem@{res}"
        parts.setdefault(stem_key, (stem_key, ConvBNAct(spec.stem, res), (batch, 3, res, res)))
        for pos, (block, ch) in enumerate(zip(max_spec.blocks, choices, strict=True)):
            for k in ch.kernels:
                for e in ch.expands:
                    variant = block_variant(block, BlockConfig(k, e))
                    key = variant.key(sizes[pos])
                    shape = (batch, variant.in_ch, sizes[pos], sizes[pos])
                    parts.setdefault(key, (key, MBConv(variant, sizes[pos]), shape))
                    positions[(pos, k, e, res)] = key
        head_key = f"head_i{spec.blocks[-1].out_ch if spec.blocks else spec.stem.conv.out_ch}@{sizes[-1]}"
        head_in = spec.head.conv.in_ch if spec.head is not None else spec.num_features
        parts.setdefault(head_key, (head_key, Head(spec, sizes[-1]), (batch, head_in, sizes[-1], sizes[-1])))
        heads[str(res)] = head_key
    return list(parts.values()), positions, heads


def _measure_part(module: nn.Module, shape: tuple[int, ...], target: Target) -> float:
    """One part's cost with the target's protocol (ms for latency runtimes, a count otherwise)."""
    return measure_shape(module.eval(), target, shape).value


@dataclass
class CostTable:
    """Per-part costs of one measurement setting and the calibration that turns their sum into a prediction."""

    signature: str
    unit: str
    combine: str  # "sum" (latency, counts) or "max" (peak memory)
    parts: dict[str, float]
    positions: dict[PosKey, str]
    scale: float = 1.0
    offset: float = 0.0
    reference: float | None = None  # whole-model value of the largest subnet
    calibration: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def raw(self, cfg: SubnetConfig, stage_lengths: Sequence[int]) -> float:
        """Combined part costs of ``cfg`` (before calibration); ``cfg`` must be valid for the space."""
        r = cfg.resolution
        values = [self.parts[f"stem@{r}"], self.parts[self.info["heads"][str(r)]]]
        start = 0
        for n, blocks in zip(stage_lengths, cfg.stages, strict=True):
            values += [self.parts[self.positions[(start + i, b.kernel, b.expand, r)]] for i, b in enumerate(blocks)]
            start += n
        return float(sum(values)) if self.combine == "sum" else float(max(values))

    def predict(self, cfgs: Sequence[SubnetConfig], stage_lengths: Sequence[int]) -> np.ndarray:
        return np.array([self.scale * self.raw(c, stage_lengths) + self.offset for c in cfgs])

    def genome_cost(self, space: SearchSpace) -> Callable[[np.ndarray], np.ndarray]:
        """A vectorised predictor over genome arrays (same numbers as :meth:`predict`)."""
        layout = GenomeLayout(space)
        n_k = max(len(b.kernels) for b in layout.blocks)
        n_e = max(len(b.expands) for b in layout.blocks)
        blocks = np.zeros((layout.n_blocks, n_k, n_e, len(space.resolutions)))
        base = np.zeros((2, len(space.resolutions)))
        for ri, r in enumerate(space.resolutions):
            base[:, ri] = self.parts[f"stem@{r}"], self.parts[self.info["heads"][str(r)]]
            for b, ch in enumerate(layout.blocks):
                for ki, k in enumerate(ch.kernels):
                    for ei, e in enumerate(ch.expands):
                        blocks[b, ki, ei, ri] = self.parts[self.positions[(b, k, e, r)]]
        index = np.arange(layout.n_blocks)[None, :]

        def cost(genomes: np.ndarray) -> np.ndarray:
            res = genomes[:, 0]
            per = blocks[index, layout.kernels(genomes), layout.expands(genomes), res[:, None]]
            per = per * layout.active(genomes)
            if self.combine == "sum":
                raw = base[:, res].sum(0) + per.sum(1)
            else:
                raw = np.maximum(base[:, res].max(0), per.max(1))
            return self.scale * raw + self.offset

        return cost

    def to_dict(self) -> dict[str, Any]:
        return {"signature": self.signature, "unit": self.unit, "combine": self.combine, "parts": self.parts,
                "positions": [[*k, v] for k, v in self.positions.items()], "scale": self.scale,
                "offset": self.offset, "reference": self.reference, "calibration": self.calibration,
                "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostTable:
        positions = {(int(p), int(k), float(e), int(r)): str(v) for p, k, e, r, v in d["positions"]}
        return cls(d["signature"], d["unit"], d["combine"], {k: float(v) for k, v in d["parts"].items()},
                   positions, float(d["scale"]), float(d["offset"]), d["reference"], d["calibration"], d["info"])


def _fit(raw: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Least-squares ``actual ~ scale * raw + offset``; falls back to a pure offset if the slope is not sane."""
    if len(raw) >= 2 and np.ptp(raw) > 0:
        scale, offset = np.polyfit(raw, actual, 1)
        if 0.2 < scale < 5.0:
            return float(scale), float(offset)
    return 1.0, float(np.mean(actual - raw))


def _table_parts(parts: list[Part], target: Target, cache_dir: Path) -> dict[str, float]:
    """Parts looked up in a device latency table; missing parts are exported for the board, then an error."""
    table = TableLookup(target.table)  # type: ignore[arg-type]
    values, missing = {}, {}
    for key, module, shape in parts:
        found = table.get(part_key(module, shape))
        if found is None:
            missing[key] = (module, shape)
        else:
            values[key] = max(found - table.overhead, 0.0)
    if missing:
        out = cache_dir / f"parts-{target.name}"
        export_parts_for_device(missing, out, threads=target.threads, batch=target.batch, repeats=target.repeats)
        raise BespokeError(f"{len(missing)} supernet parts are not in the table {target.table} of {target.name!r}",
                           f"profile {out} on the device (see {out}/README.txt) and merge the rows into the table")
    values["__overhead__"] = table.overhead
    return values


def build_cost_table(net_spec: NetSpec, space: SearchSpace, target: Target, cache_dir: Path, *,
                     calibration_subnets: int = 6, seed: int = 0, extract: Any = None) -> CostTable:
    """The cost table of ``target`` (cached in ``cache_dir``; measured once per measurement setting).

    ``extract(cfg) -> nn.Module`` builds a whole subnet for the calibration measurements (default: a randomly
    initialised :class:`StaticNet`; latency does not depend on weight values).
    """
    signature = _signature(target)
    path = cache_dir / f"{signature}.json"
    if path.is_file():
        return CostTable.from_dict(json.loads(path.read_text()))
    cpu0 = cpu_seconds()
    parts, positions, heads = enumerate_parts(net_spec, space, target.batch)
    if target.runtime == "table":
        values = _table_parts(parts, target, cache_dir)
    else:
        values = {}
        with make_progress() as progress:
            task = progress.add_task(f"cost table {target.runtime}", total=len(parts), postfix="")
            for key, module, shape in parts:
                values[key] = _measure_part(module, shape, target)
                progress.update(task, advance=1, postfix=key[:40])
    table = CostTable(signature, target.unit, "max" if target.runtime == "memory" else "sum", values, positions,
                      info={"heads": heads, "runtime": target.runtime, "threads": target.threads,
                            "batch": target.batch, "machine": platform.machine(), "node": platform.node(),
                            "n_parts": len(parts)})
    _calibrate(table, net_spec, space, target, calibration_subnets, seed, extract)
    table.info["cpu_s"] = round(cpu_seconds() - cpu0, 1)
    write_json(path, table.to_dict())
    return table


def robust_value(model: nn.Module, target: Target, resolution: int, tries: int = 2) -> float:
    """The target's measurement, repeated: the smallest median of ``tries`` timings (interference from other
    processes only ever adds time); counts are exact and measured once."""
    runs = tries if target.is_latency else 1
    return min(measure(model, target, resolution).value for _ in range(runs))


def _calibrate(table: CostTable, net_spec: NetSpec, space: SearchSpace, target: Target, n: int, seed: int,
               extract: Any) -> None:
    lengths = space.stage_lengths
    if target.runtime == "table":  # no whole-model measurement on the board: parts minus overhead, plus one
        table.offset = table.parts["__overhead__"]
        table.reference = float(table.predict([space.largest()], lengths)[0])
        return
    rng = np.random.default_rng([seed, 104729])
    cfgs = [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(max(0, n - 2)))]
    raw, actual = [], []
    reference: bytes | None = None
    for cfg in cfgs:
        model = extract(cfg) if extract is not None else StaticNet(subnet_spec(net_spec, space, cfg))
        if reference is not None:  # on the largest subnet's scale, like the check after export
            value = measure_paired(export_onnx_bytes(model, image_shape(target.batch, cfg.resolution)), reference,
                                   target, reference_value=actual[0]).value
        else:
            value = robust_value(model, target, cfg.resolution, tries=3 if cfg == space.largest() else 2)
            if target.runtime == "onnxruntime":
                reference = export_onnx_bytes(model, image_shape(target.batch, cfg.resolution))
        raw.append(table.raw(cfg, lengths))
        actual.append(value)
        table.calibration.append({"config": cfg.key(), "raw": round(raw[-1], 6), "measured": round(value, 6)})
    table.scale, table.offset = _fit(np.array(raw), np.array(actual))
    table.reference = float(actual[0])
    pred = table.predict(cfgs, lengths)
    table.info["calibration_mape"] = round(float(np.mean(np.abs(pred - actual) / np.maximum(actual, 1e-9))), 4)
