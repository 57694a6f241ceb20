"""Which self-training recipe makes the best label-scarce teacher, per CPU-second, on the reference benchmark's data.

    .venv/bin/python benchmarks/semi_recipe.py --start runs/bench-full/models/teacher-labelled
        [--variants r3-e3,r2-e6,...] [--work runs/semi-recipe]

Every variant starts from the same labelled-share teacher (the reference benchmark's ``teacher-labelled``: Lite2
fine-tuned on its 1,200 labels) and trains on the benchmark's exact split (12,000 training images of which 10 %
labelled, the full 10,000-image test split) with ``bespoke.baselines.self_trained_teacher``; a variant with N
rounds reports the test top-1 after each round, so rounds are compared inside one run. Each variant is
resumable (its own folder under ``--work``). Writes ``benchmarks/results/semi_recipe.json`` + ``.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bespoke.baselines import TrainData, self_trained_teacher
from bespoke.bench.preset import load_preset
from bespoke.bench.results import machine_info
from bespoke.data import load_dataset, split_labelled
from bespoke.export import CARD, read_card
from bespoke.train import SemiSupervisedConfig, labelled_and_unlabelled
from bespoke.utils.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
#: variant -> settings of SemiSupervisedConfig (over the preset's semi_teacher.rounds)
VARIANTS: dict[str, dict[str, Any]] = {
    "r3-e3": {"rounds": 3, "epochs": 3},
    "r2-e6": {"rounds": 2, "epochs": 6},
    "r2-e3-kd0.9": {"rounds": 2, "epochs": 3, "kd_weight": 0.9},
    "r2-e3-T2": {"rounds": 2, "epochs": 3, "kd_temperature": 2.0},
    "r1-e3-pretrained": {"rounds": 1, "epochs": 3, "init": "pretrained"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=Path, required=True, help="the labelled-share teacher's model directory")
    parser.add_argument("--preset", default="fashion-mnist", help="the benchmark preset whose data and recipe to use")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "semi-recipe")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    preset = load_preset(args.preset)
    splits = load_dataset(preset.data.spec, **preset.data.load_kwargs())
    labelled, unlabelled = split_labelled(splits.train, preset.data.label_fraction, preset.data.seed)
    train = labelled_and_unlabelled(labelled, unlabelled)
    data = TrainData(train=train, test=splits.test, classes=list(splits.classes), resolution=preset.data.resolution,
                     info={"dataset": splits.name, "train": len(train), "labelled": len(labelled),
                           "unlabelled": len(unlabelled), "test": len(splits.test)})
    cfg = preset.train_config(preset.teacher)
    start = read_card(args.start)
    rows = []
    for name in args.variants.split(","):
        semi = SemiSupervisedConfig.model_validate({**preset.semi_teacher.rounds.model_dump(), **VARIANTS[name]})
        out = args.work / name
        if not (out / CARD).is_file():
            print(f"[semi-recipe] {name}: {semi.model_dump()}", flush=True)
            self_trained_teacher(args.start, labelled, unlabelled, data, cfg, semi, out, method=name)
        card = read_card(out)
        rounds = card.provenance["semi_supervised"]["rounds_run"]
        spent = 0.0
        for r in rounds[1:]:
            spent += r["cpu_s"]
            rows.append({"variant": name, "round": r["round"], "accuracy": r["accuracy"], "cpu_s": round(spent, 1),
                         "settings": VARIANTS[name]})
        print(f"[semi-recipe] {name}: " + ", ".join(f"round {r['round']} {r['accuracy']:.4f}" for r in rounds[1:]),
              flush=True)
    doc = {"command": "python benchmarks/semi_recipe.py --start " + str(args.start), "machine": machine_info(),
           "start": {"dir": str(args.start), "accuracy": start.accuracy}, "data": data.info, "rows": rows}
    write_json(args.results / "semi_recipe.json", doc)
    lines = ["# Self-training recipe of the label-scarce teacher", "",
             f"`{doc['command']}`; {doc['machine']['cpu']} ({doc['machine']['cores']} cores), "
             f"torch {doc['machine']['torch']}. Start: `{args.start}` (Lite2 on {len(labelled)} labels, test top-1 "
             f"{start.accuracy:.4f}); {len(unlabelled)} unlabelled images; full {len(splits.test)}-image test split. "
             "CPU-s: the rounds so far (the start's own fine-tune not counted).", "",
             "| variant | round | test top-1 | gain (pt) | CPU-s |", "|---|---|---|---|---|"]
    for r in rows:
        gain = 100 * (r["accuracy"] - (start.accuracy or 0.0))
        lines.append(f"| {r['variant']} | {r['round']} | {r['accuracy']:.4f} | {gain:+.2f} | {r['cpu_s']:.0f} |")
    write_text(args.results / "semi_recipe.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
