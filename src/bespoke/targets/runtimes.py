"""One measurer per runtime, in a read-only registry keyed by runtime name, and the ``measure`` dispatchers.

=============== ======= ==================================================================================
runtime         unit    what is measured
=============== ======= ==================================================================================
``onnxruntime`` ms      median latency of an InferenceSession (CPUExecutionProvider) on the exported model
                        (statically quantized first for an int8 target, a part without its float boundary:
                        :mod:`bespoke.targets.int8`)
``torch``       ms      median latency of the eager model under ``torch.inference_mode()``, on CPU
``table``       ms      a row of a latency table measured on the device (looked up by ``part_key``)
``macs``        MACs    fvcore's count (one fused multiply-add = 1), batch 1
``params``      params  number of parameters
``memory``      bytes   peak live activation bytes (see :mod:`bespoke.targets.memory`)
=============== ======= ==================================================================================

Besides single models, every measurer measures what a cost table is made of (:func:`measure_parts`): many parts
of a network, each alone at its own input shape, together with the whole reference model as it is delivered
(:func:`measure_delivered`) and the fixed cost of one call (:func:`call_overhead`). onnxruntime times the parts
one after the other, each warm, and re-times the reference every few parts: each part is scaled to the first
reference timing through the reference timed nearest to it, so the machine's drift during a long table does not
end up in the part values (timing parts round-robin instead inflates small parts, cold caches, and breaks
additivity).
"""

from __future__ import annotations

import fnmatch
import os
import platform
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.targets import device_profiler as protocol
from bespoke.targets.int8 import as_deployed, part_timing_graph
from bespoke.targets.measure import (
    Measurement,
    cpu_model,
    eval_mode,
    image_shape,
    random_input,
    time_runs,
    torch_threads,
)
from bespoke.targets.memory import estimate_peak_memory
from bespoke.targets.onnx_io import export_onnx_bytes, input_shapes, load_onnx, overhead_onnx_bytes, part_key
from bespoke.targets.paired import measure_paired, time_onnx
from bespoke.targets.spec import Target
from bespoke.targets.table import TableLookup

with warnings.catch_warnings():  # fvcore.nn scripts a loss at import time; torch calls that deprecated
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis


#: A part of a network: how to build it (loaded only when it is measured) and its input shape, batch first.
Part = tuple[Callable[[], nn.Module], tuple[int, ...]]


@dataclass
class PartReadings:
    """Parts measured together (:func:`measure_parts`): each part's raw value (alone, one call's overhead
    included), on the scale of ``reference``, the whole reference model measured as delivered at the start
    (``None``: the runtime cannot measure it whole), and the fixed cost of one call."""

    values: dict[str, float]
    reference: float | None
    call_overhead: float
    #: an int8 target's reference in fp32 (its graph before quantization) on the same scale: relative budgets'
    #: base (``None``: ``reference`` is)
    reference_fp32: float | None = None


@runtime_checkable
class Measurer(Protocol):
    """How one runtime measures a module at an input shape (and, where it can, an ONNX file), a whole model as
    delivered, and the parts of a cost table.

    ``measure_shape`` takes any input shape, batch first (a whole model's images, or a part's activations);
    ``measure_module`` is the whole-image case, ``target.batch`` images of ``resolution`` pixels;
    ``measure_delivered`` measures a whole model the way its model directory is (for onnxruntime: its export with
    a dynamic batch axis). ``measures_whole``: whether whole models can be measured on this machine (not for a
    board's table, which holds the parts it was given).
    """

    name: str
    unit: str
    measures_whole: bool

    def measure_shape(self, model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement: ...

    def measure_module(self, model: nn.Module, target: Target, resolution: int) -> Measurement: ...

    def measure_delivered(self, model: nn.Module, target: Target, resolution: int) -> Measurement: ...

    def measure_onnx(self, path: str | os.PathLike[str], target: Target) -> Measurement: ...

    def call_overhead(self, target: Target) -> float: ...

    def missing_parts(self, parts: Mapping[str, Part], target: Target) -> list[str]: ...

    def measure_parts(self, parts: Mapping[str, Part], target: Target, *, reference: nn.Module,
                      resolution: int) -> PartReadings: ...


def count_macs(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, dict[str, int]]:
    """fvcore's multiply-accumulates of ``model`` on one input of ``shape`` (one fused multiply-add = 1), and the
    ops it could not count. The one MAC counter of the package (thop and Torch-Pruning's counter miss the static
    SAME-padding convolution)."""
    net = cpu_model(model)
    with eval_mode(net), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's jit tracing warns on every call
        analysis = FlopCountAnalysis(net, (random_input(shape),))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return int(analysis.total()), dict(analysis.unsupported_ops())


class _ImageInput(ABC):
    """What most runtimes share: ``measure_module`` as ``measure_shape`` on ``target.batch`` images, a delivered
    model measured as a module, no call overhead, parts measured one by one."""

    measures_whole = True

    @abstractmethod
    def measure_shape(self, model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement:
        """``model`` on one input of ``shape`` (batch included), the runtime's own way."""

    def measure_module(self, model: nn.Module, target: Target, resolution: int) -> Measurement:
        return self.measure_shape(model, target, image_shape(target.batch, resolution))

    def measure_delivered(self, model: nn.Module, target: Target, resolution: int) -> Measurement:
        return self.measure_module(model, target, resolution)

    def call_overhead(self, target: Target) -> float:
        return 0.0

    def missing_parts(self, parts: Mapping[str, Part], target: Target) -> list[str]:
        return []

    def measure_parts(self, parts: Mapping[str, Part], target: Target, *, reference: nn.Module,
                      resolution: int) -> PartReadings:
        ref = self.measure_delivered(reference, target, resolution).value if self.measures_whole else None
        values = {k: self.measure_shape(build().eval(), target, shape).value for k, (build, shape) in parts.items()}
        return PartReadings(values, ref, self.call_overhead(target))


def _no_onnx(name: str) -> BespokeError:
    return BespokeError(
        f"runtime {name!r} measures PyTorch modules, not ONNX files",
        "use measure(model, target, resolution), or a target with runtime onnxruntime or table",
    )


class OnnxRuntimeMeasurer(_ImageInput):
    name = "onnxruntime"
    unit = "ms"
    #: parts timed between two timings of the reference
    anchor_every = 12

    def measure_delivered(self, model: nn.Module, target: Target, resolution: int) -> Measurement:
        onnx = as_deployed(export_onnx_bytes(model, image_shape(1, resolution), dynamic_batch=True), target.precision)
        return self._measure(onnx, target, source=f"{type(model).__name__} (exported as delivered)")

    def call_overhead(self, target: Target) -> float:
        """A trivial graph's median: every part measured alone pays it once, a whole model once."""
        return float(np.median(time_onnx(overhead_onnx_bytes(), target.model_copy(update={"batch": 1}))))

    def measure_parts(self, parts: Mapping[str, Part], target: Target, *, reference: nn.Module,
                      resolution: int) -> PartReadings:
        fp32 = export_onnx_bytes(reference, image_shape(1, resolution), dynamic_batch=True)
        anchor = as_deployed(fp32, target.precision)
        first = float(np.median(time_onnx(anchor, target, what="the reference")))
        base = None if anchor is fp32 else measure_paired(fp32, anchor, target, reference_value=first).value
        overhead = self.call_overhead(target)
        keys, values, before = list(parts), {}, first
        for i in range(0, len(keys), self.anchor_every):
            group = keys[i:i + self.anchor_every]
            raw = {k: float(np.median(time_onnx(part_timing_graph(export_onnx_bytes(parts[k][0]().eval(),
                                                                                    parts[k][1]), target.precision),
                                                target, what=f"part {k}"))) for k in group}
            after = float(np.median(time_onnx(anchor, target, what="the reference")))
            for n, k in enumerate(group):  # the reference's speed interpolated to the part's place in the sequence
                here = before + (after - before) * (n + 0.5) / len(group)
                values[k] = raw[k] * first / here
            before = after
        return PartReadings(values, first, overhead, base)

    def measure_shape(self, model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement:
        source = f"{type(model).__name__} (exported)"
        return self._measure(as_deployed(export_onnx_bytes(model, shape), target.precision), target, source=source)

    def measure_onnx(self, path: str | os.PathLike[str], target: Target) -> Measurement:
        if not Path(path).is_file():
            raise BespokeError(f"ONNX file not found: {path}")
        return self._measure(os.fspath(path), target, source=str(path))

    def _measure(self, onnx_model: bytes | str, target: Target, source: str) -> Measurement:
        try:
            session = protocol.make_session(onnx_model, target.threads, target.opt_level)
            feed = protocol.input_feed(session, target.batch)
        except protocol.ProfilerError as exc:
            raise BespokeError(f"{source}: {exc}") from None
        except Exception as exc:  # onnxruntime refuses the model
            raise BespokeError(f"onnxruntime cannot load {source}: {str(exc).splitlines()[0]}") from None
        shapes = {name: list(value.shape) for name, value in feed.items()}
        if any(shape[0] != target.batch for shape in shapes.values()):
            raise BespokeError(
                f"{source} has fixed input shapes {shapes} but target {target.name!r} asks for batch "
                f"{target.batch}",
                "export the model with a dynamic batch axis",
            )
        samples = time_runs(lambda: session.run(None, feed), target.warmup, target.repeats)
        return Measurement.from_samples(samples, runtime=self.name, details={
            "source": source,
            "input_shapes": shapes,
            "threads": target.threads,
            "opt_level": target.opt_level,
            "warmup": target.warmup,
            "onnxruntime": ort.__version__,
            "machine": platform.machine(),
        })


class TorchMeasurer(_ImageInput):
    name = "torch"
    unit = "ms"

    def measure_shape(self, model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement:
        net = cpu_model(model)
        x = random_input(shape)
        with torch_threads(target.threads), eval_mode(net), torch.inference_mode():
            samples = time_runs(lambda: net(x), target.warmup, target.repeats)
        return Measurement.from_samples(samples, runtime=self.name, details={
            "input_shape": list(shape),
            "threads": target.threads,
            "warmup": target.warmup,
            "torch": torch.__version__,
            "machine": platform.machine(),
        })

    def call_overhead(self, target: Target) -> float:
        return self.measure_shape(nn.Identity(), target, (target.batch, 1)).value

    def measure_onnx(self, path: str | os.PathLike[str], target: Target) -> Measurement:
        raise _no_onnx(self.name)


class TableMeasurer(_ImageInput):
    name = "table"
    unit = "ms"
    measures_whole = False

    def call_overhead(self, target: Target) -> float:
        return TableLookup(target.table).overhead if target.table else 0.0

    def missing_parts(self, parts: Mapping[str, Part], target: Target) -> list[str]:
        table = TableLookup(target.table)  # type: ignore[arg-type]
        return [k for k, (build, shape) in parts.items() if part_key(build(), shape) not in table]

    def measure_shape(self, model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement:
        return self._lookup(part_key(model, shape), target, what=f"{type(model).__name__} at {list(shape)}")

    def measure_onnx(self, path: str | os.PathLike[str], target: Target) -> Measurement:
        model = load_onnx(path)
        for dims in input_shapes(model):
            if dims and not isinstance(dims[0], int):
                raise BespokeError(f"{path} has a symbolic batch axis; table keys need fixed shapes",
                                   "export the part with a fixed input shape (export_parts_for_device)")
        return self._lookup(part_key(path), target, what=str(path))

    def _lookup(self, key: str, target: Target, what: str) -> Measurement:
        if target.table is None:  # pragma: no cover - Target validation requires it
            raise BespokeError(f"target {target.name!r} has no table")
        table = TableLookup(target.table)
        found = table.measurement(key, details={"measured": what})
        if found is None:
            raise BespokeError(
                f"{what} (key {key}) is not in the latency table {target.table} of target {target.name!r}",
                "export it with export_parts_for_device, profile it on the board, bring the CSV back",
            )
        return found


class MacsMeasurer(_ImageInput):
    """Counts per input (batch 1, whatever the target's batch)."""

    name = "macs"
    unit = "MACs"

    def measure_shape(self, model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement:
        shape = (1, *shape[1:])
        total, skipped = count_macs(model, shape)
        return Measurement.exact(total, unit=self.unit, runtime=self.name, details={
            "input_shape": list(shape),
            "counter": "fvcore (one fused multiply-add = 1; elementwise ops not counted)",
            "uncounted_ops": skipped,
        })

    def measure_onnx(self, path: str | os.PathLike[str], target: Target) -> Measurement:
        raise _no_onnx(self.name)


class ParamsMeasurer(_ImageInput):
    name = "params"
    unit = "params"

    def measure_shape(self, model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement:
        count = sum(p.numel() for p in model.parameters())
        return Measurement.exact(count, unit=self.unit, runtime=self.name)

    def measure_onnx(self, path: str | os.PathLike[str], target: Target) -> Measurement:
        raise _no_onnx(self.name)


class MemoryMeasurer(_ImageInput):
    name = "memory"
    unit = "bytes"

    def measure_shape(self, model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement:
        est = estimate_peak_memory(model, shape)
        return Measurement.exact(est.peak_bytes, unit=self.unit, runtime=self.name, details={
            "input_shape": list(shape),
            "estimate": "peak live activation bytes, tensors freed after last use; weights excluded",
            "total_activation_bytes": est.total_bytes,
            "input_bytes": est.input_bytes,
            "largest_tensor_bytes": est.largest_tensor_bytes,
            "n_ops": est.n_ops,
        })

    def measure_onnx(self, path: str | os.PathLike[str], target: Target) -> Measurement:
        raise _no_onnx(self.name)


RUNTIMES: Mapping[str, Measurer] = MappingProxyType({
    m.name: m
    for m in (OnnxRuntimeMeasurer(), TorchMeasurer(), TableMeasurer(), MacsMeasurer(), ParamsMeasurer(),
              MemoryMeasurer())
})


def list_runtimes(pattern: str = "*") -> list[str]:
    """Registered runtime names matching a glob ``pattern``."""
    return sorted(name for name in RUNTIMES if fnmatch.fnmatchcase(name, pattern))


def get_runtime(name: str) -> Measurer:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise BespokeError(f"unknown runtime {name!r}", f"one of {', '.join(sorted(RUNTIMES))}") from None


def measure(model: nn.Module, target: Target, resolution: int) -> Measurement:
    """Measure ``model`` on ``target`` at input resolution ``resolution`` (batch = ``target.batch``)."""
    return get_runtime(target.runtime).measure_module(model, target, resolution)


def measure_shape(model: nn.Module, target: Target, shape: tuple[int, ...]) -> Measurement:
    """Measure ``model`` on ``target`` for one input of ``shape`` (batch first): a part of a network alone."""
    return get_runtime(target.runtime).measure_shape(model, target, tuple(int(d) for d in shape))


def measure_delivered(model: nn.Module, target: Target, resolution: int) -> Measurement:
    """A whole image model on ``target`` the way its model directory is measured (for onnxruntime: the ONNX export
    with a dynamic batch axis, as ``save_model_dir`` writes it)."""
    return get_runtime(target.runtime).measure_delivered(model, target, resolution)


def call_overhead(target: Target) -> float:
    """Fixed cost of one call on ``target`` (0 for counting runtimes): a part measured alone pays it once."""
    return get_runtime(target.runtime).call_overhead(target)


def measure_parts(parts: Mapping[str, Part], target: Target, *, reference: nn.Module,
                  resolution: int) -> PartReadings:
    """Many parts ``{key: (build, input shape)}`` on ``target``, each alone, on the scale of the whole
    ``reference`` model measured as delivered (see the module docstring)."""
    return get_runtime(target.runtime).measure_parts(parts, target, reference=reference, resolution=resolution)


def missing_parts(parts: Mapping[str, Part], target: Target) -> list[str]:
    """Keys of ``parts`` that ``target`` cannot measure here (a board's table without their rows)."""
    return get_runtime(target.runtime).missing_parts(parts, target)


def measure_onnx(path: str | os.PathLike[str], target: Target) -> Measurement:
    """Measure an ONNX file on ``target`` (runtimes onnxruntime and table)."""
    return get_runtime(target.runtime).measure_onnx(path, target)


def reference_value(model: nn.Module, target: Target, resolution: int) -> float:
    """The reference (original) model's value on ``target``: what a relative budget multiplies."""
    return measure(model, target, resolution).value


def resolve_budget(target: Target, reference_model: nn.Module, resolution: int) -> float | None:
    """``target``'s absolute budget in its unit; the reference is measured only for a relative budget."""
    if target.budget is None:
        return None
    reference = reference_value(reference_model, target, resolution) if target.budget.is_relative else None
    return target.budget.resolve(reference, target.unit)
