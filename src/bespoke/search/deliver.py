"""Retrain a searched student with knowledge distillation, export it as a model directory, measure it.

``search_and_deliver`` runs search -> retrain -> deliver for every target; it is resumable per target (a target
whose directory has a card is skipped; the search result and the retraining checkpoint live in
``OUT/.work/<target>/``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from bespoke.data import DataSplits, build_transform, make_loader
from bespoke.delivery import Reference, confirm_verdict, measure_against, write_delivery
from bespoke.errors import BespokeError
from bespoke.export import CARD, ONNX, SHARED_COST_PREFIX, ModelCard, read_card, save_model_dir
from bespoke.house import House, assemble_student, student_arch_config
from bespoke.house.build import build_house
from bespoke.house.data import house_splits
from bespoke.quantize import AGREEMENT_THRESHOLD, PTQSearch, QATConfig, fake_quantized, quantize_to
from bespoke.search.annealing import AnnealConfig
from bespoke.search.job import BlockJob, retrain_recipe
from bespoke.search.select import TargetSearch, search_target
from bespoke.targets import Measurement, Target, load_targets
from bespoke.train import FinetuneConfig, FinetuneResult, finetune
from bespoke.utils.atomic import write_json
from bespoke.utils.lock import locks_output

log = logging.getLogger(__name__)
WORK_DIR = ".work"


def retrain_student(house: House, alternatives: Sequence[str], *, data: DataSplits | str | None = None,
                    out_dir: str | Path, config: FinetuneConfig | dict[str, Any] | None = None,
                    qat: QATConfig | None = None) -> tuple[nn.Module, FinetuneResult]:
    """Assemble the student and fine-tune it (cross-entropy + KD from the house's teacher). Resumable.

    ``config``: the recipe, or overrides of :data:`DEFAULT_RETRAIN` (a partial mapping keeps its other keys).
    ``qat``: retrain under fake quantization (:mod:`bespoke.quantize.qat`; for an int8 target: the student learns
    weights that round well), removed afterwards. The result's accuracy is top-1 on the test split (with the fake
    quantization on, for ``qat``).
    """
    splits = house_splits(house, data)
    student = assemble_student(house, list(alternatives))
    meta = house.meta.teacher
    recipe = retrain_recipe(config)
    if qat is None:
        layout: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:
        loader = make_loader(splits.train, build_transform("eval", meta.mean, meta.std), 64, shuffle=True,
                             seed=recipe.seed)
        batches = [x for (x, _y), _ in zip(loader, range(qat.calibration_batches), strict=False)]
        layout = fake_quantized(student, qat, batches)
    with layout:
        result = finetune(student, splits.train, splits.test, recipe, mean=meta.mean, std=meta.std,
                          out_dir=out_dir, teacher=house.teacher_model(), stage="retrain-qat" if qat else "retrain")
    return student.eval(), result


def _student_card(house: House, search: TargetSearch, result: FinetuneResult | None,
                  cost_cpu_s: dict[str, float] | None) -> ModelCard:
    meta = house.meta.teacher
    arch_name = meta.arch_config.get("name", meta.arch_config.get("builder", "teacher"))
    provenance = {
        "house": str(house.root.resolve()),
        "alternatives": [{"id": a, "recipe": house.index.get(a).recipe.label, **house.index.get(a).provenance}
                         for a in search.alternatives],
        "search": {k: v for k, v in search.to_dict().items() if k != "rounds"},
        "search_rounds": search.rounds,
        "teacher": meta.source,
    }
    return ModelCard(
        arch=f"bespoke-block:{arch_name}", arch_config=student_arch_config(house, search.alternatives),
        engine="bespoke", num_classes=meta.num_classes, classes=list(meta.classes), resolution=meta.resolution,
        mean=meta.mean, std=meta.std, accuracy=result.accuracy if result else None,
        cost_cpu_s=dict(cost_cpu_s or {}), provenance=provenance,
    )


def _measure_delivery(house: House, target: Target, search: TargetSearch, student: nn.Module, out_dir: Path
                      ) -> ModelCard:
    """Measure ``out_dir``'s model.onnx against the teacher (both as ``target`` runs them) and write the delivery
    section; a reading that contradicts the search's measurement is confirmed by two more."""
    reference = Reference(house.teacher_model(), house.resolution, value=search.teacher_value)

    def once() -> Measurement:
        return measure_against(student, reference, target, house.resolution, onnx=out_dir / ONNX)[0]

    searched_met = search.measured is not None  # a latency target's pick was measured within budget
    readings = confirm_verdict(once(), once, search.budget_resolved if searched_met else None, True)
    return write_delivery(out_dir, target, budget=search.budget_resolved, readings=readings,
                          predicted=search.predicted, attempts=max(1, len(search.rounds)),
                          reference=search.teacher_value)


def deliver(house: House, target: Target, search: TargetSearch, student: nn.Module, result: FinetuneResult | None,
            out_dir: str | Path, *, cost_cpu_s: dict[str, float] | None = None) -> ModelCard:
    """Write ``out_dir`` (model.safetensors, verified model.onnx, card.json) and measure the exported model on
    ``target``; the card's delivery section holds the budget, the prediction and the measurement.

    The exported model is measured against the teacher (in alternation with it, for onnxruntime) and put on the
    latency table's scale, where the teacher took ``search.teacher_value``: the budget and the prediction live
    there too, so the machine's speed drifting since the table was measured does not move the verdict. A reading
    that contradicts the search's measurement of the same architecture is confirmed by two more (the median of the
    three decides: :func:`bespoke.delivery.confirm_verdict`).
    """
    out_dir = Path(out_dir)
    save_model_dir(out_dir, student, _student_card(house, search, result, cost_cpu_s))
    return _measure_delivery(house, target, search, student, out_dir)


def deliver_int8(house: House, target: Target, search: TargetSearch, student: nn.Module,
                 result: FinetuneResult | None, out_dir: str | Path, *, twin_dir: str | Path, data: DataSplits,
                 cost_cpu_s: dict[str, float] | None = None, calibration: int = 256, selection: int = 1000,
                 agreement_threshold: float = AGREEMENT_THRESHOLD, ptq: PTQSearch | None = None,
                 qat: QATConfig | None = None) -> ModelCard:
    """Deliver for an int8 target: the retrained student as an fp32 model directory in ``twin_dir``, quantized
    into ``out_dir`` (:func:`bespoke.quantize.quantize_to`: calibrated on ``data``'s training images, the setting
    chosen on its validation images, verified by top-1 agreement on its test split), whose INT8 graph is then
    measured against the teacher as the target runs it (quantized). ``qat``: the fake quantization the student
    was retrained under (recorded in the twin's card, so the INT8 card says ``qat-static``)."""
    twin_dir, out_dir = Path(twin_dir), Path(out_dir)
    if not (twin_dir / CARD).is_file():
        card = _student_card(house, search, result, cost_cpu_s)
        if qat is not None:
            card.provenance["qat"] = {"stage": "retrain-qat", "fake_quant": qat.model_dump(mode="json"),
                                      "recipe": "the block engine's KD retraining"}
        save_model_dir(twin_dir, student, card)
    quantize_to(twin_dir, out_dir, data, target, calibration=calibration, selection=selection,
                seed=int(house.meta.settings.get("seed", 0)), agreement_threshold=agreement_threshold,
                search=ptq, log=log.info)
    return _measure_delivery(house, target, search, student, out_dir)


@locks_output("out")
def search_and_deliver(house: House | str | Path, targets: Sequence[Target] | str | Path, *, out: str | Path,
                       data: DataSplits | str | None = None, anneal_config: AnnealConfig | None = None,
                       retrain: FinetuneConfig | dict[str, Any] | None = None, eval_images: int = 256,
                       margin: float = 0.05, ptq: PTQSearch | None = None,
                       agreement_threshold: float = AGREEMENT_THRESHOLD, qat: QATConfig | None = None
                       ) -> list[ModelCard]:
    """For every target: search, retrain with KD, export to ``out/<target>/``. Returns the cards.

    An int8 target's search prices parts and students quantized; its retrained student is kept as an fp32 twin in
    ``out/.work/<target>/fp32`` and delivered as its INT8 graph (:func:`deliver_int8`; ``ptq``: the
    quantization settings tried, ``agreement_threshold``: the top-1 agreement with the twin it must reach;
    ``qat``: retrain an int8 target's student under fake quantization, see :func:`retrain_student`).

    A target whose budget no student met gets no directory; the others are delivered first, then one
    ``BespokeError`` names every missed target.
    """
    house = house if isinstance(house, House) else House.open(house)
    targets = load_targets(targets) if isinstance(targets, (str, Path)) else list(targets)
    out = Path(out)
    splits = house_splits(house, data)
    cards: list[ModelCard] = []
    missed: dict[str, str] = {}
    for target in targets:
        target_dir, work = out / target.name, out / WORK_DIR / target.name
        if (target_dir / CARD).is_file():
            cards.append(read_card(target_dir))
            continue
        search_file = work / "search.json"
        if search_file.is_file():
            search = TargetSearch.from_dict(json.loads(search_file.read_text()))
        else:
            try:
                search = search_target(house, target, data=splits, anneal_config=anneal_config,
                                       eval_images=eval_images, margin=margin)
            except BespokeError as exc:  # this budget cannot be met: deliver the others, then say so
                missed[target.name] = exc.message
                continue
            write_json(search_file, search.to_dict())
        log.info("target %s: %d alternatives, predicted %.4g %s (budget %.4g; cost table leave-one-out error max %s)",
                 target.name, len(search.alternatives), search.predicted, search.unit, search.budget_resolved,
                 "-" if search.loo_max_abs is None else f"{100 * search.loo_max_abs:.1f} %")
        student, result = retrain_student(house, search.alternatives, data=splits, out_dir=work, config=retrain,
                                          qat=qat if target.precision == "int8" else None)
        costs = {"search": search.cpu_s, "retrain": result.cpu_s,
                 f"{SHARED_COST_PREFIX}house": float(sum(house.index.cost_cpu_s.values()))}
        if target.precision == "int8":
            try:
                cards.append(deliver_int8(house, target, search, student, result, target_dir, data=splits,
                                          twin_dir=work / "fp32", cost_cpu_s=costs, ptq=ptq,
                                          agreement_threshold=agreement_threshold, qat=qat))
            except BespokeError as exc:  # the student does not quantize: deliver the others, then say so
                missed[target.name] = f"target {target.name!r}: {exc.message}"
            continue
        cards.append(deliver(house, target, search, student, result, target_dir, cost_cpu_s=costs))
    if missed:
        raise BespokeError("; ".join(missed.values()), f"the other {len(cards)} target(s) were delivered to {out}")
    return cards


def run_block_engine(teacher: str | Path, targets: Sequence[Target] | str | Path, *, data: DataSplits | str,
                     out: str | Path, job: BlockJob | None = None) -> list[Path]:
    """The whole block engine: house in ``out/house``, one model directory per target in ``out/<target>``.

    ``job`` holds the house, search and retraining settings (default: :class:`BlockJob`'s); its ``teacher`` /
    ``data`` / ``out`` are not used here (the arguments are). What an engine stage of ``bespoke demo`` and
    ``bespoke bench`` calls; resumable like its parts.
    """
    job = job or BlockJob()
    targets = load_targets(targets) if isinstance(targets, (str, Path)) else list(targets)
    house = build_house(teacher, data=data, out=Path(out) / "house", targets=targets, **job.house.build_kwargs())
    cards = search_and_deliver(house, targets, out=out, data=data if isinstance(data, DataSplits) else None,
                               anneal_config=job.search.anneal, eval_images=job.search.eval_images,
                               margin=job.search.margin, retrain=job.retrain, qat=job.qat, ptq=job.ptq,
                               agreement_threshold=job.int8_agreement)
    return [Path(out) / str(card.target) for card in cards]
