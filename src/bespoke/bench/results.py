"""Benchmark outputs: ``results.json`` (everything, machine-readable), ``results.md`` and ``pareto.png``."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnxruntime
import torch
import yaml

from bespoke.bench.costs import MethodCost, costs_markdown
from bespoke.bench.preset import BenchPreset
from bespoke.bench.stages import StageRecord
from bespoke.report import ResultRow, markdown_table, write_report
from bespoke.utils.atomic import write_json

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def cpu_model_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, cores (and how many this process may use), library versions, OS."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model_name(), "cores": os.cpu_count(), "cores_usable": usable,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cuda": torch.cuda.is_available()}


def write_results(out: Path, *, preset: BenchPreset, smoke: bool, rows: Sequence[ResultRow],
                  records: Sequence[StageRecord], costs: Sequence[MethodCost], budgets: Mapping[str, float],
                  units: Mapping[str, str], engines: Mapping[str, dict[str, str]]) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``pareto.png`` under ``out``; return the JSON document."""
    machine = machine_info()
    doc = {
        "preset": preset.name, "smoke": smoke,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "budgets": {name: {"value": value, "unit": units.get(name)} for name, value in budgets.items()},
        "models": [r.to_dict() for r in rows],
        "stages": [vars(r) for r in records],
        "costs": [c.to_dict() for c in costs],
        "engines": dict(engines),
        "recipe": preset.model_dump(mode="json", exclude={"smoke"}),
    }
    write_json(out / RESULTS_JSON, doc)
    budgets_ms = {n: v for n, v in budgets.items() if units.get(n) == "ms"}
    title = f"bespoke benchmark: {preset.name}" + (" (smoke run: tiny data, plumbing only)" if smoke else "")
    write_report(out, rows, title, _sections(preset, records, costs, budgets, units, engines, machine),
                 budgets_ms=budgets_ms, name=RESULTS_MD)
    return doc


def _sections(preset: BenchPreset, records: Sequence[StageRecord], costs: Sequence[MethodCost],
              budgets: Mapping[str, float], units: Mapping[str, str], engines: Mapping[str, dict[str, str]],
              machine: Mapping[str, Any]) -> dict[str, str]:
    targets = markdown_table(["target", "runtime", "threads", "batch", "budget", "absolute"], [
        [t.name, t.runtime, str(t.threads), str(t.batch), str(t.budget),
         f"{budgets[t.name]:.4g} {units.get(t.name, '')}" if t.name in budgets else "-"] for t in preset.targets])
    stages = markdown_table(["stage", "method", "role", "status", "CPU-s", "wall s", "note"], [
        [r.name, r.method, r.role, r.status, _f(r.cpu_s), _f(r.wall_s), r.message[:160]] for r in records])
    engine_lines = "\n".join(f"- **{name}**: {info['status']}" + (f" — {info['message']}" if info.get("message")
                                                                   else "") for name, info in engines.items())
    recipe = yaml.safe_dump(preset.model_dump(mode="json", exclude={"smoke"}), sort_keys=False, width=110)
    machine_text = "\n".join(f"- {k}: {v}" for k, v in machine.items())
    return {
        "Targets and budgets": "Relative budgets are fractions of the teacher's measured value on the same "
                               "target (ONNX Runtime, CPU, batch 1). Every other model is timed in alternation "
                               "with the teacher and put on the scale of that value; a model timed more than once "
                               "(`--remeasure`) shows the median of its readings (each card keeps them all).\n\n"
                               + targets,
        "Cost of K targets": costs_markdown(costs),
        "Stages": "CPU-seconds are user + system time of the process (all threads); a skipped stage was done by "
                  "an earlier run and keeps the cost recorded in its model card.\n\n" + stages,
        "Engines": engine_lines or "- none expected",
        "Recipe": f"```yaml\n{recipe}```",
        "Machine": machine_text,
    }


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
