"""``bespoke supernet train|select``: thin layers over :func:`bespoke.supernet.train_supernet` and
:func:`bespoke.supernet.select_subnets` (the lead adds ``supernet_app`` to the main app)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

supernet_app = typer.Typer(help="TOFA: train one supernet on small, partly labelled data; pick a subnet per target "
                                "on the fly (no per-target training).", no_args_is_help=True)
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file setting any option of this "
                                                                       "command; command-line options override it.")]


@supernet_app.command("train")
def train(
    ctx: typer.Context,
    teacher: Annotated[str | None, typer.Option(help="model directory written by `bespoke finetune`, or a zoo name "
                                                "(required, here or as `teacher:` in --config)")] = None,
    data: Annotated[str, typer.Option(help="fashion-mnist | ImageFolder dir | CIFAR dir")] = "fashion-mnist",
    labels: Annotated[float, typer.Option(help="fraction of training images whose labels are used")] = 0.1,
    out: Annotated[Path, typer.Option(help="supernet directory to write (resumes if interrupted)")]
    = Path("runs/supernet"),
    resolution: Annotated[int | None, typer.Option(help="largest input size (default: the teacher's)")] = None,
    steps: Annotated[int, typer.Option(help="optimiser steps (sandwich rule)")] = 300,
    batch_size: Annotated[int, typer.Option(help="labelled images per step")] = 32,
    unlabelled_ratio: Annotated[int, typer.Option(help="unlabelled images per labelled image")] = 1,
    lr: Annotated[float, typer.Option(help="peak learning rate (AdamW, one-cycle)")] = 1e-3,
    threshold: Annotated[float, typer.Option(help="pseudo-label confidence threshold")] = 0.8,
    labelled_only: Annotated[bool, typer.Option("--labelled-only", help="ablation: use only the labelled part")]
    = False,
    soft_targets: Annotated[str, typer.Option(help="smaller subnets' targets: inplace (the largest subnet's "
                                              "predictions) | teacher (the teacher's of the clean images, e.g. a "
                                              "semi-supervised teacher's) | both (their mean)")] = "inplace",
    train_limit: Annotated[int | None, typer.Option(help="stratified subset of N training images")] = None,
    test_limit: Annotated[int | None, typer.Option(help="stratified subset of N test images")] = None,
    seed: Annotated[int, typer.Option(help="seed for splits, order, augmentation, subnet sampling")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    config: ConfigOpt = None,
) -> None:
    """Build a supernet from the teacher and train it once (cost independent of the number of targets).

    Example: bespoke supernet train --teacher runs/ft-lite2 --data fashion-mnist --labels 0.1 --out runs/sn
    Data-parallel: torchrun --nproc_per_node 2 -m bespoke.cli.main supernet train ... (--batch-size is global).
    """
    from bespoke.cli.config import resolve
    from bespoke.supernet import SupernetJob, train_supernet

    nested = {k: "train" for k in ("steps", "batch_size", "unlabelled_ratio", "lr", "threshold", "seed", "device",
                                   "semi_supervised", "soft_targets")}
    values = {"teacher": teacher, "data": data, "labels": labels, "out": out, "resolution": resolution,
              "train_limit": train_limit, "test_limit": test_limit, "steps": steps, "batch_size": batch_size,
              "unlabelled_ratio": unlabelled_ratio, "lr": lr, "threshold": threshold, "seed": seed, "device": device,
              "semi_supervised": not labelled_only, "soft_targets": soft_targets}
    if teacher is None:  # may come from --config; if from neither, validation says the teacher is required
        del values["teacher"]
    job = resolve(SupernetJob, _Renamed(ctx, {"semi_supervised": "labelled_only"}), config, values, nested=nested)
    result = train_supernet(job)  # data-parallel when launched by torchrun
    if os.environ.get("RANK", "0") != "0":
        return  # rank 0 reports
    ev = result.eval
    console.print(f"[green]done[/green] {result.out}: {result.steps} steps, {result.cpu_s:.0f} CPU-s; test top-1 "
                  f"largest {ev.get('largest_accuracy', float('nan')):.4f}, "
                  f"smallest {ev.get('smallest_accuracy', float('nan')):.4f}")


@supernet_app.command("select")
def select(
    ctx: typer.Context,
    supernet: Annotated[Path, typer.Argument(help="directory written by `bespoke supernet train`")],
    targets: Annotated[Path, typer.Option(help="targets.yaml (name, runtime, budget, ...)")],
    out: Annotated[Path, typer.Option(help="output folder: one model directory per target + report.md")]
    = Path("runs/tofa"),
    predictor_samples: Annotated[int, typer.Option(help="subnets measured to fit the accuracy predictor (once)")]
    = 200,
    eval_limit: Annotated[int | None, typer.Option(help="test images for the accuracy in each card")] = None,
    qat_epochs: Annotated[int, typer.Option(help="int8 targets: fine-tune the chosen subnet this many epochs under "
                                                 "fake quantization (label-free) before quantizing it; 0: PTQ only")]
    = 0,
    seed: Annotated[int, typer.Option(help="seed of sampling and evolution")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    config: ConfigOpt = None,
) -> None:
    """Pick, extract, recalibrate, export and measure one subnet per target (no training; an int8 target's subnet
    is quantized, after a short label-free fine-tune under fake quantization with --qat-epochs)."""
    from bespoke.cli.config import resolve
    from bespoke.supernet import SelectConfig, select_subnets

    values = {"predictor_samples": predictor_samples, "eval_limit": eval_limit, "qat_epochs": qat_epochs,
              "seed": seed, "device": device}
    cfg = resolve(SelectConfig, ctx, config, values)
    result = select_subnets(supernet, targets, out, config=cfg)
    table = Table("target", "budget", "measured", "meets", "test top-1", "search ms")
    for c in result.choices:
        budget = "-" if c.budget_resolved is None else f"{c.budget} = {c.budget_resolved:.4g} {c.unit}"
        table.add_row(c.target, budget, f"{c.measured_cost:.4g} {c.unit}", "yes" if c.meets_budget else "NO",
                      f"{c.accuracy:.4f}", f"{c.search_ms:.1f}")
    console.print(table)
    console.print(f"predictor Kendall tau {result.predictor.get('kendall_tau')}, RMSE {result.predictor.get('rmse')}"
                  f"; report: {result.out / 'report.md'}")


class _Renamed:
    """A click context whose parameter-source lookups map a model field to the CLI option that sets it."""

    def __init__(self, ctx: typer.Context, names: dict[str, str]) -> None:
        self._ctx, self._names = ctx, names

    def get_parameter_source(self, name: str) -> click.core.ParameterSource | None:
        return self._ctx.get_parameter_source(self._names.get(name, name))
