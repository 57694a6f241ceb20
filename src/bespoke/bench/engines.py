"""Engine stages: the block engine and the supernet engine plug into the benchmark through this registry.

``register_engine_stage(name, fn)`` where ``fn(context: BenchContext) -> list[Path]`` delivers one model
directory per target it serves (card with ``target``/``budget`` set) and is itself resumable (a second call
after an interruption continues; after success it may simply return the same directories).

Cost accounting: the bench times the whole call (CPU-seconds). Each delivered card's ``cost_cpu_s`` is that
model's own per-target cost (keys starting with ``shared:`` or mentioning "shared" are preparation shared by
all targets and are not counted per target); the rest of the call's time is the engine's one-off preparation
(at least the shared costs the cards report, for work resumed from an earlier run). The teacher(s) the engine
asked for through ``context.teacher()`` count towards its preparation too.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from bespoke.bench.context import BenchContext
from bespoke.bench.stages import StageLedger, StageRecord, card_cost, complete_dirs
from bespoke.errors import BespokeError
from bespoke.export import read_card
from bespoke.report import is_shared_cost
from bespoke.train import cpu_seconds

EngineStage = Callable[[BenchContext], list[Path]]

#: The engines the benchmark expects, and the module that provides each one.
EXPECTED_ENGINES: dict[str, str] = {"bespoke": "bespoke.search", "tofa": "bespoke.supernet"}

_ENGINE_STAGES: dict[str, EngineStage] = {}


def register_engine_stage(name: str, fn: EngineStage, *, replace: bool = False) -> None:
    """Plug engine ``name`` into ``run_bench``; registering a name twice needs ``replace=True``."""
    if name in _ENGINE_STAGES and _ENGINE_STAGES[name] is not fn and not replace:
        raise ValueError(f"engine stage {name!r} registered twice")
    _ENGINE_STAGES[name] = fn


def engine_stages() -> dict[str, EngineStage]:
    """Registered engine stages by name (a copy)."""
    return dict(_ENGINE_STAGES)


def missing_reason(name: str) -> str:
    """Why engine ``name`` has no stage: its module is absent / not importable, or it registered none."""
    module = EXPECTED_ENGINES.get(name)
    if module is None:
        return f"engine {name!r}: no stage registered"
    try:
        importlib.import_module(module)
    except Exception as exc:  # any import failure means the same here: the engine cannot run
        return f"engine {name!r} was not run: {module} is not importable ({type(exc).__name__}: {exc})"
    return (f"engine {name!r} was not run: {module} imports, but no bench stage is registered "
            f"(call bespoke.bench.register_engine_stage({name!r}, fn))")


def run_engine_stage(ledger: StageLedger, name: str, fn: EngineStage, context: BenchContext) -> list[StageRecord]:
    """Run (or skip, when done before with the same settings) one engine stage; return its one-off record and
    one per-target record per delivered model."""
    settings = json.dumps(context.engine_settings(name), sort_keys=True, default=str)
    previous = ledger.get(name)
    if (previous is not None and previous.status in ("done", "skipped") and previous.settings == settings
            and complete_dirs(previous.dirs)):
        context.log(f"[bench] engine {name}: done before, skipped")
        records = [ledger.put(StageRecord(**{**previous.__dict__, "status": "skipped"}))]
        return records + [_target_record(name, d) for d in previous.dirs]
    context.log(f"[bench] engine {name}: running")
    before = set(context.teachers_used)
    context.teachers_used.clear()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    try:
        dirs = [str(Path(d)) for d in fn(context)]
        if not complete_dirs(dirs):
            raise BespokeError(f"engine {name} returned model directories without card.json: {dirs}")
    except Exception as exc:  # an engine's failure must not cost the baselines' results
        context.log(f"[bench] engine {name}: FAILED: {type(exc).__name__}: {exc}")
        return [ledger.put(StageRecord(name=name, method=name, role="one-off", status="failed", settings=settings,
                                       cpu_s=round(cpu_seconds() - cpu0, 1),
                                       wall_s=round(time.perf_counter() - wall0, 1),
                                       message=f"{type(exc).__name__}: {exc}"))]
    finally:
        used = sorted(context.teachers_used)
        context.teachers_used.update(before)
    total = cpu_seconds() - cpu0
    targets = [_target_record(name, d) for d in dirs]
    # preparation: what the call cost beyond the targets' own work, or, when the engine resumed work done in
    # an earlier run (not in this call's time), at least the shared costs its cards report
    prep = max(0.0, total - sum(r.cpu_s or 0.0 for r in targets), _shared_cost(dirs))
    record = ledger.put(StageRecord(name=name, method=name, role="one-off", status="done", dirs=dirs,
                                    cpu_s=round(prep, 1), wall_s=round(time.perf_counter() - wall0, 1),
                                    uses=used, message=f"{len(dirs)} model(s) delivered", settings=settings))
    context.log(f"[bench] engine {name}: done, {len(dirs)} model(s), {total:.0f} CPU-s")
    return [record, *targets]


def _shared_cost(dirs: list[str]) -> float:
    """Sum over shared cost keys of the largest value any card reports for it."""
    shared: dict[str, float] = {}
    for d in dirs:
        for key, value in read_card(d).cost_cpu_s.items():
            if is_shared_cost(key):
                shared[key] = max(shared.get(key, 0.0), float(value))
    return sum(shared.values())


def _target_record(engine: str, directory: str) -> StageRecord:
    card = read_card(directory)
    return StageRecord(name=f"{engine}:{card.target or Path(directory).name}", method=engine, role="per-target",
                       status="done", dirs=[directory], cpu_s=card_cost(card), target=card.target)
