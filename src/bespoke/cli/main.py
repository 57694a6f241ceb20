"""``bespoke``: the command-line entry point. Every command is a thin layer over a documented Python function."""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from bespoke.errors import BespokeError, Interrupted

app = typer.Typer(
    name="bespoke", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    help="One pretrained vision model + a small, partly labelled data set -> a verified, exported model for every "
         "edge deployment target. Start with `bespoke demo`, or see each command's --help.",
)
zoo_app = typer.Typer(help="The model zoo: architectures with offline pretrained weights.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
console = Console()

def _device_help() -> str:
    from bespoke.targets import device_profiler_help

    return ("Prepare a folder to measure models on a real device (phone, board) with a standalone profiler that "
            "needs only onnxruntime + numpy there.\n\n" + device_profiler_help())


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file setting any option of this "
                                                                       "command; command-line options override it.")]


@zoo_app.command("list")
def zoo_list(pattern: Annotated[str, typer.Argument(help="glob, e.g. 'efficientnet*'")] = "*") -> None:
    """List registered models with their weights source and native resolution."""
    from bespoke.zoo import get_pretrained_cfg, list_models

    table = Table("name", "native res", "weights", "licence")
    for name in list_models(pattern):
        if name.endswith(":*"):
            table.add_row(name, "-", "any architecture of that library; weights from --weights FILE", "-")
            continue
        cfg = get_pretrained_cfg(name)
        table.add_row(name, str(cfg.native_resolution), cfg.source, cfg.license)
    console.print(table)


@app.command()
def finetune(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="zoo name (see `bespoke zoo list`), timm:<arch> or torchvision:<arch>")]
    = "efficientnet_lite0",
    model_args: Annotated[list[str] | None, typer.Option(help="constructor arguments of a timm/torchvision model, "
                                                              "key=value (YAML-typed; repeat or comma-separate), "
                                                              "e.g. img_size=64")] = None,
    data: Annotated[str, typer.Option(help="fashion-mnist | ImageFolder dir (train/ test/ \\[val/]) | CIFAR dir")]
    = "fashion-mnist",
    resolution: Annotated[int, typer.Option(help="input size in pixels")] = 64,
    epochs: Annotated[int, typer.Option(help="passes over the training split")] = 2,
    train_limit: Annotated[int | None, typer.Option(help="use a stratified subset of N training images")] = None,
    test_limit: Annotated[int | None, typer.Option(help="evaluate on a stratified subset of N test images")] = None,
    batch_size: Annotated[int, typer.Option(help="images per step")] = 64,
    lr: Annotated[float, typer.Option(help="peak learning rate (AdamW, one-cycle)")] = 1e-3,
    weights: Annotated[Path | None, typer.Option(help="local .safetensors/.pth weights instead of the zoo's")]
    = None,
    seed: Annotated[int, typer.Option(help="seed for splits, order, augmentation, init")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    memory_format: Annotated[str, typer.Option(help="training layout: auto | channels_last | contiguous (auto: "
                                                    "channels_last unless the model is known to break in it)")]
    = "auto",
    labels: Annotated[float, typer.Option(help="share of training images whose labels are used, e.g. 0.1")] = 1.0,
    semi_supervised: Annotated[bool, typer.Option("--semi-supervised", help="also learn from the unlabelled "
                                                  "share: rounds of distillation over all images (needs --labels "
                                                  "below 1)")] = False,
    rounds: Annotated[int, typer.Option(help="--semi-supervised: distillation rounds after the labelled-only "
                                             "fine-tune")] = 1,
    round_epochs: Annotated[int, typer.Option(help="--semi-supervised: passes over all images per round")] = 3,
    out: Annotated[Path, typer.Option(help="model directory to write (resumes if interrupted)")]
    = Path("runs/finetune"),
    config: ConfigOpt = None,
) -> None:
    """Fine-tune a pretrained model on a data set; write a verified model directory (weights, ONNX, card).

    Resumes from OUT/checkpoints after an interruption. Examples:
    bespoke finetune --model efficientnet_lite0 --data fashion-mnist --resolution 64 --epochs 2 --train-limit 6000;
    with 10 % of the labels and the rest unlabelled: ... --labels 0.1 --semi-supervised
    """
    from bespoke.cli.config import resolve
    from bespoke.pipeline import FinetuneJob, run_finetune

    train_keys = {"epochs", "batch_size", "lr", "seed", "device", "memory_format"}
    values = {"model": model, "model_args": model_args, "data": data, "resolution": resolution,
              "train_limit": train_limit, "test_limit": test_limit, "weights": weights, "out": out, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "seed": seed, "device": device, "memory_format": memory_format,
              "labels": labels}
    nested = {k: "train" for k in train_keys}
    if semi_supervised:
        values.update({"rounds": rounds, "round_epochs": round_epochs})
        nested.update({"rounds": "semi_supervised", "round_epochs": "semi_supervised:epochs"})
    job = resolve(FinetuneJob, ctx, config, values, nested=nested)
    card, _ = run_finetune(job)
    console.print(f"[green]done[/green] {job.out}: test top-1 {card.accuracy:.4f}, params {card.params:,}, "
                  f"MACs {card.macs:,}, ONNX max|diff| {card.onnx_max_abs_diff:.1e}, "
                  f"{sum(card.cost_cpu_s.values()):.0f} CPU-s")


@app.command("export")
def export_cmd(
    directory: Annotated[Path, typer.Argument(help="model directory (card.json + model.safetensors)")],
    tolerance: Annotated[float, typer.Option(help="max allowed |ONNX Runtime - PyTorch|")] = 1e-4,
) -> None:
    """Re-export a model directory to ONNX (opset 17), verify it against PyTorch, refresh its card."""
    from bespoke.export import load_model_dir, save_model_dir

    model, card = load_model_dir(directory)
    card = save_model_dir(directory, model, card, tolerance=tolerance)
    console.print(f"[green]exported[/green] {directory / 'model.onnx'}: max|diff| {card.onnx_max_abs_diff:.1e}")


@app.command()
def profile(
    directories: Annotated[list[Path], typer.Argument(help="model directories to measure")],
    targets: Annotated[Path, typer.Option(help="targets YAML (see configs/targets.yaml)")]
    = Path("configs/targets.yaml"),
) -> None:
    """Measure model directories on every target (warm-up, repeats, median and spread) and record it in card.json.

    onnxruntime/table targets time the exported model.onnx; torch times the PyTorch module; macs/params/memory
    count. The printed spread is (p90 - p10) / median: the measurement's own noise.
    """
    from bespoke.pipeline import profile_model_dir
    from bespoke.targets import load_targets

    target_list = load_targets(targets)
    table = Table("model", "target", "value", "spread", "n", "budget")
    for directory in directories:
        card = profile_model_dir(directory, target_list)
        for t in target_list:
            m = card.latency[t.name]
            budget = ""
            if card.target == t.name and card.budget_resolved is not None:
                budget = f"{card.budget_resolved:g} {'ok' if m['value'] <= card.budget_resolved else 'OVER'}"
            table.add_row(str(directory), t.name, f"{m['value']:.4g} {m['unit']}", f"{m['spread']:.1%}",
                          str(m["n"]), budget)
    console.print(table)


def _listed(text: str, option: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated option's values, each one of ``allowed``."""
    from bespoke.errors import BespokeError

    values = tuple(part.strip() for part in text.split(",") if part.strip())
    for value in values or ("",):
        if value not in allowed:
            raise BespokeError(f"{option} {value!r} is not one of {', '.join(allowed)}", "see bespoke quantize --help")
    return values


@app.command()
def quantize(
    directory: Annotated[Path, typer.Argument(help="fp32 model directory (card.json + model.onnx + weights)")],
    data: Annotated[str, typer.Option(help="the data set the model was trained on: calibration from its training "
                                           "split, the choice on its validation split, agreement on its test split")],
    targets: Annotated[Path, typer.Option(help="targets YAML; every target with 'precision: int8' gets a model")],
    out: Annotated[Path | None, typer.Option(help="output folder, one INT8 model directory per int8 target "
                                                  "(default DIR-int8; resumes)")] = None,
    calibration: Annotated[int, typer.Option(help="training images to calibrate on")] = 256,
    selection: Annotated[int, typer.Option(help="validation images the settings are chosen on")] = 1000,
    test_limit: Annotated[int | None, typer.Option(help="stratified subset of N test images")] = None,
    train_limit: Annotated[int | None, typer.Option(help="training pool of N images (calibration, validation "
                                                         "and the QAT fine-tune come from it)")] = None,
    agreement: Annotated[float, typer.Option(help="least share of test images where INT8 top-1 must equal fp32 "
                                                  "top-1; below it nothing is written")] = 0.9,
    min_speedup: Annotated[float, typer.Option(help="least paired speed-up over the fp32 graph a setting needs to "
                                                    "be delivered (0: any)")] = 1.1,
    formats: Annotated[str, typer.Option(help="graph formats to try, comma-separated: QOperator, QDQ")
                       ] = "QOperator,QDQ",
    weight_types: Annotated[str, typer.Option(help="weight types to try, comma-separated: uint8, int8")] = "uint8,int8",
    max_fp32_nodes: Annotated[int, typer.Option(help="most graph nodes left in fp32 when a setting still loses "
                                                     "accuracy (0: none)")] = 8,
    qat_epochs: Annotated[int, typer.Option(help="first fine-tune this many epochs under fake quantization "
                                                 "(quantization-aware training, distilled from the model itself; "
                                                 "0: post-training quantization only)")] = 0,
    seed: Annotated[int, typer.Option(help="seed for the splits and the image subsets")] = 0,
) -> None:
    """Post-training static quantization (onnxruntime) of a model directory for every int8 target.

    Tries QOperator and QDQ, uint8 and int8 weights (with and without reduce_range), MinMax, Percentile and Entropy
    calibration; times each against the fp32 graph (paired, on the target's settings) and, among those at least
    --min-speedup faster, keeps the fastest within 0.5 point of fp32 top-1 on held-out images, leaving the most
    sensitive nodes in fp32 if it still loses more than 0.3 point. Each INT8 directory keeps the fp32 weights,
    holds the INT8 graph as model.onnx, and its card records the
    settings, the calibration set, both accuracies and the top-1 agreement with fp32 on the test split. Example:
    bespoke quantize runs/lite0 --data fashion-mnist --targets int8.yaml
    """
    from bespoke.cli.config import validate
    from bespoke.export import read_card
    from bespoke.quantize import PTQSearch, quantize_model_dir
    from bespoke.targets import load_targets

    written = quantize_model_dir(directory, data, load_targets(targets), out, calibration=calibration,
                                 selection=selection, test_limit=test_limit, train_limit=train_limit, seed=seed,
                                 agreement_threshold=agreement,
                                 search=validate(PTQSearch, {"min_speedup": min_speedup, "max_excluded": max_fp32_nodes,
                                                             "formats": _listed(formats, "--formats",
                                                                                ("QOperator", "QDQ")),
                                                             "weight_types": _listed(weight_types, "--weight-types",
                                                                                     ("uint8", "int8"))}),
                                 qat_epochs=qat_epochs,
                                 log=console.print)
    table = Table("target", "directory", "settings", "fp32 top-1", "int8 top-1", "agreement", "speed-up")
    for name, folder in written.items():
        card = read_card(folder)
        q = card.quantization
        if q is None:
            continue
        label = f"{q.format} w:{q.weight_type}{' rr' if q.reduce_range else ''} {q.calibration_method}"
        if q.nodes_excluded:
            label += f" ({len(q.nodes_excluded)} fp32)"
        speedup = card.provenance.get("ptq", {}).get("speedup_vs_fp32")
        table.add_row(name, str(folder), label, f"{q.fp32_accuracy:.4f}", f"{q.int8_accuracy:.4f}",
                      f"{q.agreement:.4f}", f"{speedup:.2f}x" if speedup else "-")
    console.print(table)


@app.command("profile-device", help=_device_help())
def profile_device(
    directories: Annotated[list[Path], typer.Argument(help="model directories whose model.onnx to carry over")],
    out: Annotated[Path, typer.Option(help="folder to copy to the board")] = Path("device-parts"),
    threads: Annotated[int, typer.Option(help="threads to use on the board")] = 1,
    repeats: Annotated[int, typer.Option(help="timed runs per part on the board")] = 50,
    warmup: Annotated[int, typer.Option(help="untimed runs per part on the board first")] = 10,
) -> None:
    from bespoke.export import load_model_dir
    from bespoke.targets import export_parts_for_device

    parts = {}
    for directory in directories:
        model, card = load_model_dir(directory)
        if card.precision != "fp32":
            raise BespokeError(f"{directory} is an {card.precision} model: its parts are cut from the fp32 "
                               "PyTorch module, which is not what it deploys",
                               "profile its model.onnx with `bespoke profile` on an onnxruntime target")
        parts[str(directory)] = (model, (1, 3, card.resolution, card.resolution))
    keys = export_parts_for_device(parts, out, threads=threads, repeats=repeats, warmup=warmup)
    for label, key in keys.items():
        console.print(f"{label} -> {out}/{key}.onnx")
    console.print(f"[green]wrote[/green] {out}/ (read {out}/README.txt for what to run on the board)")


@app.command()
def demo(
    ctx: typer.Context,
    teacher: Annotated[str | None, typer.Option(help="zoo model to start from (preset: efficientnet_lite0)")] = None,
    data: Annotated[str | None, typer.Option(help="data set (see finetune --help) (preset: fashion-mnist)")] = None,
    resolution: Annotated[int | None, typer.Option(help="input size in pixels (preset: 64)")] = None,
    train_images: Annotated[int | None, typer.Option(help="training images (preset: 3000)")] = None,
    test_images: Annotated[int | None, typer.Option(help="test images (preset: 2000)")] = None,
    epochs: Annotated[int | None, typer.Option(help="teacher fine-tune epochs (preset: 1)")] = None,
    labels: Annotated[float | None, typer.Option(help="labelled share TOFA's supervised term sees (preset: 0.1)")]
    = None,
    targets: Annotated[Path | None, typer.Option(help="targets YAML replacing the 3 ORT CPU targets "
                                                      "(0.7x/0.5x/0.35x of the teacher)")] = None,
    engine: Annotated[list[str] | None, typer.Option(help="engine to run: bespoke | tofa (repeatable; default: both)")]
    = None,
    smoke: Annotated[bool, typer.Option(help="tiny plumbing run (a couple of minutes)")] = False,
    out: Annotated[Path, typer.Option(help="output folder (resumes if interrupted)")] = Path("runs/demo"),
    seed: Annotated[int | None, typer.Option(help="seed of splits, training and search (preset: 0)")] = None,
    config: ConfigOpt = None,
) -> None:
    """The main job: pretrained teacher -> block engine + TOFA supernet -> a verified model per target -> report.

    Runs the packaged `demo` benchmark preset (about 10 minutes on 2 CPU cores) into OUT: OUT/results.md (table),
    OUT/pareto.png (plot), OUT/results.json, and one model directory per engine and target under OUT/engines/.
    Flags scale it up; for anything else copy src/bespoke/presets/demo.yaml and run `bespoke bench --preset FILE`.
    """
    from bespoke.bench.demo import DemoConfig, run_demo
    from bespoke.cli.config import resolve

    values = {"teacher": teacher, "data": data, "resolution": resolution, "train_images": train_images,
              "test_images": test_images, "epochs": epochs, "labels": labels, "targets": targets,
              "smoke": smoke, "out": out, "seed": seed}
    cfg = resolve(DemoConfig, ctx, config, values)
    if engine:
        cfg = cfg.model_copy(update={"engines": engine})
    result = run_demo(cfg, log=lambda line: console.print(line, markup=False, highlight=False))
    console.print(f"[green]done[/green]: {result.files['results.md']} and {result.files['pareto.png']}")


def _add_engine_commands() -> None:
    from bespoke.cli.bench import bench_command
    from bespoke.cli.block import house_app, search_command
    from bespoke.cli.supernet import supernet_app

    app.add_typer(house_app, name="house")
    app.command("search")(search_command)
    app.add_typer(supernet_app, name="supernet")
    app.command("bench")(bench_command)


_add_engine_commands()


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # only a write fails so
ACCESS_ERRNOS = (errno.EACCES, errno.EPERM)  # a read or a write


def main() -> None:
    """Console-script entry: user errors become one line on stderr and exit code 2; SIGINT/SIGTERM one line and
    128 + the signal's number, after the command's own cleanup (temporary files removed, the output lock released)."""
    from bespoke.utils.atomic import write_error

    try:
        with _signals_interrupt():
            code = app(standalone_mode=False, prog_name="bespoke")
        if isinstance(code, int) and code:
            sys.exit(code)
    except TyperException as exc:  # the command line itself: unknown option, a value typer cannot parse
        message = " ".join(exc.format_message().split()) if hasattr(exc, "format_message") else ""
        if not message:  # no arguments: the help was printed
            sys.exit(getattr(exc, "exit_code", 2))
        ctx = getattr(exc, "ctx", None)
        print(f"error: {message} (see `{ctx.command_path if ctx else 'bespoke'} --help`)", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except BespokeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        # a write outside bespoke.utils.atomic (a folder made, a library's own file): the line the writers say
        if exc.errno in WRITE_ERRNOS:
            print(f"error: {write_error(Path(exc.filename or '?'), exc)}", file=sys.stderr)
        elif exc.errno in ACCESS_ERRNOS:
            print(f"error: cannot access {exc.filename or '?'}: {exc.strerror} (check the permissions of that file "
                  "and its folders)", file=sys.stderr)
        else:
            raise
        sys.exit(2)
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signal_number)


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while the command runs (previous handlers
    restored after). A second signal while the first unwinds takes the default action: killed at once, which is
    safe (every write is atomic) if cleanup hangs."""
    def handler(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        raise Interrupted(signal.Signals(signum).name, signum, _running_command())

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (an embedding program): its own handlers stay
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _running_command() -> str:
    """``supernet train``, ``house build``, ...: the command the arguments name (the leading subcommand words)."""
    command, names = typer.main.get_command(app), []
    for word in sys.argv[1:]:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command = sub
        names.append(word)
    return " ".join(names)


if __name__ == "__main__":
    main()
