"""TOFA training length: (a) alone trained for ``--steps`` and selected for the study's three targets, compared
with the committed study's (a) and (c) (``benchmarks/results/tofa_study.json``).

    .venv/bin/python benchmarks/tofa_steps.py train --steps 600 --out runs/tofa-study-s600
    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/tofa_steps.py select --steps 600 \\
        --out runs/tofa-study-s600

``train`` trains the supernet with the study's recipe (``tofa_study.supernet_job``) but ``--steps``; ``select``
reuses the study's latency table (``--table-from``: same shapes, so the same budgets), fits the predictor and
delivers the three study targets, then writes ``RESULTS/tofa_steps_<N>.json`` + ``.md``. Both resume. Run
``select`` pinned to one core with nothing else running: it measures latency. (b) is not trained here: this
measures what more training buys (a) against (c), not the semi-supervised gain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tofa_study as study_mod

from bespoke.bench.results import machine_info
from bespoke.errors import BespokeError
from bespoke.supernet.store import read_meta
from bespoke.utils.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("phase", choices=["train", "select"])
    p.add_argument("--steps", type=int, required=True, help="supernet optimiser steps of (a)")
    p.add_argument("--out", type=Path, required=True, help="work folder (resumed)")
    p.add_argument("--teacher", default="runs/bench-full/models/teacher-labelled", help="teacher model directory")
    p.add_argument("--table-from", type=Path, default=Path("runs/tofa-study3/tofa/supernet"),
                   help="a supernet folder whose latency table is reused (same spec and space)")
    p.add_argument("--study", type=Path, default=ROOT / "benchmarks" / "results" / "tofa_study.json",
                   help="the committed study whose (a) and (c) rows are compared with")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    a = p.parse_args()
    args = study_mod.parse_args(["--teacher", a.teacher, "--out", str(a.out), "--steps", str(a.steps)])
    study = study_mod.open_study(args, print)
    root = study.dir("tofa")
    if a.phase == "train":
        job = study_mod.supernet_job(study, root / "supernet", semi_supervised=True)
        study.ledger.run("tofa:train", (root / "supernet" / study_mod.META_FILE).is_file(),
                         lambda: study_mod.train_supernet(job, data=study.source))
        return
    factors = {study_mod.factor_name("ort1", f): f for f in args.factors}
    targets = [study_mod.latency_target(args, name, f) for name, f in factors.items()]
    study_mod.record_trained(root / "supernet")
    study_mod.share_cost_tables(a.table_from, root / "supernet")
    sel = study_mod.select_step(study, "tofa:select", root / "supernet", targets, root / "models", None)
    doc = summarize(a, study, sel, json.loads(a.study.read_text()))
    write_json(a.results / f"tofa_steps_{a.steps}.json", doc)
    md = render(doc)
    write_text(a.results / f"tofa_steps_{a.steps}.md", md)
    print(md)


def summarize(a: argparse.Namespace, study: Any, sel: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """(a) at ``--steps`` beside the study's (a) and (c): top-1, latency, cost of K targets, break-even K."""
    meta = read_meta(study.dir("tofa") / "supernet")
    rows = {r["target"]: r for r in ref["methods"]["tofa"]["models"]}
    c_rows = {r["target"]: r for r in ref["methods"]["extract_finetune"]["models"]}
    models = [{"target": c["target"], "budget_ms": c["budget_resolved"], "latency_ms": c["measured_cost"],
               "meets_budget": c["meets_budget"], "accuracy": c["accuracy"], "attempts": c["attempts"],
               "cpu_s": c["cpu_s"], "study_tofa_accuracy": rows[c["target"]]["accuracy"],
               "study_extract_finetune_accuracy": c_rows[c["target"]]["accuracy"],
               "gain_vs_extract_finetune_points": round(100 * (c["accuracy"] - c_rows[c["target"]]["accuracy"]), 2)}
              for c in sel["choices"]]
    prep = {"teacher": study_mod.teacher_cost(study), "supernet_train": meta.cost_cpu_s["supernet_train"],
            "predictor": float(sel["predictor"]["cpu_s"]),
            "cost_table": float(study_mod.table_info(study.dir("tofa") / "supernet").get("cpu_s", 0.0))}
    per_target = [m["cpu_s"] for m in models]
    cost = study_mod.cost_of_k(prep, per_target, basis=f"selection of the {len(models)} study targets")
    c_cost = ref["methods"]["extract_finetune"]["cost"]
    return {"command": f"benchmarks/tofa_steps.py select --steps {a.steps} --out {a.out}", "machine": machine_info(),
            "steps": a.steps, "supernet_eval": meta.eval, "predictor": sel["predictor"], "models": models,
            "cost": cost, "study_tofa_steps": ref["settings"]["steps"],
            "study_ft_epochs": ref["settings"]["ft_epochs"], "extract_finetune_cost": c_cost,
            "break_even_k": study_mod.break_even(cost, c_cost),
            f"cheaper_at_k{study_mod.K_VALUES[-1]}": study_mod.cheaper_at(cost, c_cost, study_mod.K_VALUES[-1]),
            "beats_extract_finetune_everywhere": all(m["gain_vs_extract_finetune_points"] > 0 for m in models)}


def render(doc: dict[str, Any]) -> str:
    ev, c = doc["supernet_eval"], doc["cost"]
    lines = [f"# TOFA (a) trained for {doc['steps']} steps", "",
             f"Command: `.venv/bin/python {doc['command']}` (train phase first, at two threads). Machine: "
             f"{doc['machine']['cpu']}, torch {doc['machine']['torch']}. Supernet after training (test top-1, 1000 "
             f"images): largest {ev['largest_accuracy']}, smallest {ev['smallest_accuracy']}. Predictor: Kendall tau "
             f"{doc['predictor']['kendall_tau']}, RMSE {doc['predictor']['rmse']}.", "",
             f"| target | budget ms | latency ms | met | top-1 ({doc['steps']} steps) | study (a), "
             f"{doc['study_tofa_steps']} steps | study (c), {doc['study_ft_epochs']}-epoch fine-tune | vs (c) | "
             "CPU-s |", "|---|---|---|---|---|---|---|---|---|"]
    for m in doc["models"]:
        lines.append(f"| {m['target']} | {m['budget_ms']:.4f} | {m['latency_ms']:.4f} | "
                     f"{'yes' if m['meets_budget'] else 'no'} | {m['accuracy']:.4f} | {m['study_tofa_accuracy']:.4f} "
                     f"| {m['study_extract_finetune_accuracy']:.4f} | {m['gain_vs_extract_finetune_points']:+.2f} | "
                     f"{m['cpu_s']:.1f} |")
    p, cc = c["preparation_cpu_s"], doc["extract_finetune_cost"]
    lines += ["", f"Cost (CPU-s): teacher {p['teacher']:.0f} + supernet training {p['supernet_train']:.0f} + "
              f"predictor {p['predictor']:.0f} + latency table {p['cost_table']:.0f}, then "
              f"{c['per_target_cpu_s']:.1f} per target (mean of the study targets); K = 1 / 5 / 20: "
              + " / ".join(f"{c['total_cpu_s'][k]:.0f}" for k in ("1", "5", "20"))
              + " against (c)'s " + " / ".join(f"{cc['total_cpu_s'][k]:.0f}" for k in ("1", "5", "20"))
              + f"; (a) is cheaper from K = {doc['break_even_k']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except BespokeError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        sys.exit(2)
