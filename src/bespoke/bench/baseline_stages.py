"""The built-in stages: teacher fine-tunes, donor fine-tunes, pruned teacher + KD per budget; each in two
label regimes (all training labels, and only the labelled share); for the label-scarce runs also the teacher
self-trained on labelled + unlabelled images and every donor distilled from it on all images; and for int8
targets, each of the full-label ones quantized after training (PTQ)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from torch import nn

from bespoke.baselines import (
    BudgetInfo,
    Teacher,
    TrainData,
    distilled_from,
    finetune_donor,
    prune_and_distill,
    self_trained_teacher,
)
from bespoke.bench.context import TEACHER, TEACHER_LABELLED, TEACHER_SEMI, BenchContext
from bespoke.bench.measuring import REFERENCE_TRIES, measure_model_dir, measure_record, measurement_targets
from bespoke.bench.preset import ModelSpec
from bespoke.bench.stages import StageLedger, StageRecord, run_model_stage
from bespoke.delivery import Reference, measure_against
from bespoke.errors import BespokeError
from bespoke.export import WEIGHTS, ModelCard, load_model_dir, read_card
from bespoke.quantize import quantize_to
from bespoke.targets import Target, measure


def _measured(ctx: BenchContext, record: StageRecord) -> StageRecord:
    """The record, once its models are measured (see :func:`~bespoke.bench.measuring.measure_record`)."""
    measure_record(ctx, record)
    return record


def _suffix(labelled_only: bool, ctx: BenchContext) -> str:
    return f" ({ctx.preset.data.label_fraction:.0%} labels)" if labelled_only else ""


def teacher_stages(ctx: BenchContext, ledger: StageLedger) -> list[StageRecord]:
    """Fine-tune the teacher on all labels and on the labelled share, self-train the latter on every image (the
    semi-supervised teacher, when wanted); resolve the budgets against the first."""
    spec = ctx.preset.teacher
    records = []
    wanted = [(False, TEACHER)]
    if (ctx.preset.label_scarce or ctx.preset.wants_semi_teacher()
            or any(ctx.preset.engine_teacher(e) == "labelled" for e in ctx.preset.engines)):
        wanted.append((True, TEACHER_LABELLED))
    for labelled_only, key in wanted:
        directory = ctx.out / "models" / key
        ctx.teacher_dirs[key] = directory
        method = f"teacher {spec.model}{_suffix(labelled_only, ctx)}"
        records.append(_measured(ctx, run_model_stage(
            ledger, key, directory, lambda lo=labelled_only, m=method, d=directory: finetune_donor(
                spec.model, ctx.train_data(lo), ctx.preset.train_config(spec), d, method=m),
            method=method, role="one-off", log=ctx.log)))
    if records[0].status == "failed":
        raise BespokeError(f"the teacher could not be fine-tuned: {records[0].message}")
    if ctx.preset.wants_semi_teacher() and records[-1].status in ("done", "skipped"):
        records.append(_semi_teacher_stage(ctx, ledger))
    ctx.budgets.update(resolve_budgets(ctx))
    return records


def _semi_teacher_stage(ctx: BenchContext, ledger: StageLedger) -> StageRecord:
    """The labelled-share teacher self-trained on every training image (``semi_teacher:``)."""
    spec, directory = ctx.preset.teacher, ctx.out / "models" / TEACHER_SEMI
    ctx.teacher_dirs[TEACHER_SEMI] = directory
    method = f"semi-supervised teacher {spec.model}{_suffix(True, ctx)}"

    def make() -> ModelCard:
        return self_trained_teacher(ctx.teacher_dirs[TEACHER_LABELLED], ctx.labelled, ctx.unlabelled,
                                    ctx.all_images_data(), ctx.preset.train_config(spec),
                                    ctx.preset.semi_teacher.rounds, directory, method=method)

    return _measured(ctx, run_model_stage(ledger, TEACHER_SEMI, directory, make, method=method, role="one-off",
                                          uses=[TEACHER_LABELLED], log=ctx.log))


def resolve_budgets(ctx: BenchContext) -> dict[str, float]:
    """Absolute budget per target: relative budgets x the (all-labels) teacher's value on that target.

    Targets that measure alike (runtime, threads, batch, opt level) share one reference measurement, so
    0.7x / 0.5x / 0.35x are fractions of the same number; where the standard measurement (``measure:``) has
    those settings, its value (the teacher's reported latency) is the reference.
    """
    directory = ctx.teacher_dirs[TEACHER]
    standard = measurement_targets(ctx.preset.measure)
    groups: dict[tuple, list[Target]] = {}
    for target in ctx.targets:
        if target.budget is not None:
            groups.setdefault(_settings(target), []).append(target)
    model = None
    budgets = {}
    for key, members in groups.items():
        probe = next((s for s in standard if _settings(s) == key), max(members, key=lambda t: t.repeats))
        if probe.runtime == "onnxruntime":  # the delivered file, measured like every model (cached in the card)
            reference = measure_model_dir(directory, [probe], tries=REFERENCE_TRIES, log=ctx.log).latency_ms[probe.name]
        else:
            model = model or load_model_dir(directory)[0]
            reference = measure(model, probe, ctx.resolution).value
        for target in members:
            ctx.references[target.name] = reference
            budgets[target.name] = float(target.resolve_budget(reference))  # type: ignore[arg-type]
            ctx.log(f"[bench] budget {target.name}: {target.budget} x {reference:.4g} = "
                    f"{budgets[target.name]:.4g} {target.unit}")
    return budgets


def _settings(target: Target) -> tuple:
    return (target.runtime, target.threads, target.batch, target.opt_level, target.precision, target.table)


def donor_stages(ctx: BenchContext, ledger: StageLedger) -> list[StageRecord]:
    """Fine-tune every donor on all labels and on the labelled share."""
    records = []
    for spec in ctx.preset.donors:
        for labelled_only in (False, True)[:1 + ctx.preset.label_scarce]:
            name = f"donor-{spec.model}" + ("-labelled" if labelled_only else "")
            method = f"finetuned {spec.model}{_suffix(labelled_only, ctx)}"
            directory = ctx.out / "models" / name
            records.append(_measured(ctx, run_model_stage(
                ledger, name, directory, lambda s=spec, lo=labelled_only, m=method, d=directory: finetune_donor(
                    s.model, ctx.train_data(lo), ctx.preset.train_config(s), d, method=m, engine="baseline-donor"),
                method=method, role="one-off", log=ctx.log)))
    return records + _distilled_donor_stages(ctx, ledger)


def _distilled_donor_stages(ctx: BenchContext, ledger: StageLedger) -> list[StageRecord]:
    """Every donor's labelled-share fine-tune distilled from the semi-supervised teacher on every image."""
    section, semi = ctx.preset.semi_teacher, ledger.get(TEACHER_SEMI)
    if not (ctx.preset.wants_semi_teacher() and section.donors and ctx.preset.label_scarce):
        return []
    if semi is None or semi.status not in ("done", "skipped"):
        return []
    records = []
    for spec in ctx.preset.donors:
        start, name = f"donor-{spec.model}-labelled", f"donor-{spec.model}-kd"
        done = ledger.get(start)
        if done is None or done.status not in ("done", "skipped"):
            continue
        if not (ctx.out / "models" / start / WEIGHTS).is_file():  # a carried run: the card came, not the weights
            ctx.log(f"[bench] {name}: left out, {start} has no weights here (delete its directory to retrain it)")
            continue
        method = f"{spec.model} + KD from semi-supervised teacher{_suffix(True, ctx)}"
        directory = ctx.out / "models" / name

        def make(s: ModelSpec = spec, start: str = start, m: str = method, d: Path = directory) -> ModelCard:
            return distilled_from(ctx.out / "models" / start, ctx.teacher_dirs[TEACHER_SEMI], ctx.labelled,
                                  ctx.unlabelled, ctx.all_images_data(), ctx.preset.train_config(s),
                                  ctx.preset.semi_teacher.rounds, d, method=m)

        records.append(_measured(ctx, run_model_stage(ledger, name, directory, make, method=method,
                                                      role="one-off", uses=[TEACHER_SEMI, start], log=ctx.log)))
    return records


def pruned_stages(ctx: BenchContext, ledger: StageLedger) -> list[StageRecord]:
    """Prune each teacher to every budget and retrain with KD from it (on the same labels it saw)."""
    loaded: dict[str, Teacher] = {}  # teachers load on first use: a fully resumed run never loads them

    def teacher(key: str) -> Teacher:
        if key not in loaded:
            model, card = load_model_dir(ctx.teacher_dirs[key])
            loaded[key] = Teacher(model=model, arch_config=card.arch_config, arch=card.arch, mean=card.mean,
                                  std=card.std)
        return loaded[key]

    if not ctx.preset.pruned.enabled:
        return []
    # (teacher, name suffix, method, the training data getter): all labels; the labelled share with KD from its
    # own teacher; and, label-scarce with a semi-supervised teacher, KD from that one on every image
    regimes: list[tuple[str, str, str, Callable[[], TrainData]]] = [
        (TEACHER, "", "pruned+KD", partial(ctx.train_data, False))]
    if ctx.preset.label_scarce:
        regimes.append((TEACHER_LABELLED, "-labelled", f"pruned+KD{_suffix(True, ctx)}",
                        partial(ctx.train_data, True)))
        if ctx.preset.wants_semi_teacher():
            regimes.append((TEACHER_SEMI, "-kd", f"pruned + KD from semi-supervised teacher{_suffix(True, ctx)}",
                            ctx.all_images_data))
    records = []
    for key, suffix, method, data in regimes:
        done = ledger.get(key)
        if done is None or done.status not in ("done", "skipped"):
            continue
        for target in ctx.targets:
            if target.name not in ctx.budgets:
                continue
            name = f"pruned-{target.name}{suffix}"
            directory = ctx.out / "models" / name
            make = _pruned_maker(ctx, partial(teacher, key), target, data, method, directory)
            records.append(_measured(ctx, run_model_stage(ledger, name, directory, make, method=method,
                                                          role="per-target", target=target.name, uses=[key],
                                                          log=ctx.log)))
    return records


def _pruned_maker(ctx: BenchContext, get_teacher: Callable[[], Teacher], target: Target,
                  data: Callable[[], TrainData], method: str, directory: Path) -> Callable[[], ModelCard]:
    reference: list[Reference] = []  # the teacher, exported once when the first candidate is measured

    def measure_value(model: nn.Module) -> float:
        """The candidate measured as a delivered model is: against the teacher, on the scale the budget was set on."""
        if not reference:
            reference.append(Reference(get_teacher().model, ctx.resolution, ctx.references.get(target.name)))
        return measure_against(model, reference[0], target, ctx.resolution)[0].value

    def make() -> ModelCard:
        budget = BudgetInfo(target=target.name, text=str(target.budget), value=ctx.budgets[target.name],
                            unit=target.unit)
        teacher = replace(get_teacher(), value=ctx.references.get(target.name))  # saves the ratio-0 probe
        return prune_and_distill(teacher, data(), ctx.preset.pruned_config(),
                                 directory, measure=measure_value, budget=budget, search=ctx.preset.pruned.search,
                                 method=method, log=ctx.log)

    return make


def ptq_stages(ctx: BenchContext, ledger: StageLedger) -> list[StageRecord]:
    """For every int8 target: the teacher, every donor and the teacher pruned for that target (all labels),
    quantized after training (``bespoke.quantize.quantize_to``: calibrated on training images, the setting chosen
    on validation images timed on the target) into ``models/ptq-<source>-<target>``. A source that did not finish,
    or whose weights were not carried to this machine, is left out."""
    section = ctx.preset.ptq
    int8 = [t for t in ctx.targets if t.precision == "int8" and t.name in ctx.budgets]
    if not section.enabled or not int8:
        return []
    records = []
    for target in int8:
        sources = [TEACHER, *(f"donor-{s.model}" for s in ctx.preset.donors), f"pruned-{target.name}"]
        for key in sources:
            done, source = ledger.get(key), ctx.out / "models" / key
            if done is None or done.status not in ("done", "skipped") or not (source / WEIGHTS).is_file():
                continue
            name = f"ptq-{key}" if key.endswith(target.name) else f"ptq-{key}-{target.name}"
            directory = ctx.out / "models" / name

            def make(source: Path = source, directory: Path = directory, target: Target = target) -> ModelCard:
                return quantize_to(source, directory, ctx.splits, target, calibration=section.calibration,
                                   selection=section.selection, seed=ctx.preset.data.seed,
                                   agreement_threshold=section.agreement, search=section.search, log=ctx.log)

            records.append(_measured(ctx, run_model_stage(
                ledger, name, directory, make, method=f"{read_card(source).method or key} int8",
                role="per-target", target=target.name, uses=[key], log=ctx.log)))
    return records
