"""Latency (cost) tables: every teacher segment and every alternative measured on one target.

A student's value is predicted from ``aggregate(parts)``: parts are the remaining teacher segments and the chosen
alternatives, each measured alone (warm) with the call overhead of one session run subtracted; ``aggregate`` is a
sum (a max for peak memory). What measuring in pieces misses is, for counts, a constant (whole teacher minus its
segments). For latency it grows with the work: a part measured alone keeps its weights and activations in cache,
a whole model streams them (measured on the benchmark's Lite2 house: the whole teacher 1.51x the sum of its
segments, whole students 1.3-1.6x theirs). So latency tables also hold *calibration points*, a few random
students measured whole (alternating with the teacher, on the table's scale), and the prediction is the line
``whole = slope x parts + intercept`` through those points and the teacher, fitted by Theil-Sen (median of the
pairwise slopes), so that one odd point does not tilt it. Search adds every student it verifies as a further
point. (An earlier model, an isotonic fit of ``whole - parts`` over the parameter count, missed the benchmark's
students by -20 to -27 %; the line's leave-one-out error on the same points is 3-9 % for them.)

Tables are stored in ``HOUSE/latency/`` keyed by the measurement settings (runtime, threads, batch, ...), not the
target name: targets that differ only in budget share one table. A table grows incrementally when the house
gains alternatives.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import weakref
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bespoke.errors import BespokeError
from bespoke.house import House, assemble_student
from bespoke.search.measure import AGGREGATE, measure_parts, measure_whole
from bespoke.targets import Target, export_onnx_bytes, measure_paired
from bespoke.train import cpu_seconds
from bespoke.utils.atomic import write_json
from bespoke.utils.progress import make_progress


class LatencyTable(BaseModel):
    """Measured part values of one house on one measurement setting (unit: the target's)."""

    model_config = ConfigDict(extra="forbid")

    settings: dict = Field(description="what makes two measurements comparable")
    unit: str
    aggregate: str = "sum"
    teacher: float = Field(description="whole teacher, measured like a delivered model")
    call_overhead: float = 0.0
    segments: list[float]
    alternatives: dict[str, float] = Field(default_factory=dict)
    segment_params: list[int] = Field(default_factory=list)
    alternative_params: dict[str, int] = Field(default_factory=dict)
    calibration: list[dict[str, float]] = Field(default_factory=list, description="students measured whole: "
                                                "parts (sum of part values), params, measured (table scale)")
    cost_cpu_s: float = 0.0

    @property
    def overhead(self) -> float:
        """Whole teacher minus its segments put together."""
        return self.teacher - self._combine(self.segments)

    @property
    def calibrated(self) -> bool:
        return self.aggregate == "sum" and bool(self.calibration)

    def line(self) -> tuple[float, float]:
        """``(slope, intercept)`` of whole-model value against the sum of parts (see the module docstring);
        ``(1, overhead)`` before any calibration point."""
        if not self.calibrated:
            return 1.0, self.overhead
        points = [(self._combine(self.segments), self.teacher)]
        points += [(c["parts"], c["measured"]) for c in self.calibration]
        slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1:]
                  if abs(x2 - x1) > 1e-9]
        slope = max(statistics.median(slopes), 0.0) if slopes else 1.0
        return slope, statistics.median(y - slope * x for x, y in points)

    def whole(self, parts: float) -> float:
        """Predicted whole-model value of a student whose parts add up to ``parts``."""
        if self.aggregate != "sum":
            return parts + self.overhead
        slope, intercept = self.line()
        return slope * parts + intercept

    def params(self, spans: dict[str, tuple[int, int]]) -> int:
        """Parameters of the student using alternatives ``{id: (start, end)}``."""
        covered = {i for a, b in spans.values() for i in range(a, b)}
        kept = sum(p for i, p in enumerate(self.segment_params) if i not in covered)
        return kept + sum(self.alternative_params.get(a, 0) for a in spans)

    def add_calibration(self, spans: dict[str, tuple[int, int]], measured: float) -> None:
        """Record a student measured whole (on the table's scale) as a calibration point."""
        self.calibration.append({"parts": self._combine(self.parts(spans)), "params": float(self.params(spans)),
                                 "measured": float(measured)})

    def _combine(self, values: Iterable[float]) -> float:
        values = list(values)
        if not values:
            return 0.0
        return max(values) if self.aggregate == "max" else sum(values)

    def parts(self, spans: dict[str, tuple[int, int]]) -> list[float]:
        """Values of the parts of a student using alternatives ``{id: (start, end)}``."""
        covered = {i for a, b in spans.values() for i in range(a, b)}
        values = [v for i, v in enumerate(self.segments) if i not in covered]
        return values + [self.alternatives[a] for a in spans]

    def predict(self, spans: dict[str, tuple[int, int]]) -> float:
        """Predicted value of the student using alternatives ``{id: (start, end)}`` (the teacher for none)."""
        return self.whole(self._combine(self.parts(spans)))


def table_settings(target: Target) -> dict:
    """The fields of a target that change measured values (its name and budget do not)."""
    data = target.model_dump(mode="json", exclude={"name", "budget", "description"})
    if target.table is not None:
        data["table"] = str(Path(target.table).resolve())
    return data


def table_path(house: House, target: Target) -> Path:
    settings = table_settings(target)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return house.latency_dir() / f"{target.runtime}-t{target.threads}-b{target.batch}-{digest}.json"


def load_table(house: House, target: Target) -> LatencyTable | None:
    path = table_path(house, target)
    if not path.is_file():
        return None
    try:
        table = LatencyTable.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError):
        return None
    return table if table.settings == table_settings(target) else None


def build_latency_table(house: House, target: Target, *, alt_ids: Iterable[str] | None = None,
                        chunk: int = 48, calibration_students: int = 8) -> LatencyTable:
    """Measure (or complete) the table of ``house`` on ``target``: teacher, its segments, every finished
    alternative (or only ``alt_ids``), then calibration students (latency targets that can run a whole model).
    Saved after every chunk of parts, so an interrupted run resumes."""
    if target.unit not in AGGREGATE:
        raise BespokeError(f"target {target.name!r} has unit {target.unit!r} the block engine cannot add up")
    path = table_path(house, target)
    table = load_table(house, target)
    seg = house.teacher_segmentation()
    if table is not None and len(table.segments) != len(seg):
        table = None
    wanted = [e.id for e in house.entries("done")] if alt_ids is None else list(alt_ids)
    todo: list[str] = [] if table is not None else [f"seg{i}" for i in range(len(seg))]
    todo += [a for a in wanted if table is None or a not in table.alternatives]
    with make_progress() as progress:
        task = progress.add_task(f"measure parts on {target.name}", total=len(todo), postfix="")
        for i in range(0, len(todo), chunk):
            cpu0 = cpu_seconds()
            keys = todo[i:i + chunk]
            parts = {k: (seg.segments[int(k[3:])], seg.shapes[int(k[3:])]) if k.startswith("seg")
                     else (house.load_alternative(k), house.index.get(k).recipe.in_shape) for k in keys}
            values, teacher, overhead = measure_parts(parts, target, teacher=house.teacher_model(),
                                                      resolution=house.resolution)
            if table is None:
                segments = [max(values[f"seg{i}"] - overhead, 0.0) for i in range(len(seg))]
                table = LatencyTable(settings=table_settings(target), unit=target.unit,
                                     aggregate=AGGREGATE[target.unit], teacher=teacher, call_overhead=overhead,
                                     segments=segments, segment_params=[seg.params(i) for i in range(len(seg))])
                scale = 1.0
            else:  # put this chunk on the table's scale through the teacher measured with it
                scale = table.teacher / teacher if teacher > 0 else 1.0
            for k in keys:
                if not k.startswith("seg"):
                    table.alternatives[k] = max(values[k] * scale - table.call_overhead, 0.0)
                    table.alternative_params[k] = sum(p.numel() for p in parts[k][0].parameters())
            table.cost_cpu_s += cpu_seconds() - cpu0
            write_json(path, table.model_dump(mode="json"))
            progress.advance(task, len(keys))
    assert table is not None
    if not table.segment_params or len(table.alternative_params) < len(table.alternatives):  # older tables
        table.segment_params = [seg.params(i) for i in range(len(seg))]
        table.alternative_params.update({a: int(house.index.get(a).metrics.get("params") or 0)
                                         for a in table.alternatives if a not in table.alternative_params})
        table.calibration = [c for c in table.calibration if c["params"] > 0]
    missing = calibration_students - len(table.calibration)
    if target.unit == "ms" and target.runtime in ("onnxruntime", "torch") and missing > 0 and table.alternatives:
        cpu0 = cpu_seconds()
        for spans in random_students(house, table, missing, seed=len(table.calibration)):
            measure_student(house, table, target, spans)
        table.cost_cpu_s += cpu_seconds() - cpu0
        write_json(path, table.model_dump(mode="json"))
    return table


def random_students(house: House, table: LatencyTable, count: int, seed: int = 0
                    ) -> list[dict[str, tuple[int, int]]]:
    """``count`` seeded random students of growing numbers of replacements (light to heavy changes)."""
    rng = random.Random(seed)
    spans = {a: tuple(house.index.get(a).recipe.span) for a in sorted(table.alternatives)}
    out = []
    for k in range(count):
        want = max(1, round((k + 1) / count * len(table.segments) / 2))
        chosen: dict[str, tuple[int, int]] = {}
        for a in rng.sample(sorted(spans), len(spans)):
            if len(chosen) >= want:
                break
            a0, a1 = spans[a]
            if all(a1 <= b0 or b1 <= a0 for b0, b1 in chosen.values()):
                chosen[a] = (a0, a1)  # type: ignore[assignment]
        out.append(chosen)
    return out


_TEACHER_ONNX: weakref.WeakKeyDictionary[House, dict[tuple[int, ...], bytes]] = weakref.WeakKeyDictionary()


def _teacher_onnx(house: House, shape: tuple[int, ...]) -> bytes:
    """The house teacher's ONNX bytes, exported once per house and shape (every calibration student and every
    check at delivery is timed against it)."""
    by_shape = _TEACHER_ONNX.setdefault(house, {})
    if shape not in by_shape:
        by_shape[shape] = export_onnx_bytes(house.teacher_model(), shape, dynamic_batch=True)
    return by_shape[shape]


def measure_student(house: House, table: LatencyTable, target: Target, spans: dict[str, tuple[int, int]],
                    modules: dict | None = None) -> tuple[float, float, float]:
    """Measure a student whole, alternating with the teacher; record it as a calibration point.

    Returns ``(value on the table's scale, value measured now, teacher measured now)``; the first removes the
    machine's drift since the table was measured.
    """
    student = assemble_student(house, list(spans), modules)
    if target.runtime == "onnxruntime":  # the estimator every budget verdict uses: median of per-turn ratios
        shape = (1, 3, house.resolution, house.resolution)
        m = measure_paired(export_onnx_bytes(student, shape, dynamic_batch=True), _teacher_onnx(house, shape), target,
                           reference_value=table.teacher)
        value, now = m.value, {"student": m.details["raw_median_ms"], "teacher": m.details["reference_now_ms"]}
    else:
        now = {"student": measure_whole(student, target, house.resolution),
               "teacher": measure_whole(house.teacher_model(), target, house.resolution)}
        value = now["student"] * table.teacher / now["teacher"] if now["teacher"] > 0 else now["student"]
    table.add_calibration(spans, value)
    write_json(table_path(house, target), table.model_dump(mode="json"))
    return value, now["student"], now["teacher"]


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
