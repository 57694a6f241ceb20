"""Training and inference throughput on CPU, plain (NCHW) vs channels-last (NHWC) weights and inputs.

    .venv/bin/python benchmarks/channels_last.py [--models efficientnet_lite2,efficientnet_lite0,mobilenet_v2]

Why ``bespoke.train.finetune``, block distillation and the supernet engine's subnet evaluations run in
channels-last (``bespoke.utils.device.channels_last``) and its supernet training does not: the zoo's MBConv
networks at 64 px, batch 64, AdamW steps and no-grad forward passes; and, on an EfficientNet-Lite2 supernet, one
TOFA sandwich step (``bespoke.supernet.train.sandwich_step``: the largest, the smallest and 2 random subnets on
32 labelled + 32 unlabelled images, + the AdamW step; sliced elastic weights gain nothing from NHWC) and one
subnet evaluation as the accuracy predictor's samples do it (``SubnetEvaluator``: BN recalibration on 256 images
+ top-1 on 400). Timed after warm-up, median of ``--steps`` (the same subnets in both layouts). Run it on an otherwise
idle machine; writes ``benchmarks/results/channels_last.json`` + ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
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


def supernet_timings(nhwc: bool, *, resolution: int, steps: int, warmup: int) -> dict[str, float]:
    """Seconds (wall and CPU) of a sandwich step and of a subnet evaluation on a Lite2 supernet, median."""
    from bespoke.supernet import SupernetTrainConfig, build_supernet
    from bespoke.supernet.calibrate import accuracy, recalibrate_bn
    from bespoke.supernet.train import sandwich_step
    from bespoke.train import cpu_seconds
    from bespoke.utils.device import channels_last

    torch.manual_seed(0)
    net = build_supernet(create_model("efficientnet_lite2", num_classes=10, resolution=resolution), resolution)
    cfg = SupernetTrainConfig(batch_size=32, n_random=2)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:
        return torch.randn(n, 3, resolution, resolution, generator=gen).contiguous(memory_format=fmt)

    def train_step(i: int) -> None:
        labelled = [images(32), images(32), torch.randint(0, 10, (32,), generator=gen)]
        opt.zero_grad()
        sandwich_step(net, labelled, [images(32), images(32)], cfg, i, torch.device("cpu"))
        opt.step()

    def evaluate(i: int) -> None:
        net.set_active_subnet(net.space.sample(np.random.default_rng(i)))
        sub = net.get_active_subnet()
        with channels_last(sub if nhwc else None):
            recalibrate_bn(sub, images(256))
            accuracy(sub, images(400), torch.randint(0, 10, (400,), generator=gen))

    result = {}
    for key, fn, mode in (("sandwich_step", train_step, True), ("subnet_eval", evaluate, False)):
        net.train(mode)
        wall, cpu = [], []
        with channels_last(net if nhwc and mode else None):
            for i in range(warmup + steps):
                t, c = time.perf_counter(), cpu_seconds()
                fn(i % steps)  # the same subnets in both layouts
                if i >= warmup:
                    wall.append(time.perf_counter() - t)
                    cpu.append(cpu_seconds() - c)
        result[f"{key}_s"] = round(statistics.median(wall), 3)
        result[f"{key}_cpu_s"] = round(statistics.median(cpu), 3)
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
    supernet = {"nchw": supernet_timings(False, resolution=args.resolution, steps=args.steps, warmup=args.warmup),
                "nhwc": supernet_timings(True, resolution=args.resolution, steps=args.steps, warmup=args.warmup)}
    print("supernet", supernet, flush=True)
    doc = {"command": "benchmarks/channels_last.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                                  if k != "results"),
           "machine": machine_info(), "threads": torch.get_num_threads(), "rows": rows, "supernet": supernet}
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
""" + "\n".join(lines) + f"""

Supernet engine (EfficientNet-Lite2 supernet, {args.resolution} px; seconds per call, median; CPU-s summed over
threads):

| work | NCHW s | NHWC s | NCHW CPU-s | NHWC CPU-s |
|---|---|---|---|---|
""" + "\n".join(_supernet_row(name, key, supernet) for name, key in (
        ("sandwich step (4 subnets, 32 + 32 images, AdamW)", "sandwich_step"),
        ("subnet evaluation (BN recalibration on 256 + top-1 on 400 images)", "subnet_eval"))) + "\n")


def _supernet_row(name: str, key: str, timings: dict[str, dict[str, float]]) -> str:
    a, b = timings["nchw"], timings["nhwc"]
    return (f"| {name} | {a[key + '_s']} | {b[key + '_s']} ({b[key + '_s'] / a[key + '_s'] - 1:+.0%}) | "
            f"{a[key + '_cpu_s']} | {b[key + '_cpu_s']} ({b[key + '_cpu_s'] / a[key + '_cpu_s'] - 1:+.0%}) |")


if __name__ == "__main__":
    main()
