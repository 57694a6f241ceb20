"""Which soft targets TOFA's subnets should learn from, on the reference benchmark's label-scarce data.

    .venv/bin/python benchmarks/tofa_soft_targets.py --teacher runs/bench-full/models/teacher-semi \
        [--variants inplace,both,teacher] [--reuse both=runs/bench-full/engines/tofa/supernet] [--work DIR]

Every variant trains one supernet from the same teacher (the reference benchmark's ``teacher-semi``) with the
``fashion-mnist`` preset's ``tofa:`` recipe and data (12,000 training images of which 10 % labelled), changing only
``SupernetTrainConfig.soft_targets``: ``inplace`` (the largest subnet's own predictions, the original TOFA loss),
``teacher`` (the teacher's clean-image logits instead) or ``both`` (averaged, the largest subnet also distilled to
the teacher's). The proxy is the test top-1 of the largest and the smallest subnet after training (BN
recalibrated; the supernet's own final check on ``eval_images`` test images), and its training CPU-s. ``--reuse
NAME=DIR`` takes a supernet already trained with that variant's exact settings (the bench's ``tofa`` stage).
Resumable (one folder per variant under ``--work``). Writes ``benchmarks/results/tofa_soft_targets.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bespoke.bench.preset import load_preset
from bespoke.bench.results import machine_info
from bespoke.supernet import SupernetJob, train_supernet
from bespoke.utils.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("inplace", "both", "teacher")


def job_for(preset_name: str, teacher: Path, variant: str, out: Path) -> SupernetJob:
    """The bench's ``tofa`` stage job (same data, space and recipe) with ``soft_targets`` = ``variant``."""
    preset = load_preset(preset_name)
    data = preset.data.load_kwargs()
    settings = preset.stage_settings("tofa")
    train = {"seed": preset.data.seed, **settings.get("train", {}), "soft_targets": variant}
    return SupernetJob(data=preset.data.spec, labels=preset.data.label_fraction, resolution=preset.data.resolution,
                       train_limit=data["train_limit"], val_fraction=data["val_fraction"],
                       test_limit=data["test_limit"], teacher=str(teacher), out=out,
                       space=settings.get("space", {}), train=train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the semi-supervised teacher's model directory")
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--reuse", action="append", default=[], help="NAME=SUPERNET_DIR trained with NAME already")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "tofa-soft-targets")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    reuse = dict(item.split("=", 1) for item in args.reuse)
    rows: list[dict[str, Any]] = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}: use {', '.join(VARIANTS)}")
        out = Path(reuse[variant]) if variant in reuse else args.work / variant
        if variant in reuse:
            record = json.loads((out / "supernet.json").read_text())
            if record["job"]["train"]["soft_targets"] != variant:
                parser.error(f"{out} was trained with soft_targets {record['job']['train']['soft_targets']!r}")
        else:
            print(f"[soft-targets] {variant}: training -> {out}", flush=True)
            train_supernet(job_for(args.preset, args.teacher, variant, out))
            record = json.loads((out / "supernet.json").read_text())
        ev = record["eval"]
        rows.append({"variant": variant, "supernet": str(out), "largest": ev["largest_accuracy"],
                     "smallest": ev["smallest_accuracy"], "test_images": ev["test_images"],
                     "train_cpu_s": record["cost_cpu_s"]["supernet_train"], "train": record["job"]["train"]})
        print(f"[soft-targets] {variant}: largest {ev['largest_accuracy']:.4f}, smallest {ev['smallest_accuracy']:.4f}",
              flush=True)
    command = f"python benchmarks/tofa_soft_targets.py --teacher {args.teacher} --variants {args.variants}" + \
        "".join(f" --reuse {r}" for r in args.reuse)
    doc = {"command": command, "machine": machine_info(), "teacher": str(args.teacher), "rows": rows}
    write_json(args.results / "tofa_soft_targets.json", doc)
    m = doc["machine"]
    lines = ["# TOFA's soft targets: in-place, the semi-supervised teacher's, or both", "",
             f"`{command}`; {m['cpu']} ({m['cores']} cores), torch {m['torch']}. Teacher `{args.teacher}`; "
             f"the `{args.preset}` preset's TOFA recipe and data; only `soft_targets` changes. Top-1 of the largest "
             f"and smallest subnet on {rows[0]['test_images'] if rows else '-'} test images (BN recalibrated).", "",
             "| soft targets | largest top-1 | smallest top-1 | training CPU-s |", "|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['largest']:.4f} | {r['smallest']:.4f} | {r['train_cpu_s']:.0f} |" for r in rows]
    write_text(args.results / "tofa_soft_targets.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
