"""Foundation acceptance benchmark (issue 2): fine-tune EfficientNet-Lite0 on Fashion-MNIST, export, verify, profile.

    .venv/bin/python benchmarks/foundation.py [--out runs/ft-lite0]

Runs (or resumes) ``bespoke finetune --model efficientnet_lite0 --data fashion-mnist --resolution 64 --epochs 2
--train-limit 6000``, measures the exported model on ``configs/targets.yaml`` (ONNX Runtime CPU, batch 1), and
writes ``benchmarks/results/foundation.json`` + ``foundation.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bespoke.bench.results import machine_info
from bespoke.export import CARD, read_card
from bespoke.pipeline import FinetuneJob, profile_model_dir, run_finetune
from bespoke.targets import load_targets
from bespoke.train import FinetuneConfig
from bespoke.utils.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ("bespoke finetune --model efficientnet_lite0 --data fashion-mnist --resolution 64 --epochs 2 "
           "--train-limit 6000 --out {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ft-lite0"))
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if not (args.out / CARD).is_file():
        run_finetune(FinetuneJob(model="efficientnet_lite0", data="fashion-mnist", resolution=64, train_limit=6000,
                                 out=args.out, train=FinetuneConfig(epochs=2)))
    card = profile_model_dir(args.out, load_targets(ROOT / "configs" / "targets.yaml"))
    card = read_card(args.out)
    doc = {
        "command": COMMAND.format(out=args.out), "machine": machine_info(),
        "accuracy": card.accuracy, "test_images": card.data.get("test"), "train_images": card.data.get("train"),
        "onnx_max_abs_diff": card.onnx_max_abs_diff, "params": card.params, "macs": card.macs,
        "latency_ms": card.latency_ms, "latency": card.latency, "cost_cpu_s": card.cost_cpu_s,
        "wall_s": card.provenance.get("wall_s"),
    }
    write_json(args.results / "foundation.json", doc)
    rows = "\n".join(f"| {name} | {m['value']:.3f} ms | {m['spread']:.1%} | {m['n']} |"
                     for name, m in card.latency.items())
    md = f"""# Foundation: fine-tune, export, verify, profile

Command: `{doc['command']}`, then `bespoke profile {args.out} --targets configs/targets.yaml`
(reproduce both: `.venv/bin/python benchmarks/foundation.py`). Machine: {doc['machine']['cpu']},
{doc['machine'].get('cores', '?')} cores, torch {doc['machine']['torch']}.

| figure | value |
|---|---|
| test top-1 (full {doc['test_images']}-image test split) | {card.accuracy:.4f} |
| training images | {doc['train_images']} |
| ONNX Runtime vs PyTorch max abs diff | {card.onnx_max_abs_diff:.2e} |
| params / MACs | {card.params:,} / {card.macs:,} |
| fine-tune cost | {card.cost_cpu_s.get('finetune')} CPU-s ({doc['wall_s']} s wall) |

Latency of the exported `model.onnx` (ONNX Runtime CPU, batch 1, 1 thread; median, spread = (p90 - p10) / median):

| target | median | spread | runs |
|---|---|---|---|
{rows}
"""
    write_text(args.results / "foundation.md", md)
    print(md)


if __name__ == "__main__":
    main()
