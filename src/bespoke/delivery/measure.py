"""Measuring a delivered model against its engine's reference model, for every runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from bespoke.targets import Measurement, Target, export_onnx_bytes, measure, measure_paired
from bespoke.targets.measure import image_shape


@dataclass
class Reference:
    """The engine's reference model (teacher, largest subnet) and its value on the scale of the engine's budget
    and predictions (``value``; ``None``: the scale of each measurement, i.e. the reference timed alongside now).
    Its ONNX is exported once per batch size, with a dynamic batch axis, as a delivered model is."""

    model: nn.Module
    resolution: int
    value: float | None = None
    _onnx: dict[int, bytes] = field(default_factory=dict, repr=False)

    def onnx(self, batch: int) -> bytes:
        if batch not in self._onnx:
            self._onnx[batch] = export_onnx_bytes(self.model, image_shape(batch, self.resolution), dynamic_batch=True)
        return self._onnx[batch]


def measure_against(model: nn.Module | str | Path, reference: Reference, target: Target, resolution: int,
                    *, onnx: bytes | str | Path | None = None) -> tuple[Measurement, float]:
    """``model`` (a module, or its exported ``onnx``) on ``target``, on ``reference``'s scale; and the reference's
    value on that scale now.

    onnxruntime: timed in alternation with the reference (:func:`bespoke.targets.measure_paired`), so machine drift
    falls on both. torch: each measured, the model scaled by reference value / reference now. Counting runtimes
    (MACs, parameters, memory) are exact and need no scale.
    """
    if target.runtime == "onnxruntime":
        source = onnx if onnx is not None else export_onnx_bytes(model, image_shape(target.batch, resolution),
                                                                 dynamic_batch=True)  # type: ignore[arg-type]
        m = measure_paired(source, reference.onnx(target.batch), target, reference_value=reference.value)
        return m, float(m.details["reference_value_ms"])
    if not isinstance(model, nn.Module):
        raise TypeError("only onnxruntime targets measure an ONNX file here")
    m = measure(model, target, resolution)
    if not target.is_latency:
        return m, measure(reference.model, target, reference.resolution).value
    now = measure(reference.model, target, reference.resolution).value
    if reference.value is None or now <= 0:
        return m, now
    scale = reference.value / now
    return Measurement.exact(m.value * scale, unit=m.unit, runtime=m.runtime,
                             details={**m.details, "raw_median_ms": m.value, "reference_now_ms": now,
                                      "reference_value_ms": reference.value}), reference.value
