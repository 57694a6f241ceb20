"""``run_bench``: the whole benchmark, resumable stage by stage (see ``benchmarks/README.md``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bespoke.bench.baseline_stages import donor_stages, pruned_stages, ptq_stages, teacher_stages
from bespoke.bench.context import TEACHER, BenchContext
from bespoke.bench.costs import MethodCost, method_costs
from bespoke.bench.engines import EXPECTED_ENGINES, EngineStage, engine_stages, missing_reason, run_engine_stage
from bespoke.bench.measuring import measure_model_dir, measure_record, measurement_targets, prediction_on_scale
from bespoke.bench.preset import ENGINE_KEYS, BenchPreset, load_preset, section_name
from bespoke.bench.results import write_results
from bespoke.bench.stages import StageLedger, StageRecord
from bespoke.data import load_dataset, split_labelled
from bespoke.errors import BespokeError
from bespoke.export import read_card
from bespoke.report import LATENCY_1T, ResultRow, row_from_card
from bespoke.utils.atomic import write_json
from bespoke.utils.lock import locks_output

PRESET_SNAPSHOT = "preset.json"
ENGINE_SECTIONS = frozenset(section_name(e) for e in ENGINE_KEYS)


@dataclass
class BenchResults:
    """What ``run_bench`` produced: result rows, stage records, costs, engine status and the output files."""

    out: Path
    rows: list[ResultRow]
    records: list[StageRecord]
    costs: list[MethodCost]
    engines: dict[str, dict[str, str]]
    files: dict[str, Path] = field(default_factory=dict)


@locks_output("out")
def run_bench(preset: str | Path | BenchPreset = "fashion-mnist", out: str | Path = "benchmarks/results",
              smoke: bool = False, *, engines: Mapping[str, EngineStage] | None = None,
              remeasure: bool = False, redeliver: Sequence[str] = (),
              log: Callable[[str], None] = print) -> BenchResults:
    """Run (or resume) the benchmark ``preset`` into ``out``; write results.json, results.md, pareto.png.

    Every stage is skipped when its model directory is complete, so running the same command again after an
    interruption continues where it stopped. ``engines`` defaults to the registered engine stages.
    ``remeasure``: time every finished model again (not the reference teacher, whose value sets the budgets).
    ``redeliver``: engine stages whose delivered models are deleted and made again (search, retraining and
    delivery); their preparation (house, supernet, cost tables) is kept and resumed, not redone.
    """
    _check_engine_names(redeliver)
    spec = preset if isinstance(preset, BenchPreset) else load_preset(preset, smoke=smoke)
    out = Path(out)
    _claim_out_dir(out, spec, smoke, log)
    ctx = _make_context(spec, out, smoke, log)
    ctx.remeasure = remeasure
    ledger = StageLedger(out / "stages.json")
    _forget_deliveries(ledger, out, redeliver, log)
    records = teacher_stages(ctx, ledger) + donor_stages(ctx, ledger) + pruned_stages(ctx, ledger)
    records += ptq_stages(ctx, ledger)
    engine_status: dict[str, dict[str, str]] = {}
    registered = engine_stages()
    stages = dict(engines) if engines is not None else {n: registered[n] for n in spec.engines if n in registered}
    for name in dict.fromkeys([*EXPECTED_ENGINES, *(spec.engines if engines is None else ()), *stages]):
        if name not in stages:
            why = "not selected for this run" if name in registered else missing_reason(name)
            engine_status[name] = {"status": "not run", "message": why}
            log(f"[bench] {engine_status[name]['message']}")
            continue
        engine_records = run_engine_stage(ledger, name, stages[name], ctx)
        for record in engine_records[1:]:  # the delivered models (the first record is the engine's preparation)
            measure_record(ctx, record)
        records += engine_records
        head = engine_records[0]
        engine_status[name] = {"status": head.status, "message": head.message}
    rows = _measure_all(ctx, records)
    costs = method_costs(records)
    units = {t.name: t.unit for t in ctx.targets}
    write_results(out, preset=spec, smoke=smoke, rows=rows, records=records, costs=costs, budgets=ctx.budgets,
                  units=units, engines=engine_status)
    log(f"[bench] wrote {out / 'results.md'}")
    files = {k: out / k for k in ("results.json", "results.md", "pareto.png")}
    return BenchResults(out=out, rows=rows, records=records, costs=costs, engines=engine_status, files=files)


def _check_engine_names(engines: Sequence[str]) -> None:
    known = set(engine_stages()) | set(EXPECTED_ENGINES)
    unknown = [e for e in engines if e not in known]
    if unknown:
        raise BespokeError(f"unknown engine stage(s) to redeliver: {', '.join(unknown)}",
                           f"use one of: {', '.join(sorted(known))}")


def _forget_deliveries(ledger: StageLedger, out: Path, engines: Sequence[str], log: Callable[[str], None]) -> None:
    """Drop the named engine stages' records and delete the model directories they delivered (inside ``out``)."""
    root = out.resolve()
    for name in engines:
        record = ledger.drop(name)
        for directory in record.dirs if record else []:
            if Path(directory).resolve().is_relative_to(root):
                shutil.rmtree(directory, ignore_errors=True)
        log(f"[bench] engine {name}: " + (f"{len(record.dirs)} delivered model(s) deleted, delivering again"
                                          if record else "not run before"))


def _claim_out_dir(out: Path, spec: BenchPreset, smoke: bool, log: Callable[[str], None] = print) -> None:
    """Refuse to resume into a directory made with another preset (mixing runs would corrupt the results).

    Engine sections are left out: an engine stage reruns by itself when its settings change. Settings the
    code added after the run started (absent from its snapshot) do not block a resume: they are logged and
    the snapshot is brought up to date.
    """
    preset = spec.model_dump(mode="json", exclude={"smoke", "description", "engines", *ENGINE_SECTIONS})
    snapshot: dict[str, Any] = json.loads(json.dumps({"smoke": smoke, "preset": preset}))
    path = out / PRESET_SNAPSHOT
    if path.is_file():
        previous = json.loads(path.read_text())
        added: list[str] = []
        if _without_added(snapshot, previous, "", added) != previous:
            raise BespokeError(f"{out} holds a benchmark run with other settings (see {path})",
                               "use another --out, or delete that directory to start over")
        if added:
            log(f"[bench] settings added since this run started: {', '.join(added)}")
            write_json(path, snapshot)
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, snapshot)


def _without_added(current: Any, previous: Any, where: str, added: list[str]) -> Any:
    """``current`` less the dict keys ``previous`` lacks (recorded, dotted, in ``added``)."""
    if isinstance(current, dict) and isinstance(previous, dict):
        kept = {}
        for key, value in current.items():
            name = f"{where}.{key}" if where else key
            if key in previous:
                kept[key] = _without_added(value, previous[key], name, added)
            else:
                added.append(name)
        return kept
    if isinstance(current, list) and isinstance(previous, list) and len(current) == len(previous):
        pairs = enumerate(zip(current, previous, strict=True))
        return [_without_added(c, p, f"{where}[{i}]", added) for i, (c, p) in pairs]
    return current


def _make_context(spec: BenchPreset, out: Path, smoke: bool, log: Callable[[str], None]) -> BenchContext:
    splits = load_dataset(spec.data.spec, **spec.data.load_kwargs())
    labelled, unlabelled = split_labelled(splits.train, spec.data.label_fraction, spec.data.seed)
    log(f"[bench] data {splits.name}: train {len(splits.train)} ({len(labelled)} labelled), "  # type: ignore[arg-type]
        f"val {len(splits.val)}, test {len(splits.test)}, {spec.data.resolution} px")  # type: ignore[arg-type]
    return BenchContext(preset=spec, out=out, smoke=smoke, splits=splits, labelled=labelled, unlabelled=unlabelled,
                        targets=list(spec.targets), log=log)


def _measure_all(ctx: BenchContext, records: list[StageRecord]) -> list[ResultRow]:
    """Measure every delivered model once (cached in its card) and return the result rows in stage order."""
    targets = measurement_targets(ctx.preset.measure)
    directories = dict.fromkeys(d for r in records if r.status in ("done", "skipped") for d in r.dirs)
    cards = {d: measure_model_dir(d, targets, reference=ctx.teacher_dirs[TEACHER], test_set=ctx.splits.test,
                                  log=ctx.log) for d in directories}
    reference = read_card(ctx.teacher_dirs[TEACHER]).latency_ms.get(LATENCY_1T)
    rows = []
    for d, card in cards.items():
        row = row_from_card(card, d)
        rows.append(replace(row, pred_ms=prediction_on_scale(card, reference),
                            budget_value=ctx.budgets.get(row.target or "", row.budget_value)))
    return rows
