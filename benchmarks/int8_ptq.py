"""Teacher-PTQ baseline: real ImageNet weights fine-tuned briefly on Fashion-MNIST at 64 px, then quantized.

    PYTHONPATH=src .venv/bin/python benchmarks/int8_ptq.py [--models efficientnet_lite0,mobilenet_v2]
        [--train-limit 3000] [--epochs 1] [--test-limit 2000] [--work runs/int8_ptq]

Per model: ``run_finetune`` (resumes), then ``bespoke.quantize.quantize_model_dir`` for one int8 target
(onnxruntime, 1 thread, batch 1): fp32 vs int8 top-1 on the test split, their top-1 agreement, the paired speed-up
(int8 timed alternating with its fp32 twin) and the chosen settings. Writes ``benchmarks/results/int8_ptq.json`` +
``.md``. Latency figures on a shared machine are noisy; the paired ratio is the robust one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bespoke.bench.results import machine_info
from bespoke.export import read_card
from bespoke.pipeline import FinetuneJob, run_finetune
from bespoke.quantize import AGREEMENT_THRESHOLD, PTQSearch, quantize_model_dir
from bespoke.targets import Target
from bespoke.train import FinetuneConfig
from bespoke.utils.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v2")
    parser.add_argument("--train-limit", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--test-limit", type=int, default=2000)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "int8_ptq")
    parser.add_argument("--note", default="shared 2-core machine: latency figures are noisy")
    parser.add_argument("--name", default="int8_ptq", help="results file name under benchmarks/results/")
    parser.add_argument("--agreement", type=float, default=AGREEMENT_THRESHOLD)
    parser.add_argument("--weight-types", default="uint8,int8", help="candidate weight types")
    parser.add_argument("--methods", default="MinMax,Percentile,Entropy", help="candidate calibration methods")
    args = parser.parse_args()
    target = Target(name="cpu1-int8", runtime="onnxruntime", threads=1, batch=1, precision="int8")
    search = PTQSearch(weight_types=tuple(args.weight_types.split(",")), methods=tuple(args.methods.split(",")))
    rows = []
    for name in args.models.split(","):
        fp32_dir = args.work / name
        job = FinetuneJob(model=name, data="fashion-mnist", resolution=64, train_limit=args.train_limit,
                          test_limit=args.test_limit, out=fp32_dir, train=FinetuneConfig(epochs=args.epochs))
        run_finetune(job)
        written = quantize_model_dir(fp32_dir, "fashion-mnist", [target], args.work / f"{name}-int8",
                                     calibration=args.calibration, test_limit=args.test_limit,
                                     agreement_threshold=args.agreement, search=search, log=print)
        card = read_card(written[target.name])
        q = card.quantization
        assert q is not None
        ptq = card.provenance["ptq"]
        rows.append({"model": name, "fp32_top1": q.fp32_accuracy, "int8_top1": q.int8_accuracy,
                     "agreement": q.agreement, "speedup": ptq["speedup_vs_fp32"],
                     "int8_ms_on_fp32_scale": card.delivery.measured if card.delivery else None,
                     "fp32_ms_now": card.delivery.reference if card.delivery else None,
                     "settings": {"format": q.format, "weight_type": q.weight_type, "reduce_range": q.reduce_range,
                                  "calibration": q.calibration_method, "nodes_excluded": q.nodes_excluded},
                     "candidates": ptq["candidates"], "fp32_val_top1": ptq["fp32_val_accuracy"]})
        print(rows[-1])
    out = ROOT / "benchmarks" / "results" / args.name
    command = ("PYTHONPATH=src python benchmarks/int8_ptq.py --models " + args.models
               + f" --train-limit {args.train_limit} --epochs {args.epochs} --test-limit {args.test_limit}"
               + f" --name {args.name} --agreement {args.agreement} --weight-types {args.weight_types}"
               + f" --methods {args.methods}")
    write_json(out.with_suffix(".json"), {"command": command, "note": args.note, "machine": machine_info(),
                                          "target": target.model_dump(mode="json"), "rows": rows})
    lines = ["# Teacher PTQ at 64 px (Fashion-MNIST, 1 thread, batch 1)", "", f"`{command}`", "", args.note, "",
             "| model | fp32 top-1 | int8 top-1 | agreement | speed-up (paired) | settings |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        s = r["settings"]
        label = (f"{s['format']} w:{s['weight_type']}{' rr' if s['reduce_range'] else ''} {s['calibration']}"
                 f"{', ' + str(len(s['nodes_excluded'])) + ' nodes fp32' if s['nodes_excluded'] else ''}")
        lines.append(f"| {r['model']} | {r['fp32_top1']:.4f} | {r['int8_top1']:.4f} | {r['agreement']:.4f} | "
                     f"{r['speedup']:.2f}x | {label} |")
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
