"""Per-target extraction + fine-tuning: the once-for-all route without supernet training.

The supernet is built from the teacher and left untrained (``SupernetTrainConfig(steps=0)``); the supernet
engine's own selection (accuracy predictor, cost table, evolution, measurement after export) picks one subnet per
target, which is extracted and fine-tuned on the labelled share with the shared recipe. Training cost grows with
the number of targets, which is what TOFA's one supernet is compared against.

Built on the supernet engine's public API only (``train_supernet``, ``select_subnets``); the module imports it,
so it is not re-exported by :mod:`bespoke.baselines` (the benchmark imports it when its stage runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bespoke.baselines.common import TrainData, save_with_costs
from bespoke.delivery import write_delivery
from bespoke.errors import BespokeError
from bespoke.export import CARD, ModelCard, load_model_dir
from bespoke.supernet import (
    DataSource,
    SelectConfig,
    SpaceOptions,
    SupernetJob,
    SupernetTrainConfig,
    select_subnets,
    train_supernet,
)
from bespoke.targets import Target
from bespoke.train import FinetuneConfig, finetune

ENGINE = "baseline-extract"
SUPERNET, SELECTED, MODELS = "supernet", "selected", "models"


def untrained_supernet_job(teacher_dir: str | Path, out: str | Path, *, data: str, labels: float, resolution: int,
                           space: SpaceOptions | None = None, seed: int = 0, **limits: object) -> SupernetJob:
    """The supernet job of this baseline: built from the teacher, 0 training steps, labelled-only (so every
    subnet's BN statistics are recalibrated on the labelled share). ``limits``: ``train_limit``,
    ``test_limit``, ``val_fraction`` of :class:`~bespoke.supernet.SupernetJob`."""
    train = SupernetTrainConfig(steps=0, semi_supervised=False, seed=seed, eval_images=0)
    return SupernetJob.model_validate({"teacher": str(teacher_dir), "data": data, "labels": labels,
                                       "resolution": resolution, "out": Path(out), "space": space or SpaceOptions(),
                                       "train": train, **limits})


def extract_and_finetune(job: SupernetJob, targets: Sequence[Target], data: TrainData, recipe: FinetuneConfig,
                         out: str | Path, *, select: SelectConfig | None = None, source: DataSource | None = None,
                         method: str = "extract + fine-tune", log: Callable[[str], None] = print) -> list[Path]:
    """One fine-tuned subnet per target under ``out/models/<target>``; returns their model directories.

    ``job``: the untrained supernet (see :func:`untrained_supernet_job`; its steps must be 0), written to
    ``job.out``. ``data``: the labelled share to fine-tune on and the test split. ``source`` overrides the data
    the supernet job names (as for ``train_supernet``). Resumable: the supernet, the selection and each
    fine-tune continue or are skipped. A target no subnet meets gets no directory; when none is delivered the
    selection's error is raised.
    """
    if job.train.steps != 0:
        raise BespokeError(f"extract + fine-tune starts from an untrained supernet, not {job.train.steps} steps",
                           "build the job with untrained_supernet_job")
    out = Path(out)
    train_supernet(job, data=source)
    try:
        select_subnets(job.out, list(targets), out / SELECTED, config=select, data=source)
        error = None
    except BespokeError as exc:  # some budgets unreachable: fine-tune the subnets that were delivered
        error = exc
    dirs = []
    for target in targets:
        picked, final = out / SELECTED / target.name, out / MODELS / target.name
        if (picked / CARD).is_file():
            dirs.append(final if (final / CARD).is_file() else finetune_pick(picked, data, recipe, final,
                                                                             method=method))
            log(f"[extract] {target.name}: {final}")
    if error is not None:
        if not dirs:
            raise error
        log(f"[extract] delivered {len(dirs)} of {len(targets)} target(s): {error}")
    return dirs


def finetune_pick(picked: Path, data: TrainData, recipe: FinetuneConfig, out: Path, *,
                  method: str = "extract + fine-tune") -> Path:
    """Fine-tune the subnet the selection delivered in ``picked`` and write it to ``out``.

    Fine-tuning keeps the architecture, so the delivery carries the selection's measurement after export
    (latency does not depend on weight values); the selection's costs are kept, the supernet's as shared.
    """
    model, card = load_model_dir(picked)
    if card.delivery is None:
        raise BespokeError(f"{picked} has no delivery section", "select the subnet with select_subnets")
    result = finetune(model, data.train, data.test, recipe, mean=card.mean, std=card.std, out_dir=out)
    costs = {**card.cost_cpu_s, "finetune": round(result.cpu_s, 1)}
    fields = card.model_dump()
    fields.update(engine=ENGINE, method=method, accuracy=round(result.accuracy, 4), latency_ms={}, latency={},
                  delivery=None, data=dict(data.info),
                  provenance={**card.provenance, "selected": str(picked), "recipe": recipe.model_dump(mode="json"),
                              "accuracy_before_finetune": card.accuracy, "history": result.history,
                              "finetune_wall_s": round(result.wall_s, 1)})
    save_with_costs(out, model, ModelCard.model_validate(fields), costs)
    d = card.delivery
    write_delivery(out, (d.target, d.budget, d.unit), budget=d.budget_resolved, readings=d.readings,
                   predicted=d.predicted, attempts=d.attempts, reference=d.reference)
    return out

