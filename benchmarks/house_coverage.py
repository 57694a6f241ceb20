"""How low a small house lets the search go: the smallest MACs a plan of ``--size`` alternatives can reach.

For each seed, plan a house (``bespoke.house.plan_house``, the planner ``bespoke house build`` runs), build every
alternative it made, and find the cheapest student by dynamic programming over non-overlapping spans (MACs of the
conv/linear layers; no distillation, no training). Compared across the span-order weight
(``SPAN_WEIGHT_POWER``: 0 = uniform, 1 = proportional to span MACs, 2 = squared, the default)::

    python benchmarks/house_coverage.py [--arch torchvision:shufflenet_v2_x0_5] [--size 8] [--seeds 8]

Writes benchmarks/results/house_coverage.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch

import bespoke.house.plan as plan_module
from bespoke.export import zoo_arch_config
from bespoke.graph import enumerate_spans
from bespoke.house import TEACHER, ProposalContext, SourceSet, build_alternative, plan_house
from bespoke.house.cost import layer_macs
from bespoke.utils.atomic import write_json, write_text
from bespoke.zoo import create_model

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ["donor", "prune", "lowrank", "skip"]
DONORS = ("efficientnet_lite0", "mobilenet_v2")


def _context(arch: str, resolution: int, max_span: int) -> tuple[SourceSet, ProposalContext]:
    def model(name: str) -> torch.nn.Module:
        torch.manual_seed(0)
        classes = 10 if name == TEACHER else 1000
        return create_model(arch if name == TEACHER else name, pretrained=False, num_classes=classes,
                            resolution=resolution).eval()

    configs = {TEACHER: zoo_arch_config(arch, 10, resolution), **{d: zoo_arch_config(d, 1000, resolution)
                                                                   for d in DONORS}}
    sources = SourceSet(configs, (3, resolution, resolution), model)
    return sources, ProposalContext(sources.segmentation(TEACHER), sources, DONORS, max_span)


def cheapest_fraction(sources: SourceSet, ctx: ProposalContext, size: int, seed: int) -> tuple[float, int]:
    """Smallest student MACs / teacher MACs a plan of ``size`` reaches, and how many alternatives were made."""
    teacher = ctx.teacher
    seg = [layer_macs(s, torch.zeros(1, *teacher.shapes[i])) for i, s in enumerate(teacher.segments)]
    plan = plan_house(enumerate_spans(teacher, ctx.max_span), ctx, KINDS, size, seed=seed)
    made = [p.recipe for p in plan.alternatives if p.error is None]
    alts = [(r.span, layer_macs(build_alternative(r, sources), torch.zeros(1, *r.in_shape))) for r in made]
    best = [0.0] + [float("inf")] * len(seg)
    for end in range(1, len(seg) + 1):
        best[end] = min([best[end - 1] + seg[end - 1], *(best[a] + m for (a, b), m in alts if b == end)])
    return best[-1] / sum(seg), len(made)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="torchvision:shufflenet_v2_x0_5")
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--max-span", type=int, default=3)
    ap.add_argument("--powers", default="0,1,2")
    a = ap.parse_args()
    torch.set_num_threads(1)
    sources, ctx = _context(a.arch, a.resolution, a.max_span)
    rows = []
    for power in [float(p) for p in a.powers.split(",")]:
        plan_module.SPAN_WEIGHT_POWER = power
        fractions = [cheapest_fraction(sources, ctx, a.size, seed)[0] for seed in range(a.seeds)]
        rows.append({"power": power, "fractions": [round(f, 4) for f in fractions],
                     "mean": round(statistics.mean(fractions), 4), "under_0.7x": sum(f <= 0.7 for f in fractions)})
        print(f"power {power:g}: mean {rows[-1]['mean']:.3f}, {rows[-1]['under_0.7x']}/{a.seeds} seeds <= 0.7x",
              flush=True)
    result = {"arch": a.arch, "size": a.size, "seeds": a.seeds, "resolution": a.resolution, "max_span": a.max_span,
              "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}", "rows": rows}
    write_json(RESULTS / "house_coverage.json", result)
    lines = [f"# Smallest MACs a house of {a.size} reaches ({a.arch}, random init, {a.resolution} px)", "",
             f"`python benchmarks/house_coverage.py --arch {a.arch} --size {a.size} --seeds {a.seeds}`; "
             "no training (MACs of conv/linear layers). Span order weight = span MACs ** power.", "",
             "| power | mean smallest / teacher MACs | seeds at or under 0.7x | per seed |", "|---|---|---|---|"]
    lines += [f"| {r['power']:g} | {r['mean']:.3f} | {r['under_0.7x']} / {a.seeds} | "
              f"{', '.join(f'{f:.3f}' for f in r['fractions'])} |" for r in rows]
    write_text(RESULTS / "house_coverage.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
