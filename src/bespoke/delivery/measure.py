"""Measuring a delivered model against its engine's reference model, for every runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from bespoke.targets import Measurement, Target, export_onnx_bytes, measure, measure_paired
from bespoke.targets.int8 import as_deployed
from bespoke.targets.measure import image_shape


@dataclass
class Reference:
    """The engine's reference model (teacher, largest subnet) and its value on the scale of the engine's budget
    and predictions (``value``; ``None``: the scale of each measurement, i.e. the reference timed alongside now).
    Its ONNX is exported once per batch size, with a dynamic batch axis, as a delivered model is."""

    model: nn.Module
    resolution: int
    value: float | None = None
    _onnx: dict[tuple[int, str], bytes] = field(default_factory=dict, repr=False)

    def onnx(self, batch: int, precision: str = "fp32") -> bytes:
        """The reference as a target of ``precision`` runs it (int8: quantized for timing)."""
        if (batch, precision) not in self._onnx:
            fp32 = export_onnx_bytes(self.model, image_shape(batch, self.resolution), dynamic_batch=True)
            self._onnx[(batch, precision)] = as_deployed(fp32, precision)  # type: ignore[assignment]
        return self._onnx[(batch, precision)]


def measure_against(model: nn.Module | str | Path, reference: Reference, target: Target, resolution: int,
                    *, onnx: bytes | str | Path | None = None) -> tuple[Measurement, float]:
    """``model`` (a module, or its exported ``onnx``) on ``target``, on ``reference``'s scale; and the reference's
    value on that scale now.

    onnxruntime: timed in alternation with the reference (:func:`bespoke.targets.measure_paired`), so machine drift
    falls on both; for an int8 target both run as it runs them (fp32 graphs quantized for timing). torch: each
    measured, the model scaled by reference value / reference now. Counting runtimes
    (MACs, parameters, memory) are exact and need no scale.
    """
    if target.runtime == "onnxruntime":
        source = onnx if onnx is not None else export_onnx_bytes(model, image_shape(target.batch, resolution),
                                                                 dynamic_batch=True)  # type: ignore[arg-type]
        m = measure_paired(as_deployed(source, target.precision), reference.onnx(target.batch, target.precision),
                           target, reference_value=reference.value)
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


def confirm_verdict(first: Measurement, measure_again: Callable[[], Measurement], budget: float | None,
                    expected_met: bool, *, extra: int = 2) -> list[Measurement]:
    """The readings that decide a delivered model's verdict: ``first``, and when it contradicts what an earlier
    measurement of the same architecture found (``expected_met``: the search measured it within ``budget``),
    ``extra`` more, so the median of several independent readings decides rather than one noisy one.

    Latency does not depend on trained weights, so the search's reading and the delivered file's should agree;
    a reading a few percent over the budget after retraining is noise more often than a change.
    """
    readings = [first]
    if budget is None or (first.value <= budget) == expected_met:
        return readings
    readings.extend(measure_again() for _ in range(extra))
    return readings
