"""How well does the shared cost model (bespoke.cost) predict delivered models? No training needed: latency does
not depend on trained weights.

    .venv/bin/python benchmarks/cost_model.py [--out runs/cost-model] [--house-size 12] [--calibration 10] \
        [--precision int8]

The reference teacher architecture (EfficientNet-Lite2 from the zoo with its ImageNet weights, 64 px, 10 classes):

* (a) TOFA: converted to a supernet (``build_supernet``), its cost table on ``ort1`` (onnxruntime, 1 thread,
  batch 1; ``build_cost_table``), then per target (0.7x / 0.5x / 0.35x of the largest subnet) evolutionary search
  with the largest-under-the-limit fitness a trained accuracy predictor approximates, each pick measured against
  the largest subnet as delivery does, the limit moved by the shared ``BudgetBracket``;
* (b) the block engine: a small house (``build_house``, few alternatives, tiny distillation on Fashion-MNIST), then
  ``search_target`` for the same three targets (anneal, measure against the teacher, retry).

Prints and writes, per engine and target, the delivered pick's predicted vs measured median (on the reference's
scale), relative error, attempts, and the table's leave-one-out error: ``benchmarks/results/cost_model.json`` + ``.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bespoke.bench.results import machine_info
from bespoke.delivery import Attempt, BudgetBracket, Reference, RetryPolicy, measure_against
from bespoke.errors import BespokeError
from bespoke.export import zoo_arch_config
from bespoke.supernet import build_cost_table, build_supernet, evolve, extract_subnet
from bespoke.supernet.genome import GenomeLayout
from bespoke.targets import Budget, Target
from bespoke.utils.atomic import write_json, write_text
from bespoke.zoo import create_model

ROOT = Path(__file__).resolve().parents[1]
TEACHER, RESOLUTION, CLASSES = "efficientnet_lite2", 64, 10
FACTORS = (0.7, 0.5, 0.35)
#: int8 budgets, fractions of the fp32 reference as on fp32 targets (a quantized EfficientNet-Lite2 is ~0.5x)
INT8_FACTORS = (0.5, 0.35, 0.25)


#: fp32 or int8 (set by --precision): an int8 target times every part, reference and pick statically quantized; its
#: relative budgets stay fractions of the fp32 reference
PRECISION = ["fp32"]


def targets() -> list[Target]:
    tag = "" if PRECISION[0] == "fp32" else f"{PRECISION[0]}-"
    factors = FACTORS if PRECISION[0] == "fp32" else INT8_FACTORS
    return [Target(name=f"ort1-{tag}{f}x", runtime="onnxruntime", threads=1, batch=1, precision=PRECISION[0],
                   budget=Budget.parse(f"{f}x")) for f in factors]


def teacher() -> torch.nn.Module:
    """ImageNet weights (offline, quick to load), a fresh 10-class head. Latency does not depend on the weights'
    values as long as activations stay normal floats: in a randomly initialised network they can decay into
    subnormal numbers deep down, which CPUs compute many times slower, and whole-model timings stop being a
    function of the architecture."""
    torch.manual_seed(0)
    return create_model(TEACHER, pretrained=True, num_classes=CLASSES, resolution=RESOLUTION).eval()


def row(engine: str, target: Target, budget: float, predicted: float, measured: float, attempts: int,
        loo: float | None) -> dict[str, Any]:
    out = {"engine": engine, "target": target.name, "budget_ms": round(budget, 4), "predicted_ms": round(predicted, 4),
           "measured_ms": round(measured, 4), "rel_err": round((predicted - measured) / measured, 4),
           "meets_budget": measured <= budget, "attempts": attempts,
           "loo_max_abs": None if loo is None else round(loo, 4)}
    print(f"{engine:6s} {target.name:10s} budget {budget:.3f} predicted {predicted:.3f} measured {measured:.3f} ms "
          f"({100 * out['rel_err']:+.1f} %), {attempts} attempt(s), LOO max {loo}", flush=True)
    return out


def tofa_rows(out: Path, calibration: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    t0 = time.perf_counter()
    net = build_supernet(teacher(), RESOLUTION).eval()
    space, largest, smallest = net.space, net.space.largest(), net.space.smallest()
    base = targets()[0]
    costs = build_cost_table(net.spec, space, base, out / "supernet-latency", calibration_subnets=calibration,
                             extract=lambda c: extract_subnet(net, c).cpu().eval())
    info = {"parts": len(costs.table.parts), "calibration_points": len(costs.table.calibration),
            "line": list(costs.table.line), "loo_after_calibration": costs.table.loo.model_dump(),
            "table_cpu_s": round(costs.table.cost_cpu_s, 1), "reference_ms": costs.reference}
    reference = Reference(extract_subnet(net, largest).cpu().eval(), largest.resolution, costs.reference)
    layout = GenomeLayout(space)
    rows = []
    for target in targets():
        budget = float(target.resolve_budget(costs.budget_base))
        cost = costs.genome_cost(space)
        bracket = BudgetBracket(RetryPolicy(), budget, floor=float(cost(layout.encode(smallest)[None, :])[0]))
        while True:
            cost = costs.genome_cost(space)  # the line moves with every delivered pick
            try:
                best = evolve(space, fitness=cost, cost=cost, budget=bracket.limit, unit="ms", population=64,
                              generations=20, seed=0).best
            except BespokeError:  # under the smallest subnet's prediction: it is the last pick to try
                best = smallest
            if bracket.tried(best.key()):
                break
            predicted = float(costs.predict([best])[0])
            loo = costs.table.loo.max_abs
            m, _ = measure_against(extract_subnet(net, best).cpu().eval(), reference, target, best.resolution)
            costs.add_point(best, m.value, "delivered")
            attempt = Attempt(best.key(), bracket.limit, predicted, m.value, predicted, {"loo": loo})
            if bracket.record(attempt, cheapest=best == smallest):
                break
        if not bracket.attempts:
            rows.append({"engine": "tofa", "target": target.name, "error": "no pick", "loo_max_abs": None})
            continue
        chosen = bracket.best or min(bracket.attempts, key=lambda a: a.measured)
        rows.append(row("tofa", target, budget, chosen.predicted, chosen.measured, len(bracket.attempts),
                        chosen.info["loo"]))
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    return rows, info


def block_rows(out: Path, size: int, distill_steps: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from bespoke.house import build_house, build_latency_table
    from bespoke.search import search_target

    t0 = time.perf_counter()
    house = build_house(teacher(), teacher_config=zoo_arch_config(TEACHER, CLASSES, RESOLUTION), donors=[],
                        kinds=("prune", "lowrank", "skip"), data="fashion-mnist", out=out / "house", size=size,
                        max_span=3, distill_steps=distill_steps, train_limit=512, test_limit=256,
                        resolution=RESOLUTION, pretrained_donors=False, seed=0)
    costs = build_latency_table(house, targets()[0])
    info = {"alternatives": len(costs.alternative_keys), "parts": len(costs.table.parts),
            "calibration_points": len(costs.table.calibration), "line": list(costs.table.line),
            "loo_after_calibration": costs.table.loo.model_dump(), "reference_ms": costs.teacher,
            "table_cpu_s": round(costs.table.cost_cpu_s, 1)}
    rows = []
    for target in targets():
        loo = build_latency_table(house, target).table.loo.max_abs
        try:
            found = search_target(house, target, data="fashion-mnist", eval_images=128)
        except BespokeError as exc:  # out of the house's reach, or missed after export by every student tried
            print(f"block  {target.name}: {exc.message}", flush=True)
            rows.append({"engine": "block", "target": target.name, "error": exc.message, "loo_max_abs": loo})
            continue
        entry = next(r for r in found.rounds if r["alternatives"] == found.alternatives)
        rows.append(row("block", target, found.budget_resolved, entry["predicted"], entry["measured_on_table_scale"],
                        len(found.rounds), loo))
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    return rows, info


def markdown(result: dict[str, Any]) -> str:
    precision = result.get("precision", "fp32")
    title = "" if precision == "fp32" else f", {precision} targets (parts, reference and picks timed quantized)"
    lines = [f"# Cost model: predicted vs measured (delivered picks){title}", "",
             f"Command: `{result['command']}`; {result['machine'].get('cpu', '')}; measured on a shared, noisy "
             "machine unless noted.", "",
             "| engine | target | budget ms | predicted ms | measured ms | rel. err | meets | attempts | LOO max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['engine']} | {r['target']} | {r['error']} | | | | | | |")
            continue
        loo = "-" if r["loo_max_abs"] is None else f"{100 * r['loo_max_abs']:.1f} %"
        lines.append(f"| {r['engine']} | {r['target']} | {r['budget_ms']:.3f} | {r['predicted_ms']:.3f} | "
                     f"{r['measured_ms']:.3f} | {100 * r['rel_err']:+.1f} % | {'yes' if r['meets_budget'] else 'NO'} "
                     f"| {r['attempts']} | {loo} |")
    for engine, info in result["tables"].items():
        lines += ["", f"- {engine}: " + ", ".join(f"{k} {v}" for k, v in info.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "cost-model")
    parser.add_argument("--house-size", type=int, default=16)
    parser.add_argument("--distill-steps", type=int, default=10)
    parser.add_argument("--calibration", type=int, default=10)
    parser.add_argument("--engines", nargs="+", default=["block", "tofa"], choices=["tofa", "block"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    PRECISION[0] = args.precision
    torch.set_num_threads(2)
    np.random.seed(0)
    rows, tables = [], {}
    for engine in args.engines:
        r, tables[engine] = (tofa_rows(args.out, args.calibration) if engine == "tofa"
                             else block_rows(args.out, args.house_size, args.distill_steps))
        rows += r
    result = {"command": "python benchmarks/cost_model.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "results")
                  and not isinstance(v, list)),
              "machine": machine_info(), "precision": args.precision, "rows": rows, "tables": tables}
    name = "cost_model" if args.precision == "fp32" else f"cost_model_{args.precision}"
    write_json(args.results / f"{name}.json", result)
    write_text(args.results / f"{name}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
