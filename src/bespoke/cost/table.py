"""The cost table: measured values of a network's parts on one measurement setting, and the calibrated predictor.

Parts are keyed by an engine-independent signature (:func:`part_signature`: what the part is and its input shape),
so one table serves any architecture made of them: a teacher segment or an alternative of a house, a stem, block
or head of a supernet. Each part is measured alone with the call overhead of one run subtracted; a model's parts
combine by ``aggregate`` (a sum; a max for peak memory), and the whole model's value is the calibration line
through whole models measured on the table's scale (:mod:`bespoke.cost.fit`): the reference model (teacher,
largest subnet), calibration models, and every model an engine delivered and verified.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bespoke.cost.fit import LooError, leave_one_out, theil_sen

#: How part values combine into a model value, per target unit.
AGGREGATE: dict[str, Literal["sum", "max"]] = {"ms": "sum", "MACs": "sum", "params": "sum", "bytes": "max"}

Source = Literal["reference", "calibration", "delivered"]


def part_signature(name: str, shape: Sequence[int]) -> str:
    """The table key of part ``name`` (unique within its engine's architecture family) at input ``shape``."""
    return f"{name}@{'x'.join(str(int(d)) for d in shape)}"


class CalibrationPoint(BaseModel):
    """A whole model measured on the table's scale: its combined parts and its measured value."""

    model_config = ConfigDict(extra="forbid")

    key: str
    parts: float
    measured: float
    source: Source = "calibration"


class CostTable(BaseModel):
    """Part values of one measurement setting (unit: the target's), the reference whole model and the line."""

    model_config = ConfigDict(extra="forbid")

    settings: dict = Field(description="what makes two measurements comparable (bespoke.cost.table_settings)")
    unit: str
    aggregate: Literal["sum", "max"] = "sum"
    parts: dict[str, float] = Field(default_factory=dict, description="part signature -> value alone, call "
                                    "overhead subtracted")
    call_overhead: float = 0.0
    reference: float | None = Field(None, description="whole reference model measured as delivered: the scale of "
                                    "every value here and the base of relative budgets")
    reference_fp32: float | None = Field(None, description="an int8 table's reference model in fp32 on the same "
                                         "scale: what relative budgets multiply (None: the reference)")
    calibration: list[CalibrationPoint] = Field(default_factory=list)
    line: tuple[float, float] = Field((1.0, 0.0), description="(slope, intercept) of whole against parts")
    loo: LooError = Field(default_factory=lambda: LooError(per_point=[], max_abs=None))
    cost_cpu_s: float = 0.0
    info: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fitted(self) -> CostTable:
        self.refit()
        return self

    @property
    def budget_base(self) -> float | None:
        """What a relative budget multiplies: the reference model as the user has it (fp32; on an int8 table, its
        fp32 graph timed alongside the quantized one), on the table's scale."""
        return self.reference_fp32 if self.reference_fp32 is not None else self.reference

    def combine(self, values: Iterable[float]) -> float:
        values = list(values)
        if not values:
            return 0.0
        return float(max(values)) if self.aggregate == "max" else float(sum(values))

    def raw(self, signatures: Iterable[str]) -> float:
        """Combined values of the parts ``signatures`` (before calibration)."""
        return self.combine(self.parts[s] for s in signatures)

    def missing(self, signatures: Iterable[str]) -> list[str]:
        return [s for s in dict.fromkeys(signatures) if s not in self.parts]

    def whole(self, raw: float | np.ndarray) -> float | np.ndarray:
        """Predicted whole-model value(s) from combined part values (vectorised over arrays)."""
        slope, intercept = self.line
        return slope * raw + intercept

    def predict(self, signatures: Iterable[str]) -> float:
        """Predicted whole-model value of the model made of the parts ``signatures``."""
        return float(self.whole(self.raw(signatures)))

    @property
    def points(self) -> list[tuple[float, float]]:
        return [(p.parts, p.measured) for p in self.calibration]

    def refit(self) -> None:
        """Fit the line (and its leave-one-out error) to the calibration points.

        Sums: Theil-Sen through every point; without points, parts plus one call's overhead. Peak memory: the
        reference's difference to its largest part is added (a max does not scale)."""
        ref = [p for p in self.calibration if p.source == "reference"]
        if self.aggregate == "max" or len(self.calibration) < 2:
            offset = ref[0].measured - ref[0].parts if ref else self.call_overhead
            self.line = (1.0, float(offset))
            self.loo = LooError(per_point=[], max_abs=None)
            return
        self.line = theil_sen(self.points)
        self.loo = leave_one_out(self.points)

    def set_reference(self, key: str, signatures: Iterable[str]) -> None:
        """Make the reference model (made of ``signatures``) a calibration point; a runtime that cannot measure
        whole models (a board's table) takes its parts plus one call as the reference's value."""
        raw = self.raw(signatures)
        if self.reference is None:
            self.reference = raw + self.call_overhead
        self.calibration = [p for p in self.calibration if p.source != "reference"]
        self.calibration.insert(0, CalibrationPoint(key=key, parts=raw, measured=self.reference, source="reference"))
        self.refit()

    def add_point(self, key: str, signatures: Iterable[str], measured: float, source: Source = "calibration"
                  ) -> CalibrationPoint:
        """Record a whole model made of ``signatures`` measured (on the table's scale) as ``measured``."""
        point = CalibrationPoint(key=key, parts=self.raw(signatures), measured=float(measured), source=source)
        self.calibration.append(point)
        self.refit()
        return point

    def error_line(self) -> str:
        """One line for reports: the line and its leave-one-out error."""
        slope, intercept = self.line
        return f"whole = {slope:.3f} x parts + {intercept:.4g} {self.unit}; {self.loo}"
