"""The reference teacher deployed in INT8 without the engines: post-training quantization, and quantization-aware
fine-tuning then quantization. The two baselines an engine's int8 model must beat.

    .venv/bin/python benchmarks/carry_run.py restore benchmarks/carry/fashion-mnist     # the Lite2 teacher
    .venv/bin/python benchmarks/teacher_int8.py [--run]                                 # --run: quantize first

``--run`` runs the two ``bespoke quantize`` commands below (about 10 and 15 minutes on 2 cores; each resumes);
without it the script only reads their INT8 model directories. Writes ``benchmarks/results/teacher_int8.{json,md}``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from bespoke.bench.results import machine_info
from bespoke.export import read_card
from bespoke.utils.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
TEACHER = Path("runs/bench-full/models/teacher")
TARGETS = Path("runs/int8-targets.yaml")
TARGET = "ort1-int8-0.5x"
TARGETS_YAML = f"""targets:
  - {{name: {TARGET}, runtime: onnxruntime, threads: 1, batch: 1, precision: int8, budget: 0.5x, repeats: 100}}
"""
VARIANTS = {
    "teacher PTQ": ["--out", "runs/teacher-int8"],
    "teacher QAT (1 epoch, 6,000 images) + PTQ": ["--out", "runs/teacher-qat", "--qat-epochs", "1",
                                                  "--train-limit", "6000"],
}


def command(extra: list[str]) -> list[str]:
    return [str(ROOT / ".venv/bin/bespoke"), "quantize", str(TEACHER), "--data", "fashion-mnist", "--targets",
            str(TARGETS), *extra]


def row(name: str, extra: list[str], fp32_accuracy: float) -> dict[str, Any]:
    out = Path(extra[extra.index("--out") + 1]) / TARGET
    card = read_card(out)
    q, d = card.quantization, card.delivery
    assert q is not None and d is not None and d.measured is not None and d.reference
    setting = f"{q.format} a:{q.activation_type} w:{q.weight_type}{' reduce_range' if q.reduce_range else ''}"
    setting += f" {q.calibration_method}" + (f", {len(q.nodes_excluded)} nodes fp32" if q.nodes_excluded else "")
    return {"variant": name, "command": "bespoke quantize " + " ".join(command(extra)[2:]), "dir": str(out),
            "setting": setting,
            "method": q.method, "teacher_fp32_top1": fp32_accuracy, "int8_top1": q.int8_accuracy,
            "delta_pt": round(100 * (q.int8_accuracy - fp32_accuracy), 2), "agreement": q.agreement,
            "int8_ms": round(d.measured, 4), "fp32_ms": round(d.reference, 4),
            "ratio": round(d.measured / d.reference, 4), "speedup": round(d.reference / d.measured, 3),
            "cpu_s": {k: v for k, v in card.cost_cpu_s.items() if k in ("qat", "quantize")}}


def markdown(result: dict[str, Any]) -> str:
    lines = ["# The reference teacher in INT8: PTQ and QAT + PTQ", "",
             f"EfficientNet-Lite2 teacher of the reference benchmark (Fashion-MNIST 64 px, fp32 test top-1 "
             f"{result['rows'][0]['teacher_fp32_top1']:.4f}), one int8 target (onnxruntime, 1 thread, batch 1). "
             f"Latency: the INT8 graph timed in alternation with the fp32 teacher (paired); top-1 on the full "
             f"10,000-image test split. Calibration: 256 training images; the setting is chosen on validation images "
             f"of `load_dataset('fashion-mnist')`'s own split (drawn from the 60,000-image training pool, so some were "
             f"in the teacher's training images: held-out accuracies in the logs read high). "
             f"{result['machine'].get('cpu', '')}, {result['machine'].get('cores', '')} cores.", "",
             "| variant | setting | top-1 int8 | vs fp32 | agreement | int8 ms | fp32 ms | x fp32 | CPU-s | command |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cpu = " + ".join(f"{k} {v:.0f}" for k, v in r["cpu_s"].items())
        lines.append(f"| {r['variant']} | {r['setting']} | {r['int8_top1']:.4f} | {r['delta_pt']:+.2f} pt | "
                     f"{r['agreement']:.4f} | {r['int8_ms']:.3f} | {r['fp32_ms']:.3f} | {r['ratio']:.2f}x "
                     f"({r['speedup']:.2f}x faster) | {cpu} | `{r['command']}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the bespoke quantize commands first")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if not (TEACHER / "card.json").is_file():
        sys.exit(f"{TEACHER} missing: restore it with benchmarks/carry_run.py restore benchmarks/carry/fashion-mnist")
    if args.run:
        TARGETS.write_text(TARGETS_YAML)
        for extra in VARIANTS.values():
            subprocess.run(command(extra), check=True)
    fp32 = read_card(TEACHER).accuracy
    assert fp32 is not None
    result = {"machine": machine_info(), "target": TARGET, "rows": [row(n, e, fp32) for n, e in VARIANTS.items()]}
    write_json(args.results / "teacher_int8.json", result)
    write_text(args.results / "teacher_int8.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
