"""Measure every delivered model the same way after export: the exported ``model.onnx`` on ONNX Runtime.

Every model but the reference (the teacher) is timed in alternation with the reference and put on the scale of the
reference's own measurement (:func:`bespoke.targets.measure_paired`): the budgets are fractions of that measurement,
and on a machine whose speed drifts two absolute timings taken an hour apart would not compare. Latency is stored
in the card (``latency_ms[key]`` = median, ``latency[key]`` = the full measurement), so a
resumed benchmark does not measure a model twice; ``bespoke bench --remeasure`` adds a reading per run and the
table shows the median of a model's readings. Test accuracy comes from the card; a card without one is
evaluated on the benchmark's test split.

Each stage's models are measured as soon as the stage ends (:func:`measure_record`), so a finished stage's
figures live in its cards: the final table only reads them back, and it needs no model file of a stage that was
measured before.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from bespoke.bench.context import TEACHER, BenchContext
from bespoke.bench.preset import MeasureSection
from bespoke.bench.stages import StageRecord
from bespoke.data import TransformedDataset, build_transform
from bespoke.export import CARD, ONNX, ModelCard, load_model_dir, read_card, update_card
from bespoke.report import LATENCY_1T, LATENCY_2T
from bespoke.targets import Target, measure_onnx, measure_paired
from bespoke.train import evaluate

_STANDARD_KEYS = {1: LATENCY_1T, 2: LATENCY_2T}
REFERENCE_TRIES = 3


def latency_key(threads: int) -> str:
    """The ``card.latency_ms`` key of the standard measurement at ``threads`` threads (``ort-cpu-1t`` ...)."""
    return _STANDARD_KEYS.get(threads, f"ort-cpu-{threads}t")


def measurement_targets(settings: MeasureSection) -> list[Target]:
    """The standard measurements: ONNX Runtime, CPU, batch 1, one target per thread count."""
    return [Target(name=latency_key(t), runtime="onnxruntime", threads=t, batch=1, warmup=settings.warmup,
                   repeats=settings.repeats, description=f"ONNX Runtime CPU, batch 1, {t} thread(s)")
            for t in settings.threads]


def measure_model_dir(directory: str | Path, targets: Sequence[Target], *, reference: str | Path | None = None,
                      tries: int = 1, test_set: Dataset | None = None, again: bool = False,
                      log: Callable[[str], None] = print) -> ModelCard:
    """Fill the card's latency for each of ``targets`` (and accuracy, when missing) unless already there
    (``again``: time them once more; the new reading joins the earlier ones in ``latency[key]["readings"]`` and
    ``latency_ms[key]`` becomes their median, so on a noisy machine each ``--remeasure`` run makes the figure
    sturdier instead of replacing it).

    With ``reference`` (a model directory, measured first when its card lacks the target) the model is timed in
    alternation with it and scaled to the reference's recorded value. Without, the measurement with the smallest
    median of ``tries`` is kept (interference from other work only ever adds time): the reference sets the scale
    of every other model, so it is measured with ``REFERENCE_TRIES``.
    """
    directory = Path(directory)
    card = read_card(directory)
    paired = reference is not None and Path(reference).resolve() != directory.resolve()
    latency_ms, latency = {}, {}
    for target in targets:
        if target.name in card.latency_ms and not again:
            continue
        if paired:
            ref_card = measure_model_dir(reference, [target], tries=REFERENCE_TRIES, log=log)  # type: ignore[arg-type]
            ref_value = ref_card.latency_ms[target.name]
            m = measure_paired(directory / ONNX, Path(reference) / ONNX, target, reference_value=ref_value)  # type: ignore[arg-type]
            how = f", {m.details['ratio']:.3f}x the reference timed alongside"
        else:
            m = min((measure_onnx(directory / ONNX, target) for _ in range(max(1, tries))), key=lambda x: x.value)
            how = f", best of {tries}" if tries > 1 else ""
        readings = [*(_readings(card, target.name) if again else []), round(m.value, 4)]
        latency_ms[target.name] = round(statistics.median(readings), 4)
        latency[target.name] = {**m.model_dump(), "readings": readings}
        more = f"; median of {len(readings)} readings {latency_ms[target.name]:.3f} ms" if len(readings) > 1 else ""
        log(f"[bench] {directory.name}: {target.name} {m.value:.3f} ms (spread {m.spread:.0%}{how}{more})")
    if latency_ms:
        card = update_card(directory, latency_ms=latency_ms, latency=latency)
    if card.accuracy is None and test_set is not None:
        model, _ = load_model_dir(directory)
        tf = build_transform("eval", card.mean, card.std)
        result = evaluate(model, DataLoader(TransformedDataset(test_set, tf), batch_size=256))
        card = update_card(directory, accuracy=result.accuracy, accuracy_split="test")
        log(f"[bench] {directory.name}: test top-1 {result.accuracy:.4f}")
    return card


def _readings(card: ModelCard, key: str) -> list[float]:
    """The earlier readings of ``key`` (a card from before readings were kept counts its one value)."""
    kept = (card.latency.get(key) or {}).get("readings")
    if kept:
        return [float(v) for v in kept]
    return [float(card.latency_ms[key])] if key in card.latency_ms else []


def measure_record(ctx: BenchContext, record: StageRecord) -> ModelCard | None:
    """Measure the models of a finished stage the standard way (:func:`measure_model_dir`); returns the last card.

    The reference teacher is measured best of ``REFERENCE_TRIES`` (it sets every other model's scale), the others
    in alternation with it. Failed stages, and any stage before the reference exists, are left alone. With
    ``ctx.remeasure`` every other model is timed again, once per run, when its ONNX file is there (the reference
    keeps its value, so the budgets stay).
    """
    reference = ctx.teacher_dirs.get(TEACHER)
    if record.status not in ("done", "skipped") or reference is None or not (reference / CARD).is_file():
        return None
    targets = measurement_targets(ctx.preset.measure)
    card = None
    for d in record.dirs:
        path = Path(d).resolve()
        own = path == reference.resolve()
        again = ctx.remeasure and not own and str(path) not in ctx.remeasured and (path / ONNX).is_file()
        card = measure_model_dir(d, targets, reference=None if own else reference, again=again,
                                 tries=REFERENCE_TRIES if own else 1, test_set=ctx.splits.test, log=ctx.log)
        if again:
            ctx.remeasured.add(str(path))
    return card


def prediction_on_scale(card: ModelCard, reference_ms: float | None) -> float | None:
    """The engine's latency prediction put on the scale where the benchmark's reference takes ``reference_ms``.

    An engine predicts on its own scale (its own timing of its reference); the benchmark measures every model on
    the scale of its teacher's reference measurement. Without the engine's reference value the prediction is
    returned as it is.
    """
    pred, ref = card.latency_pred_ms, card.delivery.reference if card.delivery else None
    if pred is None or not reference_ms or not ref:
        return pred
    return round(float(pred) * reference_ms / float(ref), 4)
