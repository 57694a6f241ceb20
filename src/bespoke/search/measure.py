"""Measuring parts of a network (any input shape) on a target with bespoke.targets' protocol.

``bespoke.targets.measure`` measures whole models on ``[batch, 3, R, R]`` images. A part (a teacher segment, an
alternative with its adapters) takes an activation of another shape, so it is exported to ONNX at that shape.

onnxruntime parts are timed one after the other, each warm (its own warm-up, then ``target.repeats`` timed
runs, median), exactly as a whole model is. Timing parts round-robin instead inflates small parts by ~1.7x
(cold caches) and breaks additivity, so drift of the machine's speed is handled with an *anchor*: the whole
teacher is timed before the first part and again every few parts, and each part is scaled by the teacher's
first time over its time nearest to the part. Session settings, inputs and the timing loop are
``bespoke.targets.device_profiler``'s. Counting runtimes (macs, params, memory) count at the part's shape;
torch times the module at that shape.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from bespoke.targets import TableLookup, Target, measure, measure_onnx, measure_shape
from bespoke.targets.onnx_io import export_onnx_bytes, overhead_onnx_bytes
from bespoke.targets.paired import time_onnx
from bespoke.utils.atomic import write_bytes

#: How part values combine into a model value, per target unit.
AGGREGATE = {"ms": "sum", "MACs": "sum", "params": "sum", "bytes": "max"}

PartSpec = tuple[nn.Module, Sequence[int]]  # module, input shape without batch


def measure_part(module: nn.Module, input_shape: Sequence[int], target: Target) -> float:
    """Value of ``module`` on ``target`` for one input of ``input_shape`` (no batch dimension), alone."""
    return measure_shape(module, target, (target.batch, *[int(d) for d in input_shape])).value


def measure_parts(parts: Mapping[str, PartSpec], target: Target, *, teacher: nn.Module, resolution: int,
                  anchor_every: int = 12) -> tuple[dict[str, float], float, float]:
    """Values of many parts on ``target``, plus the whole teacher and the per-call overhead.

    Returns ``(values, teacher, call_overhead)``; part values are raw (the caller subtracts the overhead). For
    onnxruntime each part is scaled to the first teacher timing through the teacher timed nearest to it.
    """
    if target.runtime != "onnxruntime":
        values = {k: measure_part(m, s, target) for k, (m, s) in parts.items()}
        return values, measure_whole(teacher, target, resolution), measure_call_overhead(target)
    anchor = export_onnx_bytes(teacher, (1, 3, resolution, resolution), dynamic_batch=True)
    first = float(np.median(time_onnx(anchor, target)))
    overhead = float(np.median(time_onnx(overhead_onnx_bytes(), target.model_copy(update={"batch": 1}))))
    keys = list(parts)
    values: dict[str, float] = {}
    before = first
    for i in range(0, len(keys), anchor_every):
        group = keys[i:i + anchor_every]
        raw = {k: float(np.median(time_onnx(_export(parts[k], target), target, what=f"part {k}"))) for k in group}
        after = float(np.median(time_onnx(anchor, target)))
        for n, k in enumerate(group):  # teacher speed interpolated to the part's place in the sequence
            here = before + (after - before) * (n + 0.5) / len(group)
            values[k] = raw[k] * first / here
        before = after
    return values, first, overhead


def _export(part: PartSpec, target: Target) -> bytes:
    module, shape = part
    return export_onnx_bytes(module, (target.batch, *[int(d) for d in shape]))


def measure_call_overhead(target: Target) -> float:
    """Fixed cost of one call on ``target`` (a trivial graph); 0 for counting runtimes.

    Every measured part pays it once; a whole model pays it once, so part values subtract it.
    """
    if target.runtime == "onnxruntime":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "overhead.onnx"
            write_bytes(path, overhead_onnx_bytes())
            return measure_onnx(path, target.model_copy(update={"batch": 1})).value
    if target.runtime == "table":
        return TableLookup(target.table).overhead if target.table else 0.0
    if target.runtime == "torch":
        return measure_part(nn.Identity(), (1,), target)
    return 0.0


def measure_whole(model: nn.Module, target: Target, resolution: int) -> float:
    """A whole image model on ``target`` the way delivered models are measured (for onnxruntime: the ONNX
    export with a dynamic batch axis, as ``save_model_dir`` writes it)."""
    if target.runtime == "onnxruntime":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            write_bytes(path, export_onnx_bytes(model, (1, 3, resolution, resolution), dynamic_batch=True))
            return measure_onnx(path, target).value
    return measure(model, target, resolution).value
