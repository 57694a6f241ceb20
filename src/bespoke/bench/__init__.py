"""The benchmark: ``run_bench(preset, out, smoke)`` runs the teacher, donors, pruned + KD baselines and the
registered engines on one preset, measures every delivered model the same way, and writes results.

Engines plug in with ``register_engine_stage(name, fn)``; ``fn(context: BenchContext) -> list[Path]``.
"""

from bespoke.bench.context import BenchContext
from bespoke.bench.costs import MethodCost, method_costs
from bespoke.bench.engine_adapters import register_builtin_engines
from bespoke.bench.engines import EXPECTED_ENGINES, EngineStage, engine_stages, register_engine_stage
from bespoke.bench.preset import BenchPreset, deep_merge, list_presets, load_preset
from bespoke.bench.run import BenchResults, run_bench
from bespoke.bench.stages import StageLedger, StageRecord, run_model_stage

register_builtin_engines()  # the block engine and TOFA (imported only when their stage runs)

__all__ = [
    "EXPECTED_ENGINES",
    "BenchContext",
    "BenchPreset",
    "BenchResults",
    "EngineStage",
    "MethodCost",
    "StageLedger",
    "StageRecord",
    "deep_merge",
    "engine_stages",
    "list_presets",
    "load_preset",
    "method_costs",
    "register_builtin_engines",
    "register_engine_stage",
    "run_bench",
    "run_model_stage",
]
