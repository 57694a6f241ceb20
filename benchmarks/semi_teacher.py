"""Semi-supervised teacher proxy: labelled-only fine-tune vs rounds of distillation over the unlabelled share.

    .venv/bin/python benchmarks/semi_teacher.py [--model efficientnet_lite0] [--train-limit 6000] [--labels 0.1]
        [--work runs/semi-teacher]

Every variant starts from the same labelled-only fine-tune (round 0: ``--epochs`` over the labelled share, the
ImageNet-pretrained zoo model, 64 px Fashion-MNIST, full test split) and adds one distillation round of
``--round-epochs`` over all training images (``bespoke.train.semi_supervised_finetune``); the variants differ in
where the teacher's targets come from (``teacher_view``: the clean image / the student's augmented view) and what
the student starts from (``init``: the pretrained model / the round-0 model). Each variant is a resumable
``run_finetune`` job; round 0 is trained once and its checkpoint copied into every variant. Writes
``benchmarks/results/semi_teacher.json`` + ``.md``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from bespoke.bench.results import machine_info
from bespoke.export import read_card
from bespoke.pipeline import FinetuneJob, run_finetune
from bespoke.train import FinetuneConfig, SemiSupervisedConfig
from bespoke.utils.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
#: variant -> (its folder under --work, the semi-supervised settings; None: labelled only)
VARIANTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "labelled-only": ("labelled_only", None),
    "same-view/from-pretrained": ("semi-same_view-from_pretrained", {"teacher_view": "same", "init": "pretrained"}),
    "clean-view/from-pretrained": ("semi-clean_view-from_pretrained", {"teacher_view": "clean",
                                                                       "init": "pretrained"}),
    "clean-view/from-round0": ("semi-clean_view-from_round_0", {"teacher_view": "clean", "init": "teacher"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--train-limit", type=int, default=6000)
    parser.add_argument("--labels", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5, help="round 0: passes over the labelled share")
    parser.add_argument("--round-epochs", type=int, default=2, help="passes over all images per round")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "semi-teacher")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    rows = []
    round0 = None
    for name in args.variants.split(","):
        folder, semi = VARIANTS[name]
        out = args.work / folder
        job = FinetuneJob(model=args.model, data="fashion-mnist", resolution=64, train_limit=args.train_limit,
                          labels=args.labels, out=out, train=FinetuneConfig(epochs=args.epochs),
                          semi_supervised=None if semi is None else SemiSupervisedConfig(
                              rounds=1, epochs=args.round_epochs, **semi))
        if semi is not None and round0 is not None:  # the shared labelled-only round, trained once
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            if not (out / "checkpoints" / "semi-round0.pt").exists():
                shutil.copy2(round0, out / "checkpoints" / "semi-round0.pt")
        run_finetune(job)
        if semi is not None and round0 is None:
            round0 = out / "checkpoints" / "semi-round0.pt"
        card = read_card(out)
        info = card.provenance.get("semi_supervised") or {}
        rows.append({"variant": name, "settings": semi, "test_top1": card.accuracy,
                     "rounds": info.get("rounds_run"), "cost_cpu_s": sum(card.cost_cpu_s.values()),
                     "labelled": card.data.get("labelled"), "unlabelled": card.data.get("unlabelled"),
                     "test": card.data.get("test")})
        print(f"{name}: top-1 {card.accuracy:.4f}, {rows[-1]['cost_cpu_s']:.0f} CPU-s", flush=True)
    command = (f"python benchmarks/semi_teacher.py --model {args.model} --train-limit {args.train_limit} "
               f"--labels {args.labels} --epochs {args.epochs} --round-epochs {args.round_epochs}")
    doc = {"command": command, "machine": machine_info(), "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "semi_teacher.json", doc)
    write_text(args.results / "semi_teacher.md", render(doc))


def render(doc: dict[str, Any]) -> str:
    """The results as a markdown table with the command and machine."""
    m = doc["machine"]
    lines = ["# Semi-supervised teacher proxy", "", f"`{doc['command']}`; {m['cpu']} ({m['cores']} cores), "
             f"torch {m['torch']}.", "", "| variant | labelled / unlabelled | test top-1 | round 0 top-1 | CPU-s |",
             "|---|---|---|---|---|"]
    for r in doc["rows"]:
        r0 = r["rounds"][0]["accuracy"] if r["rounds"] else None
        lines.append(f"| {r['variant']} | {r['labelled'] or '-'} / {r['unlabelled'] or '-'} | "
                     f"{r['test_top1']:.4f} | {'-' if r0 is None else f'{r0:.4f}'} | {r['cost_cpu_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
