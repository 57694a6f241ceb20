"""Training and inference throughput on CPU, plain (NCHW) vs channels-last (NHWC) weights and inputs.

    .venv/bin/python benchmarks/channels_last.py [--models efficientnet_lite2,efficientnet_lite0,mobilenet_v2]

Why ``bespoke.train.finetune`` trains in channels-last (``bespoke.utils.device.channels_last``): the zoo's
MBConv networks at 64 px, batch 64, AdamW steps and no-grad forward passes, timed after warm-up steps, median of
``--steps``. Run it on an otherwise idle machine; writes ``benchmarks/results/channels_last.json`` + ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bespoke.bench.results import machine_info
from bespoke.utils.atomic import write_json, write_text
from bespoke.zoo import create_model

ROOT = Path(__file__).resolve().parents[1]


def throughput(name: str, nhwc: bool, *, batch: int, resolution: int, steps: int, warmup: int) -> dict[str, float]:
    """Images per second of a training step and of an inference pass (median over ``steps``)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, resolution=resolution)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, resolution, resolution).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def train_step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            model(x)

    result = {}
    for key, fn, mode in (("train_img_s", train_step, True), ("infer_img_s", infer, False)):
        model.train(mode)
        times = []
        for i in range(warmup + steps):
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times.append(time.perf_counter() - t)
        result[key] = round(batch / statistics.median(times), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite2,efficientnet_lite0,mobilenet_v2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        plain, nhwc = (throughput(name, f, batch=args.batch, resolution=args.resolution, steps=args.steps,
                                  warmup=args.warmup) for f in (False, True))
        rows.append({"model": name, "nchw": plain, "nhwc": nhwc})
        print(name, "NCHW", plain, "NHWC", nhwc, flush=True)
    doc = {"command": "benchmarks/channels_last.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                                  if k != "results"),
           "machine": machine_info(), "threads": torch.get_num_threads(), "rows": rows}
    write_json(args.results / "channels_last.json", doc)
    lines = [f"| {r['model']} | {r['nchw']['train_img_s']} | {r['nhwc']['train_img_s']} "
             f"({r['nhwc']['train_img_s'] / r['nchw']['train_img_s'] - 1:+.0%}) | {r['nchw']['infer_img_s']} | "
             f"{r['nhwc']['infer_img_s']} ({r['nhwc']['infer_img_s'] / r['nchw']['infer_img_s'] - 1:+.0%}) |"
             for r in rows]
    write_text(args.results / "channels_last.md", f"""# Channels-last on CPU

Command: `.venv/bin/python {doc['command']}`. Machine: {doc['machine']['cpu']}, {doc['machine'].get('cores', '?')}
cores, {doc['threads']} torch threads, torch {doc['machine']['torch']}. Images per second, batch {args.batch},
{args.resolution} px, median of {args.steps} steps after {args.warmup} warm-up steps.

| model | train NCHW | train NHWC | inference NCHW | inference NHWC |
|---|---|---|---|---|
""" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
