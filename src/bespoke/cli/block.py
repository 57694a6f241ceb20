"""CLI of the block engine: ``bespoke house build`` and ``bespoke search`` (thin layers over bespoke.search).

The lead's main app wires them in::

    from bespoke.cli.block import house_app, search_command
    app.add_typer(house_app, name="house")
    app.command("search")(search_command)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bespoke.utils.lock import locks_output

house_app = typer.Typer(help="Model houses: alternatives for every span of a teacher (block engine).",
                        no_args_is_help=True)
console = Console()


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@house_app.command("build")
def build_command(
    teacher: Annotated[str, typer.Option(help="model directory of `bespoke finetune`, or a zoo name")],
    data: Annotated[str, typer.Option(help="fashion-mnist | ImageFolder dir | CIFAR dir")],
    out: Annotated[Path, typer.Option(help="house directory (resumes if interrupted)")],
    donors: Annotated[str, typer.Option(help="comma-separated zoo names of donor networks")]
    = "efficientnet_lite0,mobilenet_v2",
    targets: Annotated[Path | None, typer.Option(help="targets YAML: measure latency tables now")] = None,
    size: Annotated[int, typer.Option(help="alternatives to sample (50-500)")] = 100,
    max_span: Annotated[int, typer.Option(help="longest replaced span, in segments")] = 3,
    distill_steps: Annotated[int, typer.Option(help="block-distillation steps per alternative")] = 200,
    kinds: Annotated[str, typer.Option(help="alternative kinds: donor,prune,lowrank,skip")]
    = "donor,prune,lowrank,skip",
    group_size: Annotated[int, typer.Option(help="alternatives trained from one shared teacher pass")] = 16,
    batch_size: Annotated[int, typer.Option(help="images per distillation step")] = 32,
    train_limit: Annotated[int | None, typer.Option(help="use a stratified subset of N training images")] = None,
    resolution: Annotated[int | None, typer.Option(help="input size when --teacher is a zoo name")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="seed of sampling, initialisation and batches")] = 0,
    executor: Annotated[str, typer.Option(help="where groups are distilled: local | ray (one Ray task per group)")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to use with --executor ray (e.g. auto, "
                                                         "host:6379); default: start one on this machine")] = None,
    task_cpus: Annotated[int, typer.Option(help="CPUs (= torch threads) each Ray task reserves")] = 1,
    task_gpus: Annotated[float | None, typer.Option(help="GPUs each Ray task reserves (e.g. 1, or 0.5 to share); "
                                                        "default 1 with --device cuda, else 0")] = None,
    max_retries: Annotated[int, typer.Option(help="reruns of a Ray task whose worker died")] = 3,
) -> None:
    """Build a model house once: sample alternatives, distil each block, measure latency tables."""
    from bespoke.distill import DistillConfig
    from bespoke.search import build_house
    from bespoke.utils.executor import make_executor

    gpus = task_gpus if task_gpus is not None else (1.0 if device.startswith("cuda") else 0.0)
    ex = make_executor(executor, address=ray_address, num_cpus=task_cpus, num_gpus=gpus, max_retries=max_retries)
    cfg = DistillConfig(steps=distill_steps, group_size=group_size, batch_size=batch_size, device=device, seed=seed)
    house = build_house(teacher, donors=_split(donors), data=data, out=out, targets=targets, size=size,
                        max_span=max_span, distill_steps=distill_steps, seed=seed, kinds=_split(kinds),
                        distill=cfg, train_limit=train_limit, resolution=resolution, executor=ex)
    counts = house.index.counts()
    mem = house.index.memory
    console.print(f"[green]house[/green] {out}: {counts.get('done', 0)} alternatives trained, "
                  f"{counts.get('diverged', 0)} diverged, {counts.get('failed', 0)} failed; "
                  f"peak RSS {mem.get('max_rss_mb', 0):.0f} MB, batch activations "
                  f"{mem.get('batch_activation_bytes', 0) / 2**20:.1f} MB, "
                  f"{sum(house.index.cost_cpu_s.values()):.0f} CPU-s")


def search_command(
    house: Annotated[Path, typer.Argument(help="house directory (bespoke house build --out)")],
    targets: Annotated[Path, typer.Option(help="targets YAML")],
    out: Annotated[Path, typer.Option(help="output folder: one model directory per target")],
    data: Annotated[str | None, typer.Option(help="data set (default: the one the house was built from)")] = None,
    iterations: Annotated[int, typer.Option(help="simulated-annealing iterations per target")] = 300,
    eval_images: Annotated[int, typer.Option(help="held-out images for accuracy estimates")] = 256,
    epochs: Annotated[int, typer.Option(help="KD retraining epochs of each student")] = 3,
    lr: Annotated[float, typer.Option(help="retraining peak learning rate")] = 1e-3,
    kd_weight: Annotated[float, typer.Option(help="weight of the KD term (rest: cross-entropy)")] = 0.7,
    margin: Annotated[float, typer.Option(help="latency targets search under budget*(1-margin)")] = 0.05,
    seed: Annotated[int, typer.Option(help="seed of the search")] = 0,
) -> None:
    """Search a house for every target, retrain each student with KD, export OUT/<target>/ + report.md."""
    from bespoke.search import AnnealConfig, search_and_deliver
    from bespoke.train import FinetuneConfig

    retrain = FinetuneConfig(epochs=epochs, lr=lr, kd_weight=kd_weight, weight_decay=0.01, seed=seed)
    cards = search_and_deliver(house, targets, out=out, data=data, eval_images=eval_images, margin=margin,
                               anneal_config=AnnealConfig(iterations=iterations, seed=seed), retrain=retrain)
    for card in cards:
        value = card.model_extra.get("measured_value") if card.model_extra else None
        pred = card.model_extra.get("predicted_value") if card.model_extra else None
        console.print(f"[green]{card.target}[/green]: top-1 {card.accuracy:.4f}, measured {value:.4g} "
                      f"{card.budget_unit} (predicted {pred:.4g}, budget {card.budget_resolved:.4g})")
    report = write_block_report(out, [Path(out) / c.target for c in cards if c.target])
    console.print(f"[green]report[/green] {report}")


@locks_output("out")
def write_block_report(out: Path, directories: list[Path]) -> Path:
    """``OUT/report.md`` + ``OUT/pareto.png`` via bespoke.report (standard ORT 1/2-thread measurements)."""
    from bespoke.bench.measuring import measurement_targets
    from bespoke.bench.preset import MeasureSection
    from bespoke.pipeline import profile_model_dir
    from bespoke.report import row_from_card, write_report

    standard = measurement_targets(MeasureSection())
    rows, lines = [], []
    for directory in directories:
        card = profile_model_dir(directory, standard)
        rows.append(row_from_card(card, directory))
        extra = card.model_extra or {}
        pred, meas = extra.get("predicted_value"), extra.get("measured_value")
        if pred is not None and meas:
            lines.append(f"| {card.target} | {card.budget_resolved:.4g} {card.budget_unit} | {pred:.4g} | "
                         f"{meas:.4g} | {100 * (pred - meas) / meas:+.1f}% | {extra.get('meets_budget')} |")
    table = "\n".join(["| target | budget | predicted | measured | error | meets budget |",
                       "|---|---|---|---|---|---|", *lines])
    budgets = {r.target: r.budget_value for r in rows if r.target and r.budget_unit == "ms" and r.budget_value}
    return write_report(out, rows, "bespoke block engine: one house, a student per target",
                        {"Predicted vs measured (target's own runtime)": table}, budgets_ms=budgets)
