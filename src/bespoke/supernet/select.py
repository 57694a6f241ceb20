"""On-the-fly selection: one subnet per target from a trained supernet, with no training.

Once per supernet: the accuracy predictor (cached). Once per measurement setting: the cost table (cached).
Per target: evolutionary search under the budget (milliseconds), then the chosen subnet is extracted, its BN
recalibrated on training images, evaluated on the test split, exported as a model directory and measured again
after export. If the exported model misses its budget (prediction error), the search reruns with a budget
tightened by the miss, down to the smallest subnet, a bounded number of times; a target still missed gets no
model.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bespoke.delivery import BudgetBracket, Pick, RetryPolicy, retry_to_budget, write_delivery
from bespoke.errors import BespokeError
from bespoke.export import (
    CARD,
    ONNX,
    SHARED_COST_PREFIX,
    ModelCard,
    read_card,
    save_model_dir,
    update_card,
)
from bespoke.quantize import qat_finetune, qat_recipe, quantize_to
from bespoke.supernet.config import SelectConfig
from bespoke.supernet.data import DataSource, SpecSource
from bespoke.supernet.efficiency import SubnetCosts, build_cost_table
from bespoke.supernet.elastic import ElasticNet
from bespoke.supernet.evaluator import SubnetEvaluator
from bespoke.supernet.evolution import InfeasibleBudget, evolve
from bespoke.supernet.extract import extract_subnet, subnet_arch_config
from bespoke.supernet.genome import GenomeLayout
from bespoke.supernet.predictor import (
    PredictorFit,
    collect_samples,
    fit_predictor,
    load_predictor,
    read_samples,
    sample_configs,
    save_predictor,
)
from bespoke.supernet.report import write_selection_report
from bespoke.supernet.space import SubnetConfig
from bespoke.supernet.static import StaticNet
from bespoke.supernet.store import SupernetMeta, calibration_pool, load_supernet
from bespoke.targets import (
    Measurement,
    Target,
    as_deployed,
    export_onnx_bytes,
    get_runtime,
    load_targets,
    measure,
    measure_onnx,
    measure_paired,
)
from bespoke.targets.measure import image_shape
from bespoke.train import cpu_seconds
from bespoke.utils.atomic import write_json
from bespoke.utils.device import pick_device
from bespoke.utils.lock import locks_output

SHARED = SHARED_COST_PREFIX
#: Where an int8 target's fp32 subnet (the twin its INT8 graph is quantized from) is kept, under ``out``.
FP32_TWINS = ".fp32"


@dataclass
class TargetChoice:
    """The subnet delivered for one target."""

    target: str
    unit: str
    budget: str | None
    budget_resolved: float | None
    config: dict[str, Any]
    predicted_accuracy: float
    predicted_cost: float
    measured_cost: float
    accuracy: float
    meets_budget: bool
    search_ms: float
    attempts: int
    model_dir: str
    params: int | None = None
    macs: int | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0


@dataclass
class SelectResult:
    out: Path
    choices: list[TargetChoice]
    predictor: dict[str, Any]
    cost_cpu_s: dict[str, float] = field(default_factory=dict)
    infeasible: dict[str, str] = field(default_factory=dict)


def _source(meta: SupernetMeta, data: DataSource | None) -> DataSource:
    if data is not None:
        return data
    spec = meta.data.get("spec")
    if not spec:
        raise BespokeError("the supernet was trained on in-memory data; pass the same data to select_subnets",
                           "select_subnets(..., data=ResizedSource(splits))")
    return SpecSource(spec, seed=int(meta.data["seed"]), val_fraction=float(meta.data["val_fraction"]),
                      train_limit=meta.data.get("train_limit"), test_limit=meta.data.get("test_limit"))


def ensure_predictor(net: ElasticNet, meta: SupernetMeta, source: DataSource, directory: Path,
                     cfg: SelectConfig, device: torch.device
                     ) -> tuple[PredictorFit, list[tuple[SubnetConfig, float]], float]:
    """The cached predictor of the supernet, or a new one (samples measured on val).

    Returns the predictor, its samples (config, val accuracy) and the CPU-seconds it cost (once, including what
    an interrupted earlier attempt spent on the samples it left in the cache).
    """
    pdir = directory / "predictor" / f"n{cfg.predictor_samples}-v{cfg.predictor_val_images}-c{cfg.calib_images}"
    fit = load_predictor(pdir, net.space)
    if fit is not None:
        return fit, read_samples(pdir / "samples.json"), float(fit.metrics.get("cpu_s", 0.0))
    cpu0 = cpu_seconds()
    evaluator = SubnetEvaluator(source, meta.teacher.mean, meta.teacher.std, split="val",
                                limit=cfg.predictor_val_images, calib_images=cfg.calib_images,
                                calib_batch=cfg.calib_batch, seed=cfg.seed,
                                calib_labelled=calibration_pool(meta.job), device=device)
    cfgs = sample_configs(net.space, cfg.predictor_samples, cfg.seed)
    samples, carried_cpu_s = collect_samples(cfgs, lambda c: evaluator(net, c)[1], pdir / "samples.json")
    fit = fit_predictor(net.space, samples, seed=cfg.seed)
    fit.metrics["cpu_s"] = round(cpu_seconds() - cpu0 + carried_cpu_s, 1)
    save_predictor(pdir, fit, {"samples": len(samples), "val_images": cfg.predictor_val_images})
    return fit, samples, fit.metrics["cpu_s"]


def _measure_after_export(ctx: _Context, model: torch.nn.Module, model_dir: Path, target: Target, resolution: int,
                          table: SubnetCosts, predicted: float) -> Measurement:
    """The delivered model measured on ``target``; a device-table target can only be predicted here.

    On onnxruntime the exported file is timed in alternation with the largest subnet and put on the cost table's
    scale (where the largest subnet took ``table.reference``): predictions and the budget live on that scale, and
    the machine's speed may have drifted since the table was measured.
    """
    if target.runtime == "onnxruntime" and table.reference:
        return measure_paired(as_deployed(model_dir / "model.onnx", target.precision),
                              ctx.reference_onnx(target.batch, target.precision), target,
                              reference_value=table.reference)
    if target.runtime == "table":
        return Measurement.exact(predicted, unit="ms", runtime="table",
                                 details={"predicted": "sum of the device table's part rows (board not attached)"})
    if target.runtime == "onnxruntime":
        return measure_onnx(model_dir / "model.onnx", target)
    return measure(model, target, resolution)


class MissedBudget(BespokeError):
    """Every subnet tried for a target measured over its budget after export (``misses``: config key, value)."""

    def __init__(self, budget: float, unit: str, misses: list[tuple[str, float]]) -> None:
        best = min(value for _, value in misses)
        super().__init__(f"budget {budget:.4g} {unit} missed after export by all {len(misses)} subnet(s) tried "
                         f"(best measured {best:.4g} {unit}); no model was delivered for it",
                         "raise the budget, allow more budget_retries, or train a supernet with a wider space")
        self.budget, self.unit, self.misses = budget, unit, misses


@dataclass
class _Context:
    net: ElasticNet
    meta: SupernetMeta
    fit: PredictorFit
    extractor: SubnetEvaluator  # BN recalibration (its own split is unused)
    test: SubnetEvaluator
    cfg: SelectConfig
    out: Path
    supernet_dir: Path
    shared_cpu: dict[str, float]
    source: DataSource | None = None
    _references: dict[tuple[int, str], bytes] = field(default_factory=dict)

    def reference_onnx(self, batch: int, precision: str = "fp32") -> bytes:
        """The largest subnet exported (and for int8, quantized for timing) once per batch size and precision:
        every pick of every target is timed against it."""
        if (batch, precision) not in self._references:
            largest = self.net.space.largest()
            fp32 = export_onnx_bytes(extract_subnet(self.net, largest), image_shape(batch, largest.resolution),
                                     dynamic_batch=True)
            self._references[(batch, precision)] = as_deployed(fp32, precision)  # type: ignore[assignment]
        return self._references[(batch, precision)]


def _search(ctx: _Context, table: SubnetCosts, limit: float, unit: str) -> tuple[SubnetConfig, float, float, float]:
    t0 = time.perf_counter()
    res = evolve(ctx.net.space, fitness=ctx.fit.predict_genomes, cost=table.genome_cost(ctx.net.space), budget=limit,
                 unit=unit, population=ctx.cfg.population, generations=ctx.cfg.generations,
                 mutate_prob=ctx.cfg.mutate_prob, parent_fraction=ctx.cfg.parent_fraction, seed=ctx.cfg.seed)
    return res.best, res.fitness, res.cost, (time.perf_counter() - t0) * 1e3


def _card(ctx: _Context, target: Target, table: SubnetCosts, sub: StaticNet, best: SubnetConfig,
          budget: float | None, accuracy: float | None, predicted: tuple[float, float], search: tuple[float, int]
          ) -> ModelCard:
    teacher = ctx.meta.teacher
    pred_acc, pred_cost = predicted
    return ModelCard(
        arch=f"tofa:{teacher.arch}", arch_config=subnet_arch_config(teacher.arch, best, sub.spec), engine="tofa",
        num_classes=sub.spec.num_classes, classes=ctx.meta.classes, resolution=best.resolution, mean=teacher.mean,
        std=teacher.std, accuracy=None if accuracy is None else round(accuracy, 4),
        cost_cpu_s={**ctx.shared_cpu, f"{SHARED}cost_table": float(table.info.get("cpu_s", 0.0))},
        data=dict(ctx.meta.data),
        provenance={"supernet": str(ctx.supernet_dir), "subnet": best.to_dict(),
                    "predicted_accuracy": round(pred_acc, 4), "predicted_cost": round(pred_cost, 4),
                    "search_ms": round(search[0], 2), "attempts": search[1], "predictor": ctx.fit.metrics,
                    "cost_table": table.signature, "cost_loo_max_abs": table.table.loo.max_abs},
    )


@dataclass
class _Pick:
    """One exported pick of :func:`choose_for_target`: the subnet, its weights and cards, and the measurement."""

    config: SubnetConfig
    pred_acc: float
    pred_cost: float
    sub: StaticNet
    card: ModelCard
    saved: Any  # save_model_dir's card (params, MACs)
    measured: Measurement


def choose_for_target(ctx: _Context, target: Target, table: SubnetCosts) -> TargetChoice:
    """Search, extract, recalibrate, evaluate, export and measure (after export) the subnet of one target.

    A cost table predicts one subnet only up to its error (worst for small subnets), so the measurement
    after export steers the search limit through the shared :class:`~bespoke.delivery.BudgetBracket`
    (``budget_retries`` extra searches; down to, and including, the smallest subnet). The best pick that met the
    budget (highest predicted accuracy) is delivered; a target where every pick missed gets no model directory
    (:class:`MissedBudget`).
    """
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    budget = target.resolve_budget(table.budget_base)
    smallest = ctx.net.space.smallest()
    smallest_genome = GenomeLayout(ctx.net.space).encode(smallest)[None, :]
    # the smallest subnet's predicted cost, as the search computes it (it must pass the search's own floor test)
    floor = float(table.genome_cost(ctx.net.space)(smallest_genome)[0])
    policy = RetryPolicy(margin=ctx.cfg.budget_margin, retries=ctx.cfg.budget_retries, fill=ctx.cfg.budget_fill)
    bracket = BudgetBracket(policy, budget, floor=floor, floor_error=table.table.loo.max_abs or 0.0)
    model_dir = ctx.out / (f"{FP32_TWINS}/{target.name}" if target.precision == "int8" else target.name)
    search_ms: float | None = None
    picks: dict[str, _Pick] = {}
    last: _Pick | None = None

    def propose(limit: float) -> Pick:
        nonlocal search_ms
        try:
            best, pred_acc, pred_cost, ms = _search(ctx, table, limit, target.unit)
        except InfeasibleBudget as exc:
            if not bracket.attempts:  # the first search: the budget is out of reach on any prediction error
                raise
            # a retry aimed under the floor (recalibrated by the picks measured so far): nothing is cheaper than
            # the smallest subnet, which the loop measures if it is new and otherwise ends with the best pick
            best, pred_acc, pred_cost, ms = smallest, float(ctx.fit.predict_genomes(smallest_genome)[0]), exc.floor, 0.0
        search_ms = ms if search_ms is None else search_ms  # the first answer is what a new target costs
        if bracket.tried(best.key()) and bracket.best is None:
            # every pick missed down to the table's floor (the search keeps finding subnets the table
            # under-prices most): the smallest subnet is the one architecture no table error can undercut
            best, pred_acc, pred_cost = smallest, float(ctx.fit.predict_genomes(smallest_genome)[0]), floor
        return Pick(best.key(), pred_cost, pred_acc, best == smallest,
                    {"subnet": best.key(), "predicted_accuracy": round(pred_acc, 4), "config": best})

    def measure(pick: Pick) -> float:
        nonlocal last
        best, pred_acc, pred_cost = pick.info.pop("config"), pick.score, pick.predicted
        sub = ctx.extractor.extract(ctx.net, best)
        # the test split is evaluated once, on the attempt that is delivered (a pick costs a measurement only)
        card = _card(ctx, target, table, sub, best, budget, None, (pred_acc, pred_cost),
                     (search_ms, len(bracket.attempts) + 1))
        final = save_model_dir(model_dir, sub, card)
        after = _measure_after_export(ctx, sub, model_dir, target, best.resolution, table, pred_cost)
        if target.is_latency and get_runtime(target.runtime).measures_whole:  # a verified pick calibrates further
            table.add_point(best, after.value, "delivered")
        last = picks[pick.key] = _Pick(best, pred_acc, pred_cost, sub, card, final, after)
        return after.value

    try:
        retry_to_budget(bracket, propose, measure)
    except BaseException:  # a pick written by measure() is not a delivery: leave no directory behind
        shutil.rmtree(model_dir, ignore_errors=True)
        raise
    if bracket.best is None:
        shutil.rmtree(model_dir, ignore_errors=True)
        raise MissedBudget(float(budget or 0.0), target.unit, [(a.key, a.measured) for a in bracket.attempts])
    delivered = picks[bracket.best.key]
    if last is not delivered:  # an earlier pick was better: put it back
        save_model_dir(model_dir, delivered.sub, delivered.card)
    best, sub, after = delivered.config, delivered.sub, delivered.measured
    accuracy = ctx.test.accuracy(sub, best.resolution)
    cpu, wall = round(cpu_seconds() - cpu0, 1), round(time.perf_counter() - wall0, 1)
    attempts = len(bracket.attempts)
    update_card(model_dir, accuracy=round(accuracy, 4), cost_cpu_s={"select": cpu},
                provenance={"select_wall_s": wall, "attempts": attempts,
                            "picks": [a.to_dict() for a in bracket.attempts]})
    card = write_delivery(model_dir, target, budget=budget, readings=[after], predicted=round(delivered.pred_cost, 4),
                          attempts=attempts, reference=table.reference)
    assert card.delivery is not None
    return TargetChoice(target.name, target.unit, card.budget, budget, best.to_dict(),
                        round(delivered.pred_acc, 4), round(delivered.pred_cost, 4), round(after.value, 4),
                        round(accuracy, 4), card.delivery.meets_budget is not False, round(search_ms or 0.0, 2),
                        attempts, str(model_dir), delivered.saved.params, delivered.saved.macs, cpu, wall)


class NotQuantized(BespokeError):
    """An int8 target's subnet could not be delivered as an INT8 graph (its accuracy collapses when quantized)."""


def deliver_int8(ctx: _Context, target: Target, choice: TargetChoice, table: SubnetCosts) -> TargetChoice:
    """The subnet chosen for an int8 target (its fp32 model directory in ``OUT/.fp32/<target>``, searched on a
    table of quantized parts) quantized into ``OUT/<target>`` (:func:`bespoke.quantize.quantize_to`, on the
    supernet's data at the subnet's resolution), its INT8 graph measured against the largest subnet as the target
    runs it (quantized). ``cfg.qat_epochs`` > 0: the subnet is first fine-tuned under fake quantization
    (``<twin>-qat``, label-free: distilled from itself) and that model is quantized."""
    twin, final = Path(choice.model_dir), ctx.out / target.name
    assert ctx.source is not None
    twin_card = read_card(twin)
    splits = ctx.source.splits(twin_card.resolution)
    if ctx.cfg.qat_epochs:  # the subnet first learns to live with int8 rounding: the graph quantized is that one
        qat_dir = twin.parent / f"{twin.name}-qat"
        if not (qat_dir / CARD).is_file():
            # distillation from the fp32 subnet only: the supernet saw a labelled share, this sees no labels
            qat_finetune(twin, splits, qat_dir, train=qat_recipe(ctx.cfg.qat_epochs, ctx.cfg.seed, kd_weight=1.0))
        twin = qat_dir
    try:
        card = quantize_to(twin, final, splits, target, seed=ctx.cfg.seed,
                           agreement_threshold=ctx.cfg.int8_agreement, search=ctx.cfg.ptq)
    except BespokeError as exc:
        raise NotQuantized(exc.message, exc.hint) from None
    m = measure_paired(final / ONNX, ctx.reference_onnx(target.batch, target.precision), target,
                       reference_value=table.reference)
    card = write_delivery(final, target, budget=choice.budget_resolved, readings=[m],
                          predicted=choice.predicted_cost, attempts=choice.attempts, reference=table.reference)
    assert card.delivery is not None and card.delivery.measured is not None
    return replace(choice, measured_cost=round(card.delivery.measured, 4), accuracy=round(card.accuracy or 0.0, 4),
                   meets_budget=card.delivery.meets_budget is not False, model_dir=str(final))


def delivered_before(model_dir: Path, target: Target, table: SubnetCosts, supernet: Path) -> TargetChoice | None:
    """The choice an earlier, interrupted or finished, selection already delivered for ``target`` in
    ``model_dir`` (same supernet, same budget on the same table, measured within it), so a rerun resumes; else
    ``None``."""
    if not (model_dir / CARD).is_file():
        return None
    card = read_card(model_dir)
    p, budget = card.provenance, target.resolve_budget(table.budget_base)
    measured = card.delivery.measured if card.delivery else None
    engine_budget = card.budget_resolved
    if (card.engine != "tofa" or card.target != target.name or "select" not in card.cost_cpu_s or measured is None
            or p.get("supernet") != str(supernet) or p.get("cost_table") != table.signature
            or (budget is None) != (engine_budget is None)
            or (budget is not None and (abs(engine_budget - budget) > 1e-6 * budget or measured > budget))):
        return None
    return TargetChoice(target.name, target.unit, card.budget, engine_budget, p["subnet"], p["predicted_accuracy"],
                        p["predicted_cost"], round(float(measured), 4), float(card.accuracy or 0.0), True,
                        p["search_ms"], int(p["attempts"]), str(model_dir), card.params, card.macs,
                        float(card.cost_cpu_s["select"]), float(p.get("select_wall_s", 0.0)))


@locks_output("out")
def select_subnets(supernet: str | Path, targets: list[Target] | str | Path, out: str | Path, *,
                   config: SelectConfig | None = None, data: DataSource | None = None) -> SelectResult:
    """Deliver one verified model directory per target under ``out`` (+ report.md, pareto.png, selection.json).

    Targets an earlier run already delivered under ``out`` are kept (:func:`delivered_before`): a rerun resumes.

    ``targets`` is a list of :class:`Target` or a ``targets.yaml`` path. ``data`` overrides the data the
    supernet was trained on (needed when it was trained on in-memory splits).
    """
    cfg = config or SelectConfig()
    directory, out = Path(supernet), Path(out)
    net, meta = load_supernet(directory)
    target_list = load_targets(targets) if isinstance(targets, str | Path) else list(targets)
    if not target_list:
        raise BespokeError("no targets given", "list at least one target in targets.yaml")
    device = pick_device(cfg.device)
    net.to(device)
    source = _source(meta, data)
    fit, _, predictor_cpu = ensure_predictor(net, meta, source, directory, cfg, device)
    common = {"source": source, "mean": meta.teacher.mean, "std": meta.teacher.std, "seed": cfg.seed,
              "calib_images": cfg.calib_images, "calib_batch": cfg.calib_batch, "device": device,
              "calib_labelled": calibration_pool(meta.job)}
    shared = {f"{SHARED}supernet_train": float(meta.cost_cpu_s.get("supernet_train", 0.0)),
              f"{SHARED}predictor": predictor_cpu}
    ctx = _Context(net, meta, fit, SubnetEvaluator(split="val", **common),
                   SubnetEvaluator(split="test", limit=cfg.eval_limit, **common), cfg, out, directory, shared, source)
    choices, tables, failed = [], {}, {}
    for target in target_list:
        table = build_cost_table(net.spec, net.space, target, directory / "latency",
                                 calibration_subnets=cfg.calibration_subnets, seed=cfg.seed,
                                 extract=lambda c: extract_subnet(net, c).cpu())
        try:
            earlier = delivered_before(out / target.name, target, table, directory)
            if earlier is None:
                earlier = choose_for_target(ctx, target, table)
                if target.precision == "int8":
                    earlier = deliver_int8(ctx, target, earlier, table)
            choices.append(earlier)
            tables[target.name] = table
        except (InfeasibleBudget, MissedBudget, NotQuantized) as exc:  # deliver the others, then fail loudly
            failed[target.name] = str(exc)
    result = SelectResult(out, choices, fit.metrics, shared, failed)
    write_json(out / "selection.json", {"supernet": str(directory), "predictor": fit.metrics,
                                        "cost_cpu_s": shared, "choices": [asdict(c) for c in choices],
                                        "infeasible": failed})
    write_selection_report(out, [asdict(c) for c in choices], predictor=fit.metrics, meta=meta, failed=failed,
                           tables=tables)
    if failed:
        raise BespokeError("infeasible budget(s): " + "; ".join(f"{k}: {v}" for k, v in failed.items()),
                           f"the other {len(choices)} target(s) were delivered to {out}")
    return result
