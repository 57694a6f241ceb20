"""The block engine's view of the shared cost table (:mod:`bespoke.cost`): which parts a house is made of.

A student is the teacher with some spans replaced by alternatives, so its parts are the teacher segments it keeps
and the alternatives it uses; each is a part of the house's table on a target (signature: segment index and node
name, or alternative id, with the input shape). The house's teacher is the table's reference model; a few random
students measured whole against it calibrate the table's line, and search adds every student it verifies.
Tables live in ``HOUSE/latency/`` and grow when the house gains alternatives.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from bespoke.cost import CostTable, Source, grow_table, part_signature, save_table
from bespoke.delivery import Reference, measure_against
from bespoke.house.house import House
from bespoke.house.student import assemble_student
from bespoke.targets import Part, Target, get_runtime
from bespoke.train import cpu_seconds

Spans = dict[str, tuple[int, int]]  # alternative id -> teacher segments it replaces [start, end)


@dataclass
class HouseCosts:
    """A house's cost table on one target and the signatures of its teacher segments and alternatives."""

    table: CostTable
    segment_keys: list[str]
    alternative_keys: dict[str, str]
    directory: Path

    @property
    def budget_base(self) -> float:
        """What relative budgets multiply: the teacher in fp32 on the table's scale (``teacher`` on fp32 targets)."""
        return float(self.table.budget_base)  # type: ignore[arg-type]

    @property
    def teacher(self) -> float:
        """The whole teacher measured like a delivered model (quantized on an int8 target): the table's scale."""
        assert self.table.reference is not None
        return self.table.reference

    @property
    def unit(self) -> str:
        return self.table.unit

    @property
    def aggregate(self) -> str:
        return self.table.aggregate

    @property
    def segments(self) -> list[float]:
        return [self.table.parts[k] for k in self.segment_keys]

    @property
    def alternatives(self) -> dict[str, float]:
        return {a: self.table.parts[k] for a, k in self.alternative_keys.items()}

    def signatures(self, spans: Spans) -> list[str]:
        """The parts of the student using alternatives ``spans``: kept teacher segments, then the alternatives."""
        covered = {i for a, b in spans.values() for i in range(a, b)}
        return [k for i, k in enumerate(self.segment_keys) if i not in covered] + [self.alternative_keys[a]
                                                                                   for a in spans]

    def predict(self, spans: Spans) -> float:
        """Predicted value of the student using alternatives ``spans`` (the teacher for none)."""
        return self.table.predict(self.signatures(spans))

    def add_calibration(self, spans: Spans, measured: float, source: Source = "calibration") -> None:
        """Record a student measured whole (on the table's scale) as a calibration point and save the table."""
        self.table.add_point(",".join(sorted(spans)) or "teacher", self.signatures(spans), measured, source)
        save_table(self.directory, self.table)


def house_parts(house: House, target: Target, alt_ids: Iterable[str]) -> tuple[dict[str, Part], list[str],
                                                                                 dict[str, str]]:
    """The parts of ``house`` on ``target`` (teacher segments, alternatives ``alt_ids``), built only when
    measured; and the signatures of the segments and of each alternative."""
    seg = house.teacher_segmentation()
    parts: dict[str, Part] = {}
    segment_keys = []
    for i in range(len(seg)):
        shape = (target.batch, *seg.shapes[i])
        key = part_signature(f"seg{i}:{seg.names[i]}", shape)
        parts[key] = (lambda i=i: seg.segments[i], shape)
        segment_keys.append(key)
    alternative_keys = {}
    for a in alt_ids:
        shape = (target.batch, *house.index.get(a).recipe.in_shape)
        alternative_keys[a] = part_signature(a, shape)
        parts[alternative_keys[a]] = (lambda a=a: house.load_alternative(a), shape)
    return parts, segment_keys, alternative_keys


def build_latency_table(house: House, target: Target, *, alt_ids: Iterable[str] | None = None,
                        chunk: int = 48, calibration_students: int = 8) -> HouseCosts:
    """Measure (or complete) the cost table of ``house`` on ``target``: teacher, its segments, every finished
    alternative (or only ``alt_ids``), then calibration students (targets that can run a whole model). Saved after
    every chunk of parts, so an interrupted run resumes."""
    wanted = [e.id for e in house.entries("done")] if alt_ids is None else list(alt_ids)
    parts, segment_keys, alternative_keys = house_parts(house, target, wanted)
    table = grow_table(house.latency_dir(), target, parts, reference=house.teacher_model(),
                       resolution=house.resolution, reference_key="teacher", reference_parts=segment_keys,
                       chunk=chunk)
    costs = HouseCosts(table, segment_keys, alternative_keys, house.latency_dir())
    missing = calibration_students - sum(p.source == "calibration" for p in table.calibration)
    if target.is_latency and get_runtime(target.runtime).measures_whole and missing > 0 and wanted:
        cpu0 = cpu_seconds()
        for spans in random_students(house, costs, missing, seed=len(table.calibration)):
            measure_student(house, costs, target, spans)
        table.cost_cpu_s += cpu_seconds() - cpu0
        save_table(costs.directory, table)
    return costs


def random_students(house: House, costs: HouseCosts, count: int, seed: int = 0) -> list[Spans]:
    """``count`` seeded random students of growing numbers of replacements (light to heavy changes)."""
    rng = random.Random(seed)
    spans = {a: tuple(house.index.get(a).recipe.span) for a in sorted(costs.alternative_keys)}
    out = []
    for k in range(count):
        want = max(1, round((k + 1) / count * len(costs.segment_keys) / 2))
        chosen: Spans = {}
        for a in rng.sample(sorted(spans), len(spans)):
            if len(chosen) >= want:
                break
            a0, a1 = spans[a]
            if all(a1 <= b0 or b1 <= a0 for b0, b1 in chosen.values()):
                chosen[a] = (a0, a1)  # type: ignore[assignment]
        out.append(chosen)
    return out


_REFERENCE: weakref.WeakKeyDictionary[House, Reference] = weakref.WeakKeyDictionary()


def teacher_reference(house: House, costs: HouseCosts) -> Reference:
    """The house teacher as the reference of ``costs``' table (its ONNX exported once per house and batch)."""
    if house not in _REFERENCE:
        _REFERENCE[house] = Reference(house.teacher_model(), house.resolution)
    return replace(_REFERENCE[house], value=costs.teacher)  # shares the exported ONNX


def measure_student(house: House, costs: HouseCosts, target: Target, spans: Spans, modules: dict | None = None,
                    *, source: Source = "calibration") -> tuple[float, float, float]:
    """Measure a student whole against the teacher, as a delivered model is; record it as a calibration point.

    Returns ``(value on the table's scale, value measured now, teacher measured now)``; the first removes the
    machine's drift since the table was measured.
    """
    student = assemble_student(house, list(spans), modules)
    m, teacher_now = measure_against(student, teacher_reference(house, costs), target, house.resolution)
    costs.add_calibration(spans, m.value, source)
    return (m.value, float(m.details.get("raw_median_ms", m.value)),
            float(m.details.get("reference_now_ms", teacher_now)))


def export_house_parts(house: House, out_dir: str | Path, *, batch: int = 1, threads: int = 1) -> dict[str, str]:
    """Write every part of the house as ONNX for profiling on a board (``runtime: table`` targets).

    Returns ``{label: part_key}``; copy ``out_dir`` to the device and run its ``device_profiler.py``.
    """
    from bespoke.targets import export_parts_for_device

    seg = house.teacher_segmentation()
    r = house.resolution
    parts: dict = {"teacher": (house.teacher_model(), (batch, 3, r, r))}
    parts.update({f"seg{i}": (seg.segments[i], (batch, *seg.shapes[i])) for i in range(len(seg))})
    for entry in house.entries("done"):
        parts[entry.id] = (house.load_alternative(entry.id), (batch, *entry.recipe.in_shape))
    return export_parts_for_device(parts, out_dir, batch=batch, threads=threads)
