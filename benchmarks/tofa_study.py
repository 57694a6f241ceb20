"""TOFA study (issue 4, "Done when"): one semi-supervised supernet vs its labelled-only ablation vs per-target
extraction + fine-tuning, on Fashion-MNIST at 64 px with 10 % of the labels and an EfficientNet-Lite2 teacher.

    .venv/bin/python benchmarks/tofa_study.py [--out runs/tofa-study] [--teacher DIR] [--smoke]

Steps (each skipped when its output exists, so a rerun of the same command resumes; the engines resume their own
training from checkpoints):

1. teacher: ``--teacher DIR``, else the reference benchmark's label-scarce teacher
   (``runs/bench-full/models/teacher-labelled``) when present and trained on the study's labelled share (same seed,
   data, label fraction and size), else ``--teacher-model`` fine-tuned here on the
   labelled share only (the benchmark's teacher recipe);
2. reference: the teacher's ``model.onnx`` timed with ONNX Runtime (CPU, batch 1, 1 thread), for the record;
   the budgets are ``--factors`` x the largest subnet, resolved on the one cost table the three methods share
   (every model is timed in alternation with the largest subnet), so every method aims at the same numbers;
3. (a) ``tofa``: the supernet trained once with the semi-supervised loss (or, with ``--tofa-supernet DIR``, one
   the benchmark's ``tofa`` stage already trained with the same recipe, checked and copied in), then
   ``select_subnets`` for the targets;
4. (b) ``labelled_only``: the same supernet recipe with ``semi_supervised: false``, same selection;
5. (c) ``extract_finetune``: the OFA-style route without supernet training: the supernet built from the teacher
   (0 training steps), the same predictor + latency table + evolutionary search pick a subnet per target, which
   is extracted and fine-tuned on the labelled share with the shared recipe, then exported and measured;
6. the sweep: (a)'s selection again for ``--sweep-targets`` budgets spread over ``--sweep-range`` (the measured
   cost of K targets), last, so the comparisons come first; an interrupted sweep keeps its delivered targets.

Writes ``RESULTS/tofa_study.json`` and ``RESULTS/tofa_study.md`` (``--results``, default ``benchmarks/results``;
``OUT/results`` with ``--smoke``). Keep other heavy jobs off the machine while it runs: budgets and latencies are
wall-clock medians. To train (a) and (b) side by side, each on its own core at one thread (so their CPU-s
compare with (c)'s one-thread fine-tunes), then time everything on one quiet core:

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/tofa_study.py --out runs/tofa-study --train-only tofa &
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/tofa_study.py --out runs/tofa-study \
        --train-only labelled_only
    wait; OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/tofa_study.py --out runs/tofa-study
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bespoke.baselines import TrainData, finetune_donor
from bespoke.bench.preset import load_preset
from bespoke.bench.results import machine_info
from bespoke.cost import CostTable
from bespoke.data import split_labelled
from bespoke.errors import BespokeError
from bespoke.export import CARD, ModelCard, load_model_dir, read_card, save_model_dir, update_card
from bespoke.supernet import (
    SelectConfig,
    SpaceOptions,
    SpecSource,
    SupernetJob,
    SupernetMeta,
    SupernetTrainConfig,
    build_supernet,
    select_subnets,
    train_supernet,
)
from bespoke.supernet.store import META_FILE, WEIGHTS_FILE, load_teacher, read_meta, save_supernet
from bespoke.targets import Budget, Measurement, Target, measure_onnx
from bespoke.train import FinetuneConfig, cpu_seconds, finetune
from bespoke.utils.atomic import write_bytes, write_json, write_text
from bespoke.utils.seed import seed_everything

ROOT = Path(__file__).resolve().parents[1]
BENCH_TEACHER = ROOT / "runs" / "bench-full" / "models" / "teacher-labelled"
K_VALUES = (1, 5, 20)
SELECTION_GOAL_MS = 100.0
GAIN_GOAL_POINTS = 2.0
METHODS = {
    "tofa": "(a) TOFA supernet, semi-supervised (labelled + unlabelled)",
    "labelled_only": "(b) same supernet, labelled share only",
    "extract_finetune": "(c) per-target extraction + fine-tuning on the labelled share",
}

# Flags whose default depends on --smoke: dest -> (full study, smoke run). The full values aim at <= ~60 min on
# 2 cores; the smoke values only check the plumbing (tiny data, tiny search space, 2 training steps).
PROFILES: dict[str, tuple[Any, Any]] = {
    "resolution": (64, 32),
    "train_images": (12000, 120),
    "val_images": (1200, 30),
    "test_images": (None, 100),
    "label_fraction": (0.1, 0.25),
    "teacher_epochs": (5, 1),
    "ft_epochs": (10, 1),
    "ft_batch_size": (64, 32),
    "steps": (300, 2),
    "batch_size": (32, 8),
    "supernet_eval_images": (1000, 20),
    "space_resolutions": (None, [32]),
    "space_expands": ([3.0, 4.0, 6.0], [6.0]),
    "predictor_samples": (200, 8),
    "predictor_val_images": (400, 10),
    "calib_images": (256, 8),
    "calib_batch": (64, 8),
    "population": (64, 4),
    "generations": (30, 2),
    "calibration_subnets": (6, 2),
    "sweep_eval_images": (None, 20),
    "check_images": (500, 20),
    "factors": ([0.7, 0.5, 0.35], [1.5, 1.3, 1.1]),
    "sweep_targets": (20, 5),
    "sweep_range": ([0.35, 0.9], [1.1, 1.5]),
    "budget_retries": (3, 1),
    "budget_fill": (0.9, 0.9),
    "warmup": (10, 2),
    "repeats": (50, 10),
}
# Flags that do not change what a run computes (left out of the settings a resumed run must match).
UNCHECKED = {"out", "results", "smoke", "teacher", "tofa_supernet", "train_only"}
SUPERNET_METHODS = {"tofa": True, "labelled_only": False}  # method -> semi-supervised


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags; the ones in :data:`PROFILES` take their full or smoke default when not given."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])

    def add(flag: str, help_text: str, **kwargs: Any) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        if dest in PROFILES:
            full, smoke = PROFILES[dest]
            help_text += f" (default {full}; --smoke: {smoke})"
            kwargs["default"] = None
        else:
            help_text += f" (default {kwargs['default']})"
        p.add_argument(flag, help=help_text, **kwargs)

    p.add_argument("--out", type=Path, default=None, help="work folder (default runs/tofa-study, "
                   "runs/tofa-study-smoke with --smoke); a rerun resumes it")
    p.add_argument("--results", type=Path, default=None, help="folder for tofa_study.json/.md (default "
                   "benchmarks/results; OUT/results with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny settings: checks the plumbing, not the method")
    p.add_argument("--train-only", nargs="*", choices=list(SUPERNET_METHODS), default=None, metavar="METHOD",
                   help="train the supernets of the given methods (tofa, labelled_only; none named: both) and stop. "
                   "The steps after training time ONNX models, so they must run pinned to one quiet core; this "
                   "lets training run first on its own, e.g. one process per method, each pinned to a core at "
                   "one thread, so every method's CPU-s are counted at one thread as (c)'s fine-tunes are")
    p.add_argument("--teacher", type=Path, default=None, help="fine-tuned teacher model directory (default: the "
                   f"benchmark's {BENCH_TEACHER.relative_to(ROOT)} if present, else fine-tuned here)")
    p.add_argument("--tofa-supernet", type=Path, default=None, help="a finished supernet trained elsewhere with "
                   "exactly (a)'s recipe (e.g. the benchmark's tofa stage, ENGINES/tofa/supernet): copied in as (a) "
                   "instead of training it again, after its recorded job is checked against (a)'s")
    add("--teacher-model", "zoo model fine-tuned when no teacher directory is used", default="efficientnet_lite2")
    add("--data", "data set spec (bespoke.data.load_dataset)", default="fashion-mnist")
    add("--seed", "seed of splits, labelled share, training and search", type=int, default=0)
    add("--device", "auto | cpu | cuda (training and evaluation)", default="auto")
    add("--resolution", "input size of the teacher and the largest subnet", type=int)
    add("--train-images", "training images (labelled + unlabelled)", type=int)
    add("--val-images", "held-out images for the accuracy predictor", type=int)
    add("--test-images", "test images (None: the full test split)", type=int)
    add("--label-fraction", "share of the training images whose label is used", type=float)
    add("--teacher-epochs", "epochs of the teacher fine-tune, if one is needed", type=int)
    add("--ft-epochs", "epochs of the per-target fine-tune of (c) (the shared recipe)", type=int)
    add("--ft-batch-size", "batch size of the fine-tunes", type=int)
    add("--steps", "supernet optimiser steps (sandwich rule), for (a) and (b)", type=int)
    add("--batch-size", "labelled images per supernet step", type=int)
    add("--unlabelled-ratio", "unlabelled images per labelled one in (a)", type=int, default=1)
    add("--n-random", "random subnets per step besides the largest and the smallest", type=int, default=2)
    add("--lr", "supernet peak learning rate", type=float, default=1e-3)
    add("--threshold", "pseudo-label confidence threshold", type=float, default=0.8)
    add("--supernet-eval-images", "test images of the supernet's own largest/smallest check", type=int)
    add("--space-kernels", "depthwise kernel choices", type=int, nargs="+", default=[3, 5])
    add("--space-expands", "expansion-ratio choices", type=float, nargs="+")
    add("--space-resolutions", "input-size choices (None: 3/4, 7/8 and 1 x the teacher's)", type=int, nargs="+")
    add("--predictor-samples", "subnets measured to fit each accuracy predictor", type=int)
    add("--predictor-val-images", "val images per measured subnet", type=int)
    add("--calib-images", "training images for each subnet's BN recalibration", type=int)
    add("--calib-batch", "batch of the BN recalibration", type=int)
    add("--population", "evolution population", type=int)
    add("--generations", "evolution generations", type=int)
    add("--calibration-subnets", "whole subnets measured to calibrate the latency table", type=int)
    add("--budget-retries", "extra searches steered by the measurement after export (tighter after a miss, "
        "looser after a pick that leaves budget unused)", type=int)
    add("--budget-fill", "a pick measured under this share of its budget is searched again, looser", type=float)
    add("--sweep-eval-images", "test images each sweep target is evaluated on (None: the full test split, as for "
        "the study targets, so per-target costs compare)", type=int)
    add("--check-images", "test images of (c)'s check before fine-tuning (its delivered top-1 uses all)", type=int)
    add("--factors", "budgets as fractions of the teacher's latency", type=float, nargs="+")
    add("--sweep-targets", "targets of the cost-of-K sweep on (a)", type=int)
    add("--sweep-range", "lowest and highest budget factor of the sweep", type=float, nargs=2)
    add("--warmup", "untimed ONNX Runtime runs per measurement", type=int)
    add("--repeats", "timed ONNX Runtime runs per measurement (median)", type=int)
    args = p.parse_args(argv)
    for dest, values in PROFILES.items():
        if getattr(args, dest) is None:
            setattr(args, dest, values[1] if args.smoke else values[0])
    args.out = args.out or Path("runs/tofa-study-smoke" if args.smoke else "runs/tofa-study")
    args.results = args.results or (args.out / "results" if args.smoke else ROOT / "benchmarks" / "results")
    if args.sweep_targets < 1 or not 0 < args.sweep_range[0] <= args.sweep_range[1]:
        p.error("--sweep-targets must be >= 1 and --sweep-range LOW HIGH with 0 < LOW <= HIGH")
    return args


# --------------------------------------------------------------------------------------------- bookkeeping


class Ledger:
    """CPU- and wall-seconds of every step, kept in ``OUT/ledger.json`` so a resumed run still reports them.

    A step whose output already exists is skipped and keeps its recorded figures; for a step that was
    interrupted and resumed, the figures cover the last attempt (the engines keep the full cost themselves).
    """

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        self.path, self.log = path, log
        self.steps: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, done: bool, fn: Callable[[], object]) -> None:
        """Run ``fn`` unless ``done``; record its CPU-seconds (``bespoke.train.cpu_seconds``) and wall time."""
        if done:
            self.steps.setdefault(name, {"status": "found", "cpu_s": None, "wall_s": None})
            self.log(f"[study] {name}: done before, skipped")
            return
        self.log(f"[study] {name}: running")
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        fn()
        record = {"status": "done", "cpu_s": round(cpu_seconds() - cpu0, 1),
                  "wall_s": round(time.perf_counter() - wall0, 1)}
        # re-read first: another process of the same study (``--train-only METHOD``) may have recorded a step
        self.steps = (json.loads(self.path.read_text()) if self.path.is_file() else {}) | self.steps | {name: record}
        write_json(self.path, self.steps)

    def wall(self, name: str) -> float | None:
        value = self.steps.get(name, {}).get("wall_s")
        return None if value is None else float(value)


@dataclass
class Study:
    """Settings, folders and shared objects of one run."""

    args: argparse.Namespace
    out: Path
    teacher: Path
    source: SpecSource
    ledger: Ledger
    log: Callable[[str], None]

    def dir(self, method: str) -> Path:
        return self.out / method.replace("_", "-")

    def finetune_config(self, epochs: int) -> FinetuneConfig:
        """The benchmark preset's shared fine-tuning recipe (AdamW 1e-3 one-cycle, weight decay 0.01, label
        smoothing 0.1, horizontal flip) with ``epochs``, ``--ft-batch-size``, ``--seed`` and ``--device``."""
        a = self.args
        extra = {"eval_batch_size": 100, "checkpoint_every": 1000} if a.smoke else {}
        return load_preset("fashion-mnist").recipe.model_copy(update={
            "epochs": epochs, "batch_size": a.ft_batch_size, "seed": a.seed, "device": a.device, **extra})

    def labelled(self, resolution: int) -> TrainData:
        """The labelled share (as the supernet sees it) and the test split, at ``resolution``."""
        return labelled_share(self.args, self.source, resolution)


def labelled_share(a: argparse.Namespace, source: SpecSource, resolution: int) -> TrainData:
    """The labelled share of ``source`` for the study's seed and label fraction, and the test split; its ``info``
    is what a model card trained on it records as ``data``."""
    splits = source.splits(resolution)
    labelled = split_labelled(splits.train, a.label_fraction, a.seed)[0]
    info = {"dataset": splits.name, "train": len(labelled), "val": len(splits.val),  # type: ignore[arg-type]
            "test": len(splits.test), "labels": f"{a.label_fraction:.0%} of training labels"}  # type: ignore
    return TrainData(train=labelled, test=splits.test, classes=list(splits.classes), resolution=resolution,
                     info=info)


def settings_record(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that determine the results (JSON-safe)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items()) if k not in UNCHECKED}


def study_source(args: argparse.Namespace) -> SpecSource:
    """The study's data: ``--train-images`` + ``--val-images`` drawn from the training split, split by ``--seed``."""
    pool = args.train_images + args.val_images
    return SpecSource(args.data, seed=args.seed, val_fraction=args.val_images / pool, train_limit=pool,
                      test_limit=args.test_images)


def open_study(args: argparse.Namespace, log: Callable[[str], None]) -> Study:
    """Check (or record) the run's settings and teacher in ``OUT/study.json``; a resumed run must match."""
    out = Path(args.out)
    record_path = out / "study.json"
    settings = settings_record(args)
    recorded = json.loads(record_path.read_text()) if record_path.is_file() else None
    if recorded is not None:
        changed = {k: (recorded["settings"].get(k), v) for k, v in settings.items()
                   if recorded["settings"].get(k) != v}
        if changed:
            raise BespokeError(f"{out} holds a study run with other settings: "
                               + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()),
                               "use another --out, or the same flags as the first run")
    source = study_source(args)
    if args.teacher is not None:
        teacher = Path(args.teacher)
    elif recorded is not None:
        teacher = Path(recorded["teacher"])
    elif not args.smoke and bench_teacher_fits(args, source):
        teacher = BENCH_TEACHER
    else:
        teacher = out / "teacher"
    if recorded is not None and Path(recorded["teacher"]) != teacher:
        raise BespokeError(f"{out} was started with teacher {recorded['teacher']}, not {teacher}",
                           "use another --out for another teacher")
    write_json(record_path, {"settings": settings, "teacher": str(teacher)})
    return Study(args, out, teacher, source, Ledger(out / "ledger.json", log), log)


def latency_target(args: argparse.Namespace, name: str, factor: float | None) -> Target:
    """ONNX Runtime, CPU, batch 1, 1 thread; a budget relative to the largest subnet (or none).

    Relative, not fixed in ms: each selection resolves it against the shared cost table's largest-subnet value and
    times every candidate in alternation with that subnet, so a drift of the machine's speed between the moment
    a budget is set and the moment a model is timed cannot move the target (on this 2-vCPU VM the same teacher
    timed 3.0-4.9 ms within one hour).
    """
    return Target(name=name, runtime="onnxruntime", threads=1, batch=1, warmup=args.warmup, repeats=args.repeats,
                  budget=None if factor is None else Budget.parse(f"{factor:g}x"),
                  description="onnxruntime CPU, batch 1, 1 thread")


def best_of(path: Path, target: Target, tries: int) -> Measurement:
    """The smallest median of ``tries`` timings (interference from other processes only ever adds time)."""
    return min((measure_onnx(path, target) for _ in range(tries)), key=lambda m: m.value)


def factor_name(prefix: str, factor: float) -> str:
    return f"{prefix}-{factor:g}x"


# ----------------------------------------------------------------------------------------------------- steps


def bench_teacher_fits(args: argparse.Namespace, source: SpecSource) -> bool:
    """Whether the benchmark's label-scarce teacher was trained on this study's labelled share (its card's seed,
    resolution and data equal the study's). Another seed draws another share: that teacher would then know the
    labels of images the study treats as unlabelled, which helps (a)'s pseudo-labels only."""
    if not (BENCH_TEACHER / CARD).is_file():
        return False
    card = read_card(BENCH_TEACHER)
    if card.resolution != args.resolution or card.provenance.get("recipe", {}).get("seed") != args.seed:
        return False
    return card.data == labelled_share(args, source, args.resolution).info


def teacher_step(study: Study) -> None:
    """Fine-tune ``--teacher-model`` on the labelled share only, unless a teacher directory exists."""
    a = study.args

    def run() -> None:
        data = study.labelled(a.resolution)
        finetune_donor(a.teacher_model, data, study.finetune_config(a.teacher_epochs), study.teacher,
                       method=f"teacher {a.teacher_model} ({a.label_fraction:.0%} labels)")

    study.ledger.run("teacher", (study.teacher / CARD).is_file(), run)
    card = read_card(study.teacher)
    if card.resolution != a.resolution:
        raise BespokeError(f"teacher {study.teacher} is {card.resolution} px, the study {a.resolution} px",
                           "pass --resolution to match, or another --teacher")


def reference_step(study: Study) -> dict[str, Any]:
    """The teacher's ONNX Runtime latency (the reference of every relative budget), best of three timings."""
    path = study.out / "reference.json"

    def run() -> None:
        probe = latency_target(study.args, "ort1-reference", None)
        m = best_of(study.teacher / "model.onnx", probe, tries=3)
        write_json(path, {"teacher_ms": m.value, "measurement": m.model_dump(mode="json"),
                          "teacher": str(study.teacher)})

    study.ledger.run("reference", path.is_file(), run)
    return json.loads(path.read_text())


def supernet_job(study: Study, out: Path, *, semi_supervised: bool) -> SupernetJob:
    """The supernet recipe of (a) and (b): identical but for ``semi_supervised``."""
    a = study.args
    pool = a.train_images + a.val_images
    space = SpaceOptions(kernels=tuple(a.space_kernels), expands=tuple(a.space_expands),
                         resolutions=tuple(a.space_resolutions) if a.space_resolutions else None)
    train = SupernetTrainConfig(steps=a.steps, batch_size=a.batch_size, unlabelled_ratio=a.unlabelled_ratio,
                                semi_supervised=semi_supervised, n_random=a.n_random, lr=a.lr, threshold=a.threshold,
                                seed=a.seed, device=a.device, eval_images=a.supernet_eval_images)
    return SupernetJob(teacher=str(study.teacher), data=a.data, labels=a.label_fraction, resolution=a.resolution,
                       train_limit=pool, test_limit=a.test_images, val_fraction=a.val_images / pool, out=out,
                       space=space, train=train)


def select_config(study: Study, eval_limit: int | None) -> SelectConfig:
    a = study.args
    return SelectConfig(predictor_samples=a.predictor_samples, predictor_val_images=a.predictor_val_images,
                        calib_images=a.calib_images, calib_batch=a.calib_batch, population=a.population,
                        generations=a.generations, calibration_subnets=a.calibration_subnets, eval_limit=eval_limit,
                        budget_retries=a.budget_retries,
                        budget_fill=a.budget_fill, seed=a.seed, device=a.device)


def select_step(study: Study, name: str, supernet: Path, targets: list[Target], out: Path,
                eval_limit: int | None) -> dict[str, Any]:
    """``select_subnets`` once (skipped when ``out/selection.json`` exists); infeasible budgets are recorded in
    ``selection.json`` by the engine, which delivers the other targets."""

    def run() -> None:
        try:
            select_subnets(supernet, targets, out, config=select_config(study, eval_limit), data=study.source)
        except BespokeError as exc:
            if not (out / "selection.json").is_file():
                raise
            study.log(f"[study] {name}: {exc.message}")

    study.ledger.run(name, (out / "selection.json").is_file(), run)
    return json.loads((out / "selection.json").read_text())


def share_cost_tables(source: Path, dest: Path) -> None:
    """Copy the latency tables measured for ``source`` to ``dest`` when both supernets have the same spec and
    space: a table depends on shapes only (never on weights), so re-measuring it would only add noise."""
    a, b = read_meta(source), read_meta(dest)
    if (a.spec, a.space) != (b.spec, b.space):
        return
    for table in sorted((source / "latency").glob("*.json")):
        target = dest / "latency" / table.name
        if not target.is_file():
            write_bytes(target, table.read_bytes())


def adopt_supernet(source: Path, job: SupernetJob) -> None:
    """Copy a finished supernet to ``job.out`` as if trained there: its recorded job (data, labels, space,
    recipe, teacher) must equal ``job`` but for the folder, so (a) stays the recipe (b) is compared with; its
    training cost comes along in its metadata. Checkpoints are left behind."""
    if not (source / META_FILE).is_file():
        raise BespokeError(f"{source} is not a finished supernet (no {META_FILE})", "train it first, or drop "
                           "--tofa-supernet")
    recorded, wanted = read_meta(source).job, job.model_dump(mode="json", exclude={"out"})
    if recorded != wanted:
        diff = [k for k in sorted(set(recorded) | set(wanted)) if recorded.get(k) != wanted.get(k)]
        detail = "; ".join(f"{k}: {recorded.get(k)!r} vs {wanted.get(k)!r}" for k in diff)
        raise BespokeError(f"{source} was trained with another recipe than (a): {detail}",
                           "pass the flags (and --teacher) it was trained with, or drop --tofa-supernet")
    dest = Path(job.out)
    tmp = dest.with_name(dest.name + ".adopting")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoints"))
    tmp.replace(dest)


def build_untrained_supernet(study: Study, out: Path) -> None:
    """The supernet of (c): built from the teacher exactly as training starts, trained for 0 steps.

    Recorded as labelled-only so every subnet's BN statistics are recalibrated on the labelled share only.
    """
    a = study.args
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    splits = study.source.splits(a.resolution)
    model, info = load_teacher(study.teacher, num_classes=splits.num_classes, resolution=a.resolution)
    seed_everything(a.seed)
    job = supernet_job(study, out, semi_supervised=False)
    net = build_supernet(model, a.resolution, options=job.space).eval()
    record = job.model_dump(mode="json", exclude={"out"})
    record["train"]["steps"] = 0
    labelled = split_labelled(splits.train, a.label_fraction, a.seed)[0]
    meta = SupernetMeta(teacher=info, classes=list(splits.classes), spec=net.spec.to_dict(),
                        space=net.space.to_dict(), job=record,
                        data={**study.source.describe(), "labels": a.label_fraction, "labelled": len(labelled),
                              "unlabelled": 0, "resolution": a.resolution},
                        cost_cpu_s={"supernet_train": 0.0, "supernet_build": round(cpu_seconds() - cpu0, 1)},
                        wall_s=round(time.perf_counter() - wall0, 1))
    save_supernet(out, net, meta)


def finetune_choice(study: Study, choice: dict[str, Any], target: Target, out: Path) -> None:
    """(c) for one target: the selected subnet fine-tuned on the labelled share, exported, measured after export."""
    model, card = load_model_dir(choice["model_dir"])
    data = study.labelled(card.resolution)
    cfg = study.finetune_config(study.args.ft_epochs)
    result = finetune(model, data.train, data.test, cfg, mean=card.mean, std=card.std, out_dir=out)
    cpu0 = cpu_seconds()
    fields = card.model_dump()
    fields.update(
        engine="extract-finetune", method=METHODS["extract_finetune"], accuracy=round(result.accuracy, 4),
        latency_ms={}, latency={}, data=dict(data.info),
        cost_cpu_s={"select": float(choice["cpu_s"]), "finetune": round(result.cpu_s, 1)},
        provenance={**card.provenance, "selected": choice["model_dir"], "recipe": cfg.model_dump(),
                    "accuracy_before_finetune": choice["accuracy"], "history": result.history,
                    "finetune_wall_s": round(result.wall_s, 1)})
    save_model_dir(out, model, ModelCard.model_validate(fields))
    # fine-tuning keeps the architecture: its latency is the selected subnet's, measured after export alongside
    # the largest subnet on the cost table's scale (the scale of the budget)
    update_card(out, latency_ms={target.name: card.latency_ms[target.name]},
                latency={target.name: card.latency[target.name]},
                cost_cpu_s={"export": round(cpu_seconds() - cpu0, 1)})


def weights_digest(supernet: Path) -> str:
    """SHA-256 of the supernet's weights file (selection must never change it: no per-target training)."""
    return hashlib.sha256((supernet / WEIGHTS_FILE).read_bytes()).hexdigest()


def record_trained(supernet: Path) -> None:
    """Remember the weights digest and training cost right after training (``SUPERNET/../trained.json``)."""
    path = supernet.parent / "trained.json"
    if not path.is_file():
        meta = read_meta(supernet)
        write_json(path, {"digest": weights_digest(supernet), "supernet_train_cpu_s": meta.cost_cpu_s.get(
            "supernet_train", 0.0)})


def unchanged_since_training(supernet: Path) -> bool:
    """Whether weights and training record are still those recorded right after training."""
    recorded = json.loads((supernet.parent / "trained.json").read_text())
    return (recorded["digest"] == weights_digest(supernet)
            and recorded["supernet_train_cpu_s"] == read_meta(supernet).cost_cpu_s.get("supernet_train", 0.0))


def finetuned_done(out: Path, target: Target) -> bool:
    return (out / CARD).is_file() and target.name in read_card(out).latency_ms


# --------------------------------------------------------------------------------------------------- results


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (the middle one for ``k == 1``)."""
    return [int((i + 0.5) * n / k) for i in range(k)]


def table_info(supernet: Path) -> dict[str, Any]:
    """The latency table of the supernet (one measurement setting): its cost, size and reference."""
    tables = sorted((supernet / "latency").glob("*.json"))
    if not tables:
        return {}
    t = CostTable.model_validate_json(tables[0].read_text())
    return {"cpu_s": round(t.cost_cpu_s, 1), "parts": len(t.parts), "loo_max_abs": t.loo.max_abs,
            "largest_subnet_ms": t.reference}


def choice_rows(selection: dict[str, Any], factors: dict[str, float]) -> list[dict[str, Any]]:
    """One row per target from an engine ``selection.json`` (infeasible targets: no figures, the reason)."""
    by_name = {c["target"]: c for c in selection["choices"]}
    rows = []
    for name, factor in factors.items():
        c = by_name.get(name)
        if c is None:
            rows.append({"target": name, "factor": factor, "delivered": False,
                         "reason": selection.get("infeasible", {}).get(name, "not delivered")})
            continue
        rows.append({"target": name, "factor": factor, "delivered": True, "budget_ms": c["budget_resolved"],
                     "accuracy": c["accuracy"], "latency_ms": c["measured_cost"], "meets_budget": c["meets_budget"],
                     "predicted_ms": c["predicted_cost"], "predicted_accuracy": c["predicted_accuracy"],
                     "params": c["params"], "macs": c["macs"], "cpu_s": c["cpu_s"], "wall_s": c.get("wall_s", 0.0),
                     "search_ms": c["search_ms"], "attempts": c["attempts"], "resolution": c["config"]["resolution"],
                     "depths": [len(s) for s in c["config"]["stages"]], "model_dir": c["model_dir"]})
    return rows


def finetuned_rows(study: Study, selection: dict[str, Any], targets: list[Target],
                   factors: dict[str, float]) -> list[dict[str, Any]]:
    """Rows of (c): the fine-tuned model directories (cost = selection + fine-tune + export)."""
    rows = []
    for row, target in zip(choice_rows(selection, factors), targets, strict=True):
        if not row["delivered"]:
            rows.append(row)
            continue
        card = read_card(study.dir("extract_finetune") / "models" / target.name)
        latency = card.latency_ms[target.name]
        rows.append({**row, "accuracy": card.accuracy, "accuracy_before_finetune": row["accuracy"],
                     "latency_ms": latency, "meets_budget": latency <= row["budget_ms"],
                     "cpu_s": round(sum(card.cost_cpu_s.values()), 1), "cost_cpu_s": card.cost_cpu_s,
                     "model_dir": str(study.dir("extract_finetune") / "models" / target.name)})
    return rows


def cost_of_k(prep: dict[str, float], per_target: list[float], *, basis: str) -> dict[str, Any]:
    """cost(K) = one-off preparation + the per-target costs of K targets: measured sums where K targets were
    actually delivered (spread over the budgets), else K x their mean (``extrapolated``)."""
    mean = statistics.fmean(per_target) if per_target else None  # None: no target delivered
    per_k: dict[str, float | None] = {}
    selection: dict[str, float | None] = {}
    extrapolated: dict[str, bool] = {}
    for k in K_VALUES:
        measured = k <= len(per_target)
        sel = sum(per_target[i] for i in spread(len(per_target), k)) if measured else (
            None if mean is None else k * mean)
        selection[str(k)] = None if sel is None else round(sel, 1)
        per_k[str(k)] = None if sel is None else round(sum(prep.values()) + sel, 1)
        extrapolated[str(k)] = not measured
    return {"preparation_cpu_s": {k: round(v, 1) for k, v in prep.items()},
            "preparation_total_cpu_s": round(sum(prep.values()), 1),
            "per_target_cpu_s": None if mean is None else round(mean, 1),
            "per_target_basis": basis, "per_target_n": len(per_target), "selection_cpu_s": selection,
            "total_cpu_s": per_k, "extrapolated": extrapolated}


def teacher_cost(study: Study) -> float:
    return round(sum(read_card(study.teacher).cost_cpu_s.values()), 1)


def delivered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["delivered"]]


def method_entry(study: Study, method: str, selection: dict[str, Any], rows: list[dict[str, Any]],
                 per_target: list[float], basis: str) -> dict[str, Any]:
    """One method's models, predictor, supernet record and cost of K targets."""
    supernet = study.dir(method) / "supernet"
    meta = read_meta(supernet)
    prep = {"teacher": teacher_cost(study), "supernet_train": float(meta.cost_cpu_s.get("supernet_train", 0.0)),
            "predictor": float(selection["predictor"].get("cpu_s", 0.0)),
            "cost_table": float(table_info(supernet).get("cpu_s", 0.0))}
    if "supernet_build" in meta.cost_cpu_s:
        prep["supernet_build"] = float(meta.cost_cpu_s["supernet_build"])
    return {"label": METHODS[method], "models": rows, "predictor": selection["predictor"],
            "supernet": {"steps": meta.job["train"]["steps"], "semi_supervised": meta.job["train"]["semi_supervised"],
                         "labelled": meta.data.get("labelled"), "unlabelled": meta.data.get("unlabelled"),
                         "train_cpu_s": meta.cost_cpu_s.get("supernet_train", 0.0), "wall_s": meta.wall_s,
                         "eval": meta.eval, "unchanged_by_selection": unchanged_since_training(supernet)},
            "cost": cost_of_k(prep, per_target, basis=basis)}


def selection_times(sweep_rows: list[dict[str, Any]], study_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-target search time (the <= 100 ms goal) and the cost of delivering a target."""
    search_ms = [r["search_ms"] for r in sweep_rows + study_rows]
    return {
        "search_ms_median": round(statistics.median(search_ms), 2) if search_ms else None,
        "search_ms_max": round(max(search_ms), 2) if search_ms else None, "n": len(search_ms),
        "goal_ms": SELECTION_GOAL_MS, "meets_goal": bool(search_ms) and max(search_ms) <= SELECTION_GOAL_MS,
        "per_target_cpu_s_median": round(statistics.median([r["cpu_s"] for r in sweep_rows]), 1) if sweep_rows
        else None,
        "per_target_wall_s": round(statistics.median([r["wall_s"] for r in sweep_rows]), 1) if sweep_rows else None,
    }


def summarize(study: Study, reference: dict[str, Any], targets: list[Target], factors: dict[str, float],
              sweep_factors: dict[str, float]) -> dict[str, Any]:
    """Everything the json/md report, read back from the files the steps wrote."""
    dirs = {m: study.dir(m) for m in METHODS}
    sel = {m: json.loads((dirs[m] / ("selected" if m == "extract_finetune" else "models") / "selection.json")
                         .read_text()) for m in METHODS}
    sweep = json.loads((dirs["tofa"] / "sweep" / "selection.json").read_text())
    rows = {"tofa": choice_rows(sel["tofa"], factors), "labelled_only": choice_rows(sel["labelled_only"], factors),
            "extract_finetune": finetuned_rows(study, sel["extract_finetune"], targets, factors)}
    sweep_rows = delivered(choice_rows(sweep, sweep_factors))
    bases = {
        "tofa": ([r["cpu_s"] for r in sweep_rows], f"selection of the {len(sweep_rows)} sweep targets "
                 f"(evaluated on {study.args.sweep_eval_images or 'all'} test images each)"),
        "labelled_only": ([r["cpu_s"] for r in delivered(rows["labelled_only"])],
                          "selection of its targets (evaluated on all test images)"),
        "extract_finetune": ([r["cpu_s"] for r in delivered(rows["extract_finetune"])],
                             f"selection (checked on {study.args.check_images} test images) + fine-tune (evaluated "
                             "on all test images) + export of its targets"),
    }
    methods = {m: method_entry(study, m, sel[m], rows[m], *bases[m]) for m in METHODS}
    selection_time = selection_times(sweep_rows, delivered(rows["tofa"]))
    comparison = compare(rows)
    k3 = {m: {"cpu_s": round(methods[m]["cost"]["preparation_total_cpu_s"]
                             + sum(r["cpu_s"] for r in delivered(rows[m])), 1),
              "delivered": len(delivered(rows[m])), "targets": len(targets)} for m in METHODS}
    return {
        "data": data_section(study, read_meta(dirs["tofa"] / "supernet")),
        "teacher": teacher_section(study, reference, teacher_cost(study)),
        "targets": [{"name": t.name, "factor": factors[t.name],
                     "budget_ms": t.resolve_budget(table_info(dirs["tofa"] / "supernet")["largest_subnet_ms"])}
                    for t in targets],
        "reference_ms": reference["teacher_ms"], "cost_table": table_info(dirs["tofa"] / "supernet"),
        "methods": methods,
        "sweep": {"factors": list(sweep_factors.values()), "delivered": len(sweep_rows),
                  "infeasible": sweep.get("infeasible", {}), "models": sweep_rows},
        "comparison": comparison, "same_subnet_gain": same_subnet_gain(study),
        "selection_time": selection_time, "steps": dict(study.ledger.steps),
        "checks": checks(methods, comparison, k3, selection_time), "cost_at_study_targets": k3,
    }


def same_subnet_gain(study: Study) -> dict[str, Any] | None:
    """(a) - (b) on the same subnets: the validation accuracies each supernet's predictor was fitted on (the same
    seeded sample of the same space, the same validation images), so neither the search's choice nor the latency
    measurement enters. None when a sample file is missing."""
    a = study.args
    key = f"n{a.predictor_samples}-v{a.predictor_val_images}-c{a.calib_images}"
    acc = {}
    for m in ("tofa", "labelled_only"):
        path = study.dir(m) / "supernet" / "predictor" / key / "samples.json"
        if not path.is_file():
            return None
        acc[m] = {s["key"]: float(s["accuracy"]) for s in json.loads(path.read_text())}
    gains = [100 * (acc["tofa"][k] - acc["labelled_only"][k]) for k in acc["tofa"] if k in acc["labelled_only"]]
    if not gains:
        return None
    return {"subnets": len(gains), "val_images": a.predictor_val_images,
            "mean_points": round(statistics.mean(gains), 2), "median_points": round(statistics.median(gains), 2),
            "min_points": round(min(gains), 2), "max_points": round(max(gains), 2),
            "share_at_goal": round(sum(g >= GAIN_GOAL_POINTS for g in gains) / len(gains), 3)}


def compare(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per target: every method's top-1 and the semi-supervised supernet's gain over the other two (points)."""
    out = []
    for i, base in enumerate(rows["tofa"]):
        entry: dict[str, Any] = {"target": base["target"], "factor": base["factor"]}
        for m in METHODS:
            r = rows[m][i]
            entry[m] = r.get("accuracy")
            entry[f"{m}_meets_budget"] = r.get("meets_budget")
        for other in ("labelled_only", "extract_finetune"):
            ok = entry["tofa"] is not None and entry[other] is not None
            entry[f"gain_vs_{other}_points"] = round(100 * (entry["tofa"] - entry[other]), 2) if ok else None
        out.append(entry)
    return out


def checks(methods: dict[str, Any], comparison: list[dict[str, Any]], k3: dict[str, dict[str, Any]],
           selection_time: dict[str, Any]) -> dict[str, Any]:
    """The issue's "Done when" items, decided from the measurements."""
    tofa_rows = methods["tofa"]["models"]
    gains_b = [c["gain_vs_labelled_only_points"] for c in comparison]
    gains_c = [c["gain_vs_extract_finetune_points"] for c in comparison]
    cost = methods["tofa"]["cost"]
    return {
        "every_tofa_subnet_meets_budget": all(r["delivered"] and r["meets_budget"] for r in tofa_rows),
        "semi_supervised_beats_labelled_only_everywhere": all(g is not None and g > 0 for g in gains_b),
        "gain_vs_labelled_only_goal_points": GAIN_GOAL_POINTS,
        "gain_vs_labelled_only_meets_goal": all(g is not None and g >= GAIN_GOAL_POINTS for g in gains_b),
        "beats_extract_finetune_everywhere": all(g is not None and g > 0 for g in gains_c),
        "cheaper_than_extract_finetune_at_study_targets": (
            all(v["delivered"] == v["targets"] for v in k3.values())
            and k3["tofa"]["cpu_s"] < k3["extract_finetune"]["cpu_s"]),
        f"cheaper_than_extract_finetune_at_k{K_VALUES[-1]}": cheaper_at(cost, methods["extract_finetune"]["cost"],
                                                                    K_VALUES[-1]),
        "break_even_k": break_even(cost, methods["extract_finetune"]["cost"]),
        "training_paid_once_unchanged_by_selection": methods["tofa"]["supernet"]["unchanged_by_selection"],
        "selection_within_goal": selection_time["meets_goal"],
    }


def cheaper_at(tofa: dict[str, Any], other: dict[str, Any], k: int) -> bool | None:
    """Whether (a)'s total for ``k`` targets is below the other method's (None when either is unknown): the
    issue's cost criterion at the most targets it asks to measure."""
    a, b = tofa["total_cpu_s"].get(str(k)), other["total_cpu_s"].get(str(k))
    return None if a is None or b is None else a < b


def break_even(tofa: dict[str, Any], other: dict[str, Any]) -> int | None:
    """The smallest K from which (a) costs no more than (c) in total (None if it never does)."""
    if tofa["per_target_cpu_s"] is None or other["per_target_cpu_s"] is None:
        return None
    gap = tofa["preparation_total_cpu_s"] - other["preparation_total_cpu_s"]
    slope = other["per_target_cpu_s"] - tofa["per_target_cpu_s"]
    if gap <= 0:
        return 1
    if not slope > 0:
        return None
    return max(1, math.ceil(gap / slope))


def data_section(study: Study, meta: SupernetMeta) -> dict[str, Any]:
    a = study.args
    splits = study.source.splits(a.resolution)
    return {"spec": a.data, "resolution": a.resolution, "train": len(splits.train),  # type: ignore[arg-type]
            "val": len(splits.val), "test": len(splits.test), "label_fraction": a.label_fraction,  # type: ignore
            "labelled": meta.data.get("labelled"), "unlabelled": meta.data.get("unlabelled"), "seed": a.seed}


def teacher_section(study: Study, reference: dict[str, Any], cost: float) -> dict[str, Any]:
    card = read_card(study.teacher)
    return {"dir": str(study.teacher), "arch": card.arch, "accuracy": card.accuracy,
            "reused": study.teacher != study.out / "teacher", "cost_cpu_s": cost, "latency_ms": reference["teacher_ms"],
            "params": card.params, "macs": card.macs, "data": card.data}


# ---------------------------------------------------------------------------------------------------- report


def finite(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by ``None`` (strict JSON; e.g. Kendall tau of constant scores)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def yes(flag: Any) -> str:
    return "-" if flag is None else ("yes" if flag else "**no**")


def render_md(doc: dict[str, Any]) -> str:
    """``tofa_study.md``: every figure comes from ``doc`` (the json)."""
    sections = (md_header, md_models, md_gain, md_cost, md_predictor, md_checks)
    return "\n".join(line for section in sections for line in section(doc)) + "\n"


def md_header(doc: dict[str, Any]) -> list[str]:
    s, d, t = doc["settings"], doc["data"], doc["teacher"]
    smoke = " (**smoke run: plumbing only, the figures mean nothing**)" if s["smoke"] else ""
    origin = "fine-tuned by this study on the labelled share" if not t["reused"] else "reused"
    trained_on = t["data"].get("labels") or f"{t['data'].get('train', '?')} training images"
    budgets = ", ".join(f"{x['name']} = {x['budget_ms']:.4f} ms" for x in doc["targets"])
    return [
        "# TOFA study: one semi-supervised supernet vs labelled-only vs per-target extraction + fine-tuning", "",
        f"Command: `{doc['command']}`{smoke}. Machine: {doc['machine']['cpu']}, {doc['machine'].get('cores', '?')} "
        f"cores, torch {doc['machine']['torch']}, onnxruntime {doc['machine']['onnxruntime']}.", "",
        f"Data: {d['spec']} at {d['resolution']} px, {d['train']} training images ({d['labelled']} labelled = "
        f"{d['label_fraction']:.0%}, the rest unlabelled), {d['val']} validation, {d['test']} test (every top-1 "
        f"below is on all {d['test']}). Teacher: {t['arch']} ({t['dir']}, {origin}; trained on {trained_on}; "
        f"test top-1 {fmt(t['accuracy'])}; {fmt(t['cost_cpu_s'], '.0f')} CPU-s).", "",
        f"Targets: ONNX Runtime CPU, batch 1, 1 thread, median of {s['repeats']} runs after {s['warmup']} warm-ups, "
        "each delivered model timed after export in alternation with the largest subnet (the teacher rebuilt "
        "from the supernet) and put on the scale of the latency table, where the largest subnet took "
        f"{fmt(doc['cost_table'].get('largest_subnet_ms'))} ms. Budgets are fractions of that value, the same "
        f"for every method (one shared table): {budgets}. The teacher's own `model.onnx`, timed alone: "
        f"{doc['reference_ms']:.4f} ms (best of 3; the machine's speed drifts, hence the paired timing).", "",
        "Methods:", "",
        f"- **(a)** `tofa`: supernet trained once ({s['steps']} sandwich steps of {s['batch_size']} labelled + "
        f"{s['batch_size'] * s['unlabelled_ratio']} unlabelled images: the largest subnet, the smallest and "
        f"{s['n_random']} random ones; unified semi-supervised loss), then `select_subnets` per target (accuracy "
        f"predictor on {s['predictor_samples']} subnets x {s['predictor_val_images']} val images, latency table, "
        f"evolution {s['population']} x {s['generations']}, BN recalibrated on {s['calib_images']} training images);",
        "- **(b)** `labelled_only`: the same recipe with `semi_supervised: false` (the labelled share only, BN "
        "recalibration included), same selection;",
        "- **(c)** `extract_finetune` (OFA-style, no supernet training): the supernet built from the same teacher and "
        "trained for 0 steps; the same predictor (fitted on *its* subnets), latency table and evolutionary search "
        "pick a subnet per target, which is extracted (BN recalibrated on labelled images), fine-tuned on the "
        f"labelled share with the benchmark's shared recipe ({s['ft_epochs']} epoch(s), AdamW 1e-3 one-cycle, weight "
        "decay 0.01, label smoothing 0.1, horizontal flip), exported and measured. No supernet pretrained on a "
        "large data set exists here: the "
        "pretrained teacher's weights stand in for it.", "",
        "Supernets after training (test top-1 of the largest / smallest subnet, BN recalibrated): "
        + "; ".join(f"{m} {fmt(info['supernet']['eval'].get('largest_accuracy'))} / "
                    f"{fmt(info['supernet']['eval'].get('smallest_accuracy'))}"
                    for m, info in doc["methods"].items() if info["supernet"]["eval"]) + ".", "",
    ]


def md_models(doc: dict[str, Any]) -> list[str]:
    lines = ["## Delivered models (measured after export)", "",
             "| method | target | budget ms | latency ms | met | test top-1 | res | depths | params | MACs | CPU-s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, info in doc["methods"].items():
        for r in info["models"]:
            if not r["delivered"]:
                lines.append(f"| {m} | {r['target']} | - | - | **not delivered** | - | - | - | - | - | - |")
                continue
            lines.append(f"| {m} | {r['target']} | {r['budget_ms']:.4f} | {r['latency_ms']:.4f} | "
                         f"{yes(r['meets_budget'])} | {r['accuracy']:.4f} | {r['resolution']} | "
                         f"{'-'.join(map(str, r['depths']))} | {r['params']:,} | {r['macs']:,} | {r['cpu_s']:.1f} |")
    before = ", ".join(f"{r['target']} {fmt(r.get('accuracy_before_finetune'))}"
                       for r in doc["methods"]["extract_finetune"]["models"] if r["delivered"])
    not_delivered = [f"{m} {r['target']}: {r['reason']}" for m, info in doc["methods"].items()
                     for r in info["models"] if not r["delivered"]]
    lines += ["", "CPU-s per target: (a) and (b) selection (search, extraction, BN recalibration, evaluation on the "
              "test split, export, measurement); (c) the same selection + fine-tune + export. (c) top-1 before "
              f"fine-tuning ({doc['settings']['check_images']} test images): {before or '-'}."]
    if not_delivered:
        lines += ["", "Not delivered: " + "; ".join(not_delivered) + "."]
    return [*lines, ""]


def md_gain(doc: dict[str, Any]) -> list[str]:
    lines = ["## Semi-supervised gain (test top-1 points)", "",
             "| target | (a) tofa | (b) labelled only | (c) extract + fine-tune | (a) - (b) | (a) - (c) |",
             "|---|---|---|---|---|---|"]
    for c in doc["comparison"]:
        lines.append(f"| {c['target']} | {fmt(c['tofa'])} | {fmt(c['labelled_only'])} | "
                     f"{fmt(c['extract_finetune'])} | {fmt(c['gain_vs_labelled_only_points'], '+.2f')} | "
                     f"{fmt(c['gain_vs_extract_finetune_points'], '+.2f')} |")
    same = doc.get("same_subnet_gain")
    if same:
        lines += ["", f"Same subnets in both supernets ((a) - (b) on the {same['subnets']} subnets each predictor was "
                  f"fitted on, {same['val_images']} validation images): mean {same['mean_points']:+.2f}, median "
                  f"{same['median_points']:+.2f}, range {same['min_points']:+.2f} .. {same['max_points']:+.2f} "
                  f"points; {100 * same['share_at_goal']:.0f} % of them gain >= {GAIN_GOAL_POINTS:g} points. The "
                  "delivered models above differ also by the subnet each search chose and by where its "
                  "measurement after export fell within the budget."]
    return [*lines, ""]


def md_cost(doc: dict[str, Any]) -> list[str]:
    sweep = doc["sweep"]
    lines = ["## Cost of K targets (CPU-seconds)", "",
             "cost(K) = one-off preparation + per-target work. (a)'s per-target work was measured for "
             f"{sweep['delivered']} targets selected from the trained supernet (budgets spread over "
             f"{min(sweep['factors']):g}x..{max(sweep['factors']):g}x of the reference); its cost(K) sums K of them "
             "spread over that range. Entries marked * are K x the mean of the targets actually run.", "",
             "| method | teacher | supernet training ((c): building) | predictor | latency table | per target | "
             + " | ".join(f"K={k}" for k in K_VALUES) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(K_VALUES)]
    for m, info in doc["methods"].items():
        c, p = info["cost"], info["cost"]["preparation_cpu_s"]
        totals = " | ".join(f"{fmt(c['total_cpu_s'][str(k)], '.0f')}{'*' if c['extrapolated'][str(k)] else ''}"
                            for k in K_VALUES)
        train = p["supernet_train"] + p.get("supernet_build", 0.0)
        lines.append(f"| {m} | {p['teacher']:.0f} | {train:.0f} | {p['predictor']:.0f} | {p['cost_table']:.0f} | "
                     f"{fmt(c['per_target_cpu_s'], '.1f')} | {totals} |")
    a = doc["methods"]["tofa"]["cost"]
    lines += ["", "(a) by K: the supernet is trained once (its weights and training record are unchanged after all "
              "selections: " + yes(doc["methods"]["tofa"]["supernet"]["unchanged_by_selection"]) + "); only the "
              "selection grows with K:", "", "| K | supernet training | selection (sum over K targets) |",
              "|---|---|---|"]
    for k in K_VALUES:
        star = "*" if a["extrapolated"][str(k)] else ""
        lines.append(f"| {k} | {a['preparation_cpu_s']['supernet_train']:.0f} | "
                     f"{fmt(a['selection_cpu_s'][str(k)], '.0f')}{star} |")
    totals = ", ".join(f"{m} {v['cpu_s']:.0f} CPU-s ({v['delivered']}/{v['targets']} delivered)"
                       for m, v in doc["cost_at_study_targets"].items())
    lines += ["", "Per-target bases: " + "; ".join(f"{m}: {info['cost']['per_target_basis']}"
                                                   for m, info in doc["methods"].items()) + ".",
              f"Total for the {len(doc['targets'])} study targets (preparation + their measured per-target work): "
              f"{totals}; from the per-target means, (a) costs no more than (c) from K = "
              f"{fmt(doc['checks']['break_even_k'], 'd')}.", ""]
    return lines


def md_predictor(doc: dict[str, Any]) -> list[str]:
    st, ct = doc["selection_time"], doc["cost_table"]
    lines = ["## Accuracy predictor and selection time", "",
             "| supernet | Kendall tau | RMSE | held-out subnets | val top-1 range | CPU-s (once) |",
             "|---|---|---|---|---|---|"]
    for m, info in doc["methods"].items():
        pr = info["predictor"]
        lines.append(f"| {m} | {fmt(pr.get('kendall_tau'), '.3f')} | {fmt(pr.get('rmse'), '.4f')} | "
                     f"{pr.get('n_test', '-')} | {fmt(pr.get('acc_min'), '.3f')}-{fmt(pr.get('acc_max'), '.3f')} | "
                     f"{fmt(pr.get('cpu_s'), '.0f')} |")
    lines += ["", "Per-target search (evolution over the predictor and the latency table, once both exist): median "
              f"{fmt(st['search_ms_median'], '.1f')} ms, max {fmt(st['search_ms_max'], '.1f')} ms over {st['n']} "
              f"targets (goal <= {st['goal_ms']:.0f} ms: {yes(st['meets_goal'])}). Delivering a target (extraction, "
              "BN recalibration, evaluation, export, measurement) then takes "
              f"{fmt(st['per_target_cpu_s_median'], '.1f')} CPU-s (median) and "
              f"{fmt(st['per_target_wall_s'], '.1f')} s wall per target in the sweep. Latency "
              f"table: {ct.get('parts')} parts, leave-one-out max |rel err| {fmt(ct.get('loo_max_abs'), '.3f')}, "
              f"{fmt(ct.get('cpu_s'), '.0f')} CPU-s, measured once and shared by the three supernets (same shapes; "
              "each method's cost still counts it).", ""]
    return lines


def md_checks(doc: dict[str, Any]) -> list[str]:
    lines = ["## Done when (issue 4)", "", "| check | result |", "|---|---|"]
    for key, value in doc["checks"].items():
        lines.append(f"| {key.replace('_', ' ')} | {yes(value) if isinstance(value, bool) else fmt(value, '')} |")
    lines += ["", "## Steps", "", "`found`: the output existed before this study recorded the step (e.g. a given "
              "teacher); wall time of a resumed step covers its last attempt.", "",
              "| step | status | CPU-s | wall s |", "|---|---|---|---|"]
    for name, rec in doc["steps"].items():
        lines.append(f"| {name} | {rec['status']} | {fmt(rec['cpu_s'], '.1f')} | {fmt(rec['wall_s'], '.1f')} |")
    return [*lines, "", "Settings: `" + json.dumps(doc["settings"], sort_keys=True) + "`"]


# ------------------------------------------------------------------------------------------------------ main


def run_study(study: Study) -> dict[str, Any] | None:
    """Every step in order (each skipped when done), then the summary (None after ``--train-only``)."""
    a, ledger = study.args, study.ledger
    teacher_step(study)
    reference = reference_step(study)
    factors = {factor_name("ort1", f): f for f in a.factors}
    targets = [latency_target(a, name, f) for name, f in factors.items()]
    (low, high), n = a.sweep_range, a.sweep_targets
    spaced = [round(low + (high - low) * i / max(1, n - 1), 4) for i in range(n)]
    sweep_factors = {factor_name("sweep", f): f for f in spaced}
    sweep = [latency_target(a, name, f) for name, f in sweep_factors.items()]

    for method, semi in SUPERNET_METHODS.items():
        if a.train_only and method not in a.train_only:
            continue
        root = study.dir(method)
        job = supernet_job(study, root / "supernet", semi_supervised=semi)
        done = (root / "supernet" / META_FILE).is_file()
        if method == "tofa" and a.tofa_supernet is not None and not done:
            ledger.run("tofa:adopt", False, lambda j=job: adopt_supernet(Path(a.tofa_supernet), j))
            done = True
        ledger.run(f"{method}:train", done, lambda j=job: train_supernet(j, data=study.source))
        if a.train_only is not None:
            continue
        record_trained(root / "supernet")
        if method != "tofa":
            share_cost_tables(study.dir("tofa") / "supernet", root / "supernet")
        select_step(study, f"{method}:select", root / "supernet", targets, root / "models", None)

    if a.train_only is not None:
        return None
    root = study.dir("extract_finetune")
    ledger.run("extract_finetune:build", (root / "supernet" / META_FILE).is_file(),
               lambda: build_untrained_supernet(study, root / "supernet"))
    record_trained(root / "supernet")
    share_cost_tables(study.dir("tofa") / "supernet", root / "supernet")
    selection = select_step(study, "extract_finetune:select", root / "supernet", targets, root / "selected",
                            a.check_images)
    chosen = {c["target"]: c for c in selection["choices"]}
    for target in targets:
        if target.name in chosen:
            out = root / "models" / target.name
            ledger.run(f"extract_finetune:finetune:{target.name}", finetuned_done(out, target),
                       lambda c=chosen[target.name], t=target, o=out: finetune_choice(study, c, t, o))
    # last: the cost of many targets (the comparisons above come first; an interrupted sweep resumes per target)
    select_step(study, "tofa:sweep", study.dir("tofa") / "supernet", sweep, study.dir("tofa") / "sweep",
                a.sweep_eval_images)
    return summarize(study, reference, targets, factors, sweep_factors)


def main(argv: Sequence[str] | None = None, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the study and write ``tofa_study.json`` + ``tofa_study.md``; returns the json document."""
    args = parse_args(argv)
    study = open_study(args, log)
    wall0 = time.perf_counter()
    summary = run_study(study)
    if summary is None:
        log(f"supernets trained in {args.out}; rerun without --train-only, pinned to one core, for the rest")
        return {}
    command = "python benchmarks/tofa_study.py " + " ".join(shlex.quote(x) for x in (
        sys.argv[1:] if argv is None else argv))
    doc = finite({"command": command.strip(), "machine": machine_info(), "settings": settings_record(args) | {
        "smoke": args.smoke, "out": str(args.out)}, "wall_s_this_invocation": round(time.perf_counter() - wall0, 1),
        **summary})
    write_json(Path(args.results) / "tofa_study.json", doc)
    md = render_md(doc)
    write_text(Path(args.results) / "tofa_study.md", md)
    log(md)
    return doc


if __name__ == "__main__":
    try:
        main()
    except BespokeError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        sys.exit(2)
