"""Where cost tables live and how they grow: one JSON file per measurement setting in an engine's ``latency/``
directory (a house's, a supernet's), written atomically after every chunk of parts measured, so an interrupted
table resumes and a table grows by the parts it lacks when its engine gains some."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torch import nn

from bespoke.cost.table import AGGREGATE, CostTable
from bespoke.errors import BespokeError
from bespoke.targets import Part, Target, measure_parts, missing_parts
from bespoke.targets.int8 import TIMING_VERSION
from bespoke.train import cpu_seconds
from bespoke.utils.atomic import write_json
from bespoke.utils.progress import make_progress


def table_settings(target: Target) -> dict:
    """The fields of a target that change measured values (its name, budget and description do not)."""
    data = target.model_dump(mode="json", exclude={"name", "budget", "description"})
    if target.precision == "int8":
        data["int8_timing"] = TIMING_VERSION
    if target.table is not None:
        path = Path(target.table)
        data["table"] = [str(path.resolve()), path.stat().st_mtime_ns if path.exists() else 0]
    return data


def cache_key(target: Target) -> str:
    """The file name (without ``.json``) of ``target``'s table: targets differing only in budget share it."""
    return _key(table_settings(target))


def _key(settings: dict) -> str:
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return f"{settings.get('runtime')}-t{settings.get('threads')}-b{settings.get('batch')}-{digest}"


def table_path(directory: str | Path, target: Target) -> Path:
    return Path(directory) / f"{cache_key(target)}.json"


def load_table(directory: str | Path, target: Target) -> CostTable | None:
    """``target``'s table in ``directory``, or ``None`` (none yet, unreadable, or other settings)."""
    path = table_path(directory, target)
    if not path.is_file():
        return None
    try:
        table = CostTable.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError):
        return None
    return table if table.settings == table_settings(target) else None


def save_table(directory: str | Path, table: CostTable) -> Path:
    path = Path(directory) / f"{_key(table.settings)}.json"
    write_json(path, table.model_dump(mode="json"))
    return path


def grow_table(directory: str | Path, target: Target, parts: Mapping[str, Part], *, reference: nn.Module,
               resolution: int, reference_key: str, reference_parts: Sequence[str], chunk: int = 48,
               device_hint: Callable[[Mapping[str, Part]], str] | None = None) -> CostTable:
    """``target``'s table in ``directory`` with every part of ``parts`` (``{signature: (build, input shape)}``;
    only those it lacks are built and measured, through the runtime registry) and the reference model (made of
    ``reference_parts``) as a calibration point.

    A new table's scale is the reference measured with its first chunk; later chunks are put on it through the
    reference measured with them. ``device_hint(missing parts)`` says what to do when a board's table lacks rows
    (e.g. export them for profiling); the error is raised either way.
    """
    if target.unit not in AGGREGATE:
        raise BespokeError(f"target {target.name!r} has unit {target.unit!r} that no cost table can add up")
    table = load_table(directory, target)
    todo = [s for s in parts if table is None or s not in table.parts]
    missing = missing_parts({s: parts[s] for s in todo}, target)
    if missing:
        hint = device_hint({s: parts[s] for s in missing}) if device_hint else "profile them on the device"
        raise BespokeError(f"{len(missing)} parts are not in the table {target.table} of {target.name!r}", hint)
    with make_progress() as progress:
        task = progress.add_task(f"cost table {target.name}", total=len(todo), postfix="")
        for i in range(0, max(len(todo), 1 if table is None else 0), chunk):
            cpu0 = cpu_seconds()
            keys = todo[i:i + chunk]
            readings = measure_parts({k: parts[k] for k in keys}, target, reference=reference, resolution=resolution)
            if table is None:
                table = CostTable(settings=table_settings(target), unit=target.unit, aggregate=AGGREGATE[target.unit],
                                  call_overhead=readings.call_overhead, reference=readings.reference,
                                  reference_fp32=readings.reference_fp32)
            now, then = readings.reference, table.reference
            scale = then / now if now and then else 1.0
            for k in keys:
                table.parts[k] = max(readings.values[k] * scale - table.call_overhead, 0.0)
            table.cost_cpu_s += cpu_seconds() - cpu0
            save_table(directory, table)
            progress.advance(task, len(keys))
    assert table is not None
    table.set_reference(reference_key, reference_parts)
    save_table(directory, table)
    return table
