"""``bespoke quantize``: an fp32 model directory -> one INT8 model directory per int8 target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bespoke.data import DataSplits, load_dataset
from bespoke.delivery import write_delivery
from bespoke.errors import BespokeError
from bespoke.export import CARD, ONNX, WEIGHTS, ModelCard, Quantization, read_card, save_quantized_model_dir
from bespoke.quantize.calibrate import sample_images
from bespoke.quantize.choose import Choice, PTQSearch, choose_settings
from bespoke.quantize.ptq import top1_on
from bespoke.quantize.qat import qat_finetune, qat_recipe
from bespoke.targets import Target, measure_paired
from bespoke.train import cpu_seconds
from bespoke.utils.lock import output_lock
from bespoke.utils.progress import make_progress

#: Share of test images where the INT8 graph's top-1 must equal the fp32 twin's for the directory to be written.
AGREEMENT_THRESHOLD = 0.9
#: Where ``quantize_model_dir`` keeps the quantization-aware fine-tuned fp32 model, under its output folder.
QAT_DIR = ".qat"


def default_out(directory: str | Path) -> Path:
    """``DIR-int8`` beside ``DIR``."""
    directory = Path(directory)
    return directory.parent / f"{directory.name}-int8"


def quantize_model_dir(directory: str | Path, data: str, targets: Sequence[Target], out: str | Path | None = None,
                       *, calibration: int = 256, selection: int | None = 1000, test_limit: int | None = None,
                       train_limit: int | None = None,
                       seed: int = 0, val_fraction: float = 0.1, agreement_threshold: float = AGREEMENT_THRESHOLD,
                       search: PTQSearch | None = None, qat_epochs: int = 0,
                       log: Callable[[str], None] = lambda _line: None) -> dict[str, Path]:
    """Quantize the fp32 model directory ``directory`` for every int8 target; ``OUT/<target>`` per target.

    Calibration on ``calibration`` training images of ``data``; the settings are chosen on ``selection``
    validation images (:func:`bespoke.quantize.choose_settings`, timed on the target); the INT8 graph's accuracy and
    its top-1 agreement with the fp32 graph are measured on the test split, and a directory is written only when the
    agreement reaches ``agreement_threshold``. ``qat_epochs`` > 0: the model is first fine-tuned that long under
    fake quantization (:func:`bespoke.quantize.qat.qat_finetune`, into ``OUT/.qat``; distilled from itself) and
    that model is quantized. Holds the lock on ``out``; a target whose directory is complete (for this fp32
    directory) is skipped, so a rerun resumes.

    Raises:
        BespokeError: no int8 target, an fp32 directory that is not one, no calibration or test images, or a
            quantized model whose agreement collapses.
    """
    directory = Path(directory)
    search = search or PTQSearch()
    int8 = [t for t in targets if t.precision == "int8"]
    if not int8:
        raise BespokeError("no target with precision int8", "add 'precision: int8' to an onnxruntime target")
    twin = read_card(directory)
    if twin.precision != "fp32":
        raise BespokeError(f"{directory} is already an {twin.precision} model directory",
                           "quantize the fp32 model directory it was made from")
    out = Path(out) if out is not None else default_out(directory)
    if qat_epochs < 0:
        raise BespokeError(f"qat_epochs must be >= 0, got {qat_epochs}")
    source = out / QAT_DIR if qat_epochs else directory
    with output_lock(out):
        todo = [t for t in int8 if not _done(out / t.name, source)]
        if not todo:
            return {t.name: out / t.name for t in int8}
        splits = load_dataset(data, resolution=twin.resolution, seed=seed, val_fraction=val_fraction,
                              train_limit=train_limit, test_limit=test_limit)
        if qat_epochs:
            if not (source / CARD).is_file():
                qat_finetune(directory, splits, source, train=qat_recipe(qat_epochs, seed), log=log)
        fp32 = (directory / ONNX).read_bytes()  # the speed-up is against the model as it came
        for target in todo:
            quantize_to(source, out / target.name, splits, target, calibration=calibration, selection=selection,
                        seed=seed, where=f"{splits.name} ({data})", agreement_threshold=agreement_threshold,
                        search=search, log=log)
            m = measure_paired((out / target.name / ONNX).read_bytes(), fp32, target, reference_value=None)
            reference = float(m.details["reference_value_ms"])
            write_delivery(out / target.name, target, budget=target.resolve_budget(reference), readings=[m],
                           reference=reference)
    return {t.name: out / t.name for t in int8}


def quantize_to(directory: str | Path, out_dir: str | Path, splits: DataSplits, target: Target, *,
                calibration: int = 256, selection: int | None = 1000, seed: int = 0, where: str | None = None,
                agreement_threshold: float = AGREEMENT_THRESHOLD, search: PTQSearch | None = None,
                log: Callable[[str], None] = lambda _line: None) -> ModelCard:
    """Write ``out_dir``: the INT8 model directory of the fp32 model directory ``directory`` for ``target``, its
    delivery section left to the caller (what it is measured against is the caller's reference).

    Calibration on ``calibration`` images of ``splits``' training split, the setting chosen on ``selection``
    validation images (:func:`bespoke.quantize.choose_settings`, timed on ``target``), accuracy and top-1 agreement
    with the fp32 graph on the test split; nothing is written below ``agreement_threshold``.
    """
    directory, out_dir = Path(directory), Path(out_dir)
    search = search or PTQSearch()
    twin = read_card(directory)
    fp32 = (directory / ONNX).read_bytes()
    start = cpu_seconds()
    where = where or splits.name
    calib, _ = sample_images(splits.train, calibration, seed=seed, mean=twin.mean, std=twin.std,
                             what=f"calibration data: training split of {where}")
    val, val_labels = sample_images(splits.val, selection, seed=seed, mean=twin.mean, std=twin.std,
                                    what=f"held-out data: validation split of {where}")
    if len(splits.test) == 0:
        raise BespokeError(f"test data: test split of {where}: no images",
                           "the agreement with fp32 is measured on the test split")
    with make_progress() as progress:
        task = progress.add_task(f"quantize {target.name}", total=len(search.grid()), postfix="")
        choice = choose_settings(fp32, calib, val, val_labels, target, search, log=log,
                                 step=lambda: progress.advance(task))
    (fp32_pred, pred), labels = top1_on([fp32, choice.best.graph], splits.test, mean=twin.mean, std=twin.std)
    card = _int8_card(twin, directory, choice, fp32_pred, pred, labels, agreement_threshold,
                      calibration_set=f"{where} train split, {len(calib)} images, seed {seed}",
                      calibration_images=len(calib), cost=cpu_seconds() - start)
    save_quantized_model_dir(out_dir, (directory / WEIGHTS).read_bytes(), choice.best.graph, card)
    fp32 = "-" if twin.accuracy is None else f"{twin.accuracy:.4f}"
    log(f"[quantize] {target.name}: {choice.best.settings.label}, test top-1 {card.accuracy:.4f} "
        f"(fp32 {fp32}), agreement {card.quantization.agreement:.4f}")  # type: ignore[union-attr]
    return card


def _done(folder: Path, source: Path) -> bool:
    if not (folder / CARD).is_file():
        return False
    card = read_card(folder)
    return (card.quantization is not None and card.delivery is not None
            and card.quantization.fp32_twin == str(source.resolve()))


def _int8_card(twin: ModelCard, source: Path, choice: Choice, fp32_pred: np.ndarray, pred: np.ndarray,
               labels: np.ndarray, threshold: float, *, calibration_set: str, calibration_images: int,
               cost: float) -> ModelCard:
    s = choice.best.settings
    quantization = Quantization(
        method="qat-static" if "qat" in twin.provenance else "ptq-static", format=s.format,
        weight_type=s.weight_type, activation_type=s.activation_type, per_channel=s.per_channel,
        reduce_range=s.reduce_range, calibration_method=s.calibration_method, calibration_images=calibration_images,
        calibration_set=calibration_set, nodes_excluded=list(s.nodes_excluded), sensitivity=choice.sensitivity,
        fp32_accuracy=float((fp32_pred == labels).mean()), int8_accuracy=float((pred == labels).mean()),
        agreement=float((pred == fp32_pred).mean()), agreement_threshold=threshold, fp32_twin=str(source.resolve()))
    method = twin.method or f"{twin.engine}:{twin.arch}"
    return twin.model_copy(update={
        "precision": "int8", "quantization": quantization, "accuracy": quantization.int8_accuracy,
        "method": f"{method} int8", "delivery": None, "latency_ms": {}, "latency": {},
        "cost_cpu_s": {**twin.cost_cpu_s, "quantize": round(cost, 1)},
        "provenance": {**twin.provenance, "ptq": {"candidates": choice.rows, "selection_split": "val",
                                                  "fp32_val_accuracy": round(choice.fp32_accuracy, 5),
                                                  "speedup_vs_fp32": choice.best.speedup}}})
