"""Deployment targets and the measurement protocol.

A target is a name + a runtime + its settings + a budget (``targets.yaml``). ``measure(model, target, R)``
gives a :class:`Measurement` in the target's unit (ms, MACs, params or bytes); relative budgets (``0.5x``)
resolve against the original model's value on the same target. ``runtime: table`` reads latencies measured on
a real board by the standalone ``device_profiler.py`` (see :func:`device_profiler_help`).
"""

from bespoke.targets.budget import UNITS, Budget
from bespoke.targets.device_export import (
    device_profiler_help,
    export_parts_for_device,
    profile_parts_locally,
    profiler_source,
)
from bespoke.targets.device_profiler import CSV_COLUMNS, OVERHEAD_KEY
from bespoke.targets.int8 import TIMING_SETTING, as_deployed, is_quantized, timing_graph
from bespoke.targets.measure import Measurement, summarize, time_runs
from bespoke.targets.memory import MemoryEstimate, estimate_peak_memory
from bespoke.targets.onnx_io import OPSET, export_onnx_bytes, part_key, write_onnx
from bespoke.targets.paired import measure_paired, time_alternating, time_onnx
from bespoke.targets.runtimes import (
    RUNTIMES,
    Measurer,
    Part,
    PartReadings,
    call_overhead,
    count_macs,
    get_runtime,
    list_runtimes,
    measure,
    measure_delivered,
    measure_onnx,
    measure_parts,
    measure_shape,
    missing_parts,
    reference_value,
    resolve_budget,
)
from bespoke.targets.spec import (
    INT8_RUNTIMES,
    LATENCY_RUNTIMES,
    MAX_TARGETS,
    RUNTIME_NAMES,
    Runtime,
    Target,
    load_targets,
    targets_from_dicts,
)
from bespoke.targets.table import TableLookup, TableRow

__all__ = [
    "CSV_COLUMNS",
    "INT8_RUNTIMES",
    "LATENCY_RUNTIMES",
    "MAX_TARGETS",
    "OPSET",
    "OVERHEAD_KEY",
    "RUNTIMES",
    "RUNTIME_NAMES",
    "TIMING_SETTING",
    "UNITS",
    "Budget",
    "Measurement",
    "Measurer",
    "MemoryEstimate",
    "Part",
    "PartReadings",
    "Runtime",
    "TableLookup",
    "TableRow",
    "Target",
    "as_deployed",
    "call_overhead",
    "count_macs",
    "device_profiler_help",
    "estimate_peak_memory",
    "export_onnx_bytes",
    "export_parts_for_device",
    "get_runtime",
    "is_quantized",
    "list_runtimes",
    "load_targets",
    "measure",
    "measure_delivered",
    "measure_onnx",
    "measure_paired",
    "measure_parts",
    "measure_shape",
    "missing_parts",
    "part_key",
    "profile_parts_locally",
    "profiler_source",
    "reference_value",
    "resolve_budget",
    "summarize",
    "targets_from_dicts",
    "time_alternating",
    "time_onnx",
    "time_runs",
    "timing_graph",
    "write_onnx",
]
