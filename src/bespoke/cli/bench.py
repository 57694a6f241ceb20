"""``bespoke bench``: a thin layer over :func:`bespoke.bench.run_bench` (the lead wires it into the app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def bench_command(
    preset: Annotated[str, typer.Option(help="preset name (bespoke/presets/<name>.yaml) or a YAML path")]
    = "fashion-mnist",
    smoke: Annotated[bool, typer.Option("--smoke", help="every stage on tiny data (~5 min): plumbing check")]
    = False,
    out: Annotated[Path | None, typer.Option(help="results folder [default: benchmarks/results, or "
                                                   "runs/bench-smoke with --smoke]")] = None,
    remeasure: Annotated[bool, typer.Option("--remeasure", help="time every finished model once more: the "
                                            "reading joins the earlier ones and the table shows their median "
                                            "(run it again for more readings); the reference teacher keeps its "
                                            "value, so the budgets stay")] = False,
    redeliver: Annotated[str, typer.Option(help="comma-separated engine stages (bespoke, tofa, ...) whose "
                                           "delivered models are deleted and made again: search, retraining "
                                           "and delivery rerun, the house / supernet and cost tables are "
                                           "kept")] = "",
) -> None:
    """Run (or resume) a benchmark: teacher, donors, pruned + KD baselines, the engines; measure every model.

    Writes OUT/results.json, OUT/results.md and OUT/pareto.png. Re-running the same command resumes. The full
    run takes hours on a few CPU cores: start it in the background, e.g.
    nohup bespoke bench --preset fashion-mnist --out benchmarks/results > bench.log 2>&1 &
    """
    from bespoke.bench import run_bench

    target = out or Path("runs/bench-smoke" if smoke else "benchmarks/results")
    engines = [e.strip() for e in redeliver.split(",") if e.strip()]
    result = run_bench(preset, target, smoke, remeasure=remeasure, redeliver=engines)
    typer.echo(f"done: {result.files['results.md']} ({len(result.rows)} models)")
