"""How precise is paired timing? The same graph timed against itself (true ratio 1) over and over.

    .venv/bin/python benchmarks/paired_noise.py MODEL.onnx SAME_GRAPH.onnx [--trials 12] [--threads 1,2]

Two ONNX files of one architecture with different weights (e.g. a bench run's ``models/teacher`` and
``models/teacher-labelled``) take the same time, so every measured ratio's distance from 1 is the protocol's error.
Compared, at the bench's settings (warm-up 10, 100 timed runs of each model):

* ``passes``: the earlier protocol, a fresh session per visit and 2 visits per model (A B A B, 50 runs each);
* ``blocks``: ``bespoke.targets.time_alternating`` as it is now, sessions opened once, turns of ``BLOCK_RUNS``.
* ``blocks-per-turn``: the same samples, median of the ratios of adjacent turns (A's turn / B's next turn).

Writes ``benchmarks/results/paired_noise.json`` + ``.md``. Run it on an otherwise idle machine, or under a known load
to see how each protocol copes with it (``--note`` records which).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from bespoke.bench.results import machine_info
from bespoke.targets import Target, time_alternating, time_onnx
from bespoke.targets.paired import BLOCK_RUNS
from bespoke.utils.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def ratio_passes(a: Path, b: Path, target: Target, passes: int = 2) -> float:
    """The earlier protocol: each visit opens a fresh session, warms it up and times repeats / passes runs."""
    per = -(-target.repeats // passes)
    sa, sb = [], []
    for _ in range(passes):
        sa += time_onnx(a, target, per)
        sb += time_onnx(b, target, per)
    return float(np.median(sa) / np.median(sb))


def ratios_blocks(a: Path, b: Path, target: Target) -> tuple[float, float]:
    """``time_alternating``'s samples, two estimators: ratio of the medians (what ``measure_paired`` reports) and
    median of the per-turn ratios (each turn of A against the turn of B right after it)."""
    samples = time_alternating({"a": a, "b": b}, target)
    turns = [(samples["a"][i:i + BLOCK_RUNS], samples["b"][i:i + BLOCK_RUNS])
             for i in range(0, target.repeats, BLOCK_RUNS)]
    per_turn = [np.median(x) / np.median(y) for x, y in turns]
    return float(np.median(samples["a"]) / np.median(samples["b"])), float(np.median(per_turn))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("same_graph", type=Path)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--note", default="idle machine")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        target = Target(name=f"ort-{threads}t", runtime="onnxruntime", threads=threads, batch=1,
                        warmup=args.warmup, repeats=args.repeats)
        ratios: dict[str, list[float]] = {"passes": [], "blocks": [], "blocks-per-turn": []}
        for _ in range(args.trials):  # the protocols take turns, so both see the same stretch of the machine
            ratios["passes"].append(ratio_passes(args.model, args.same_graph, target))
            of_medians, per_turn = ratios_blocks(args.model, args.same_graph, target)
            ratios["blocks"].append(of_medians)
            ratios["blocks-per-turn"].append(per_turn)
        for protocol, values in ratios.items():
            row = {"threads": threads, "protocol": protocol, "trials": len(values),
                   "mean": round(statistics.fmean(values), 4), "sd": round(statistics.stdev(values), 4),
                   "max_abs_error": round(max(abs(v - 1.0) for v in values), 4),
                   "ratios": [round(v, 4) for v in values]}
            rows.append(row)
            print(f"{threads}T {protocol:15s} mean {row['mean']:.4f} sd {row['sd']:.4f} "
                  f"max|r-1| {row['max_abs_error']:.4f}", flush=True)
    doc = {"command": f"benchmarks/paired_noise.py {args.model} {args.same_graph} --trials {args.trials} "
                      f"--threads {args.threads}", "note": args.note, "block_runs": BLOCK_RUNS,
           "machine": machine_info(), "rows": rows}
    write_json(args.results / "paired_noise.json", doc)
    table = "\n".join(f"| {r['threads']} | {r['protocol']} | {r['trials']} | {r['mean']:.4f} | {r['sd']:.4f} | "
                      f"{r['max_abs_error']:.4f} |" for r in rows)
    write_text(args.results / "paired_noise.md", f"""# Paired timing: the same graph against itself

Command: `.venv/bin/python {doc['command']}` ({args.note}). Machine: {doc['machine']['cpu']},
{doc['machine'].get('cores', '?')} cores, onnxruntime {doc['machine']['onnxruntime']}. True ratio: 1. `passes`: a
fresh session per visit, 2 visits of 50 runs per model (the earlier protocol); `blocks`: sessions opened once,
turns of {BLOCK_RUNS} timed runs (now `bespoke.targets.time_alternating`), ratio of the two medians;
`blocks-per-turn`: the same samples, median of the ratios of adjacent turns. Warm-up {args.warmup},
{args.repeats} timed runs per model and measurement.

| threads | protocol | trials | mean ratio | sd | max abs error |
|---|---|---|---|---|---|
{table}
""")


if __name__ == "__main__":
    main()
