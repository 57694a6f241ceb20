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

from bespoke.distill import DistillConfig
from bespoke.errors import BespokeError
from bespoke.search.annealing import AnnealConfig
from bespoke.search.job import DEFAULT_RETRAIN, BlockJob, HouseSettings, SearchSettings
from bespoke.utils.lock import locks_output

house_app = typer.Typer(help="Model houses: alternatives for every span of a teacher (block engine).",
                        no_args_is_help=True)
console = Console()


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


_H, _D, _S = HouseSettings.model_fields, DistillConfig.model_fields, SearchSettings.model_fields
_A, _R = AnnealConfig.model_fields, DEFAULT_RETRAIN
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML BlockJob (teacher, data, out, house:, "
                                                                       "search:, retrain:) setting any option; "
                                                                       "command-line options override it.")]
#: where each option lives in the BlockJob recipe (bespoke.search.job)
_HOUSE_OPTIONS = {"donors": "house", "size": "house", "max_span": "house", "distill_steps": "house",
                  "kinds": "house", "train_limit": "house", "resolution": "house", "seed": "house",
                  "group_size": "house.distill", "batch_size": "house.distill", "device": "house.distill"}
_SEARCH_OPTIONS = {"iterations": "search.anneal", "seed": "search.anneal", "eval_images": "search",
                   "margin": "search", "epochs": "retrain", "lr": "retrain", "kd_weight": "retrain"}


def _job(ctx: typer.Context, config: Path | None, values: dict, nested: dict[str, str]) -> BlockJob:
    from bespoke.cli.config import resolve

    for key in ("donors", "kinds"):
        if isinstance(values.get(key), str):
            values[key] = _split(values[key])
    return resolve(BlockJob, ctx, config, values, nested=nested)


def _required(value: object, option: str) -> None:
    if value is None:
        raise BespokeError(f"--{option} is required", f"give --{option} or set `{option}:` in the --config YAML")


@house_app.command("build")
def build_command(
    ctx: typer.Context,
    teacher: Annotated[str | None, typer.Option(help="model directory of `bespoke finetune`, or a zoo name")] = None,
    data: Annotated[str | None, typer.Option(help="fashion-mnist | ImageFolder dir | CIFAR dir")] = None,
    out: Annotated[Path | None, typer.Option(help="house directory (resumes if interrupted)")] = None,
    donors: Annotated[str, typer.Option(help="comma-separated zoo names of donor networks")]
    = ",".join(_H["donors"].get_default(call_default_factory=True)),
    targets: Annotated[Path | None, typer.Option(help="targets YAML: measure latency tables now")] = None,
    size: Annotated[int, typer.Option(help=_H["size"].description)] = _H["size"].default,
    max_span: Annotated[int, typer.Option(help=_H["max_span"].description)] = _H["max_span"].default,
    distill_steps: Annotated[int, typer.Option(help=_H["distill_steps"].description)] = _H["distill_steps"].default,
    kinds: Annotated[str, typer.Option(help="alternative kinds: donor,prune,lowrank,skip")]
    = ",".join(_H["kinds"].get_default(call_default_factory=True)),
    group_size: Annotated[int, typer.Option(help=_D["group_size"].description)] = _D["group_size"].default,
    batch_size: Annotated[int, typer.Option(help="images per distillation step")] = _D["batch_size"].default,
    train_limit: Annotated[int | None, typer.Option(help=_H["train_limit"].description)] = None,
    resolution: Annotated[int | None, typer.Option(help=_H["resolution"].description)] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = _D["device"].default,
    seed: Annotated[int, typer.Option(help=_H["seed"].description)] = _H["seed"].default,
    executor: Annotated[str, typer.Option(help="where groups are distilled: local | ray (one Ray task per group)")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to use with --executor ray (e.g. auto, "
                                                         "host:6379); default: start one on this machine")] = None,
    task_cpus: Annotated[int, typer.Option(help="CPUs (= torch threads) each Ray task reserves")] = 1,
    task_gpus: Annotated[float | None, typer.Option(help="GPUs each Ray task reserves (e.g. 1, or 0.5 to share); "
                                                        "default 1 with --device cuda, else 0")] = None,
    max_retries: Annotated[int, typer.Option(help="reruns of a Ray task whose worker died")] = 3,
    config: ConfigOpt = None,
) -> None:
    """Build a model house once: sample alternatives, distil each block, measure latency tables.

    The settings are the `house:` section of the block engine's recipe (bespoke.search.BlockJob), which
    `bespoke search` and `bespoke bench` read too. Resumes after an interruption.
    """
    from bespoke.house import build_house
    from bespoke.utils.executor import make_executor

    values = {"teacher": teacher, "data": data, "out": out, "donors": donors, "size": size, "max_span": max_span,
              "distill_steps": distill_steps, "kinds": kinds, "group_size": group_size, "batch_size": batch_size,
              "train_limit": train_limit, "resolution": resolution, "device": device, "seed": seed}
    job = _job(ctx, config, values, _HOUSE_OPTIONS)
    for option in ("teacher", "data", "out"):
        _required(getattr(job, option), option)
    gpus = task_gpus if task_gpus is not None else (1.0 if job.house.distill.device.startswith("cuda") else 0.0)
    ex = make_executor(executor, address=ray_address, num_cpus=task_cpus, num_gpus=gpus, max_retries=max_retries)
    house = build_house(job.teacher, data=job.data, out=job.out, targets=targets, executor=ex,
                        **job.house.build_kwargs())
    counts = house.index.counts()
    mem = house.index.memory
    console.print(f"[green]house[/green] {job.out}: {counts.get('done', 0)} alternatives trained, "
                  f"{counts.get('diverged', 0)} diverged, {counts.get('failed', 0)} failed; "
                  f"peak RSS {mem.get('max_rss_mb', 0):.0f} MB, batch activations "
                  f"{mem.get('batch_activation_bytes', 0) / 2**20:.1f} MB, "
                  f"{sum(house.index.cost_cpu_s.values()):.0f} CPU-s")


def search_command(
    ctx: typer.Context,
    house: Annotated[Path, typer.Argument(help="house directory (bespoke house build --out)")],
    targets: Annotated[Path, typer.Option(help="targets YAML")],
    out: Annotated[Path | None, typer.Option(help="output folder: one model directory per target")] = None,
    data: Annotated[str | None, typer.Option(help="data set (default: the one the house was built from)")] = None,
    iterations: Annotated[int, typer.Option(help="simulated-annealing iterations per target")]
    = _A["iterations"].default,
    eval_images: Annotated[int, typer.Option(help=_S["eval_images"].description)] = _S["eval_images"].default,
    epochs: Annotated[int, typer.Option(help="KD retraining epochs of each student")] = _R.epochs,
    lr: Annotated[float, typer.Option(help="retraining peak learning rate")] = _R.lr,
    kd_weight: Annotated[float, typer.Option(help="weight of the KD term (rest: cross-entropy)")] = _R.kd_weight,
    margin: Annotated[float, typer.Option(help=_S["margin"].description)] = _S["margin"].default,
    qat: Annotated[bool, typer.Option("--qat", help="int8 targets: retrain each student under fake quantization "
                                      "matching its INT8 graph (default: retrain in fp32, quantize after)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the search (of retraining: retrain.seed in --config)")]
    = _A["seed"].default,
    config: ConfigOpt = None,
) -> None:
    """Search a house for every target, retrain each student with KD, export OUT/<target>/ + report.md.

    The settings are the `search:` and `retrain:` sections of the block engine's recipe (bespoke.search.BlockJob;
    retraining keys not given keep bespoke.search.DEFAULT_RETRAIN's), the same the benchmark uses.
    """
    from bespoke.search import search_and_deliver

    values = {"out": out, "data": data, "iterations": iterations, "eval_images": eval_images, "epochs": epochs,
              "lr": lr, "kd_weight": kd_weight, "margin": margin, "seed": seed, "qat": {} if qat else None}
    job = _job(ctx, config, values, _SEARCH_OPTIONS)
    _required(job.out, "out")
    assert job.out is not None
    cards = search_and_deliver(house, targets, out=job.out, data=job.data, eval_images=job.search.eval_images,
                               margin=job.search.margin, anneal_config=job.search.anneal, retrain=job.retrain,
                               qat=job.qat, ptq=job.ptq, agreement_threshold=job.int8_agreement)
    for card in cards:
        d = card.delivery
        assert d is not None and d.measured is not None
        verdict = "[green]met[/green]" if d.meets_budget is not False else "[red]MISSED[/red]"
        console.print(f"[green]{d.target}[/green]: top-1 {card.accuracy:.4f}, measured {d.measured:.4g} {d.unit} "
                      f"(predicted {d.predicted:.4g}, budget {d.budget_resolved:.4g}: {verdict})")
    report = write_block_report(job.out, [job.out / c.target for c in cards if c.target])
    console.print(f"[green]report[/green] {report}")


@locks_output("out")
def write_block_report(out: Path, directories: list[Path]) -> Path:
    """``OUT/report.md`` + ``OUT/pareto.png`` via bespoke.report (standard ORT 1/2-thread measurements)."""
    from bespoke.bench.measuring import measurement_targets
    from bespoke.bench.preset import MeasureSection
    from bespoke.pipeline import profile_model_dir
    from bespoke.report import delivery_table, row_from_card, write_report

    standard = measurement_targets(MeasureSection())
    cards = [profile_model_dir(directory, standard) for directory in directories]
    rows = [row_from_card(card, directory) for card, directory in zip(cards, directories, strict=True)]
    table = delivery_table(cards)
    budgets = {r.target: r.budget_value for r in rows if r.target and r.budget_unit == "ms" and r.budget_value}
    return write_report(out, rows, "bespoke block engine: one house, a student per target",
                        {"Predicted vs measured (target's own runtime)": table}, budgets_ms=budgets)
