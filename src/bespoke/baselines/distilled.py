"""Label-scarce models that learn from the unlabelled share too: a self-trained teacher and students distilled
from it on every training image.

Both start from a model already fine-tuned on the labelled share (a model directory) and train on labelled +
unlabelled images: cross-entropy on the labelled ones, distillation on all of them from a teacher's logits of the
clean images (computed once, with the teacher's own normalisation, so the student may be another architecture).
:func:`self_trained_teacher` is :func:`bespoke.train.semi_supervised_finetune` with its round 0 given;
:func:`distilled_from` is one such round with another teacher (a donor distilled from the semi-supervised
teacher: the strong label-scarce baseline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from bespoke.baselines.common import TrainData, cpu_timer, save_with_costs
from bespoke.export import ModelCard, load_model_dir, read_card
from bespoke.train import (
    FinetuneConfig,
    SemiSupervisedConfig,
    WithTargets,
    clean_logits,
    finetune,
    labelled_and_unlabelled,
    round_config,
    semi_supervised_finetune,
)
from bespoke.zoo import create_model


def _card_from(start: ModelCard, *, engine: str, accuracy: float, costs: dict[str, float], data: TrainData,
               provenance: dict[str, Any], method: str) -> ModelCard:
    """A new card for a model trained from ``start`` (same architecture; nothing measured carried over)."""
    return ModelCard(arch=start.arch, arch_config=start.arch_config, engine=engine, num_classes=start.num_classes,
                     classes=list(start.classes), resolution=start.resolution, mean=start.mean, std=start.std,
                     accuracy=accuracy, cost_cpu_s=costs, data=dict(data.info), provenance=provenance, method=method)


def self_trained_teacher(start_dir: str | Path, labelled: Dataset, unlabelled: Dataset, data: TrainData,
                         cfg: FinetuneConfig, semi: SemiSupervisedConfig, out_dir: str | Path, *, method: str,
                         engine: str = "finetune") -> ModelCard:
    """Self-training rounds (:func:`~bespoke.train.semi_supervised_finetune`) from ``start_dir``'s model, fine-tuned
    on ``labelled`` before (its round 0), into the model directory ``out_dir``. Resumable per round.

    ``semi.init == "pretrained"`` builds each round's student from the zoo (``start_dir``'s architecture must be a
    zoo name then). The card's cost counts the rounds only; round 0 is ``start_dir``'s own.
    """
    model, card = load_model_dir(start_dir)

    def make_model() -> nn.Module:  # only called with init "pretrained"
        return create_model(card.arch, num_classes=card.num_classes, resolution=card.resolution, seed=cfg.seed)

    model, result = semi_supervised_finetune(make_model, labelled, unlabelled, data.test, cfg, semi,
                                             mean=card.mean, std=card.std, out_dir=out_dir, start=model)
    costs = {"semi_supervised": round(result.cpu_s, 1)}
    provenance = {"start": str(Path(start_dir)), "start_accuracy": card.accuracy, "recipe": cfg.model_dump(),
                  "semi_supervised": {**semi.model_dump(), "rounds_run": result.summary(),
                                      "targets_cpu_s": round(result.targets_cpu_s, 1)},
                  "wall_s": round(result.final.wall_s, 1)}
    new = _card_from(card, engine=engine, accuracy=result.final.accuracy, costs=costs, data=data,
                     provenance=provenance, method=method)
    return save_with_costs(out_dir, model, new, costs)


def distilled_from(start_dir: str | Path, teacher_dir: str | Path, labelled: Dataset, unlabelled: Dataset,
                   data: TrainData, cfg: FinetuneConfig, semi: SemiSupervisedConfig, out_dir: str | Path, *,
                   method: str, engine: str = "baseline-donor-kd") -> ModelCard:
    """``start_dir``'s model trained on every training image: cross-entropy on ``labelled``, distillation from
    ``teacher_dir``'s logits of the clean images (one round of ``semi``'s recipe: epochs, augmentation, KD weight
    and temperature over ``cfg``). Resumable (``out_dir/checkpoints``)."""
    costs: dict[str, float] = {}
    with cpu_timer(costs, "teacher_targets"):
        teacher, teacher_card = load_model_dir(teacher_dir)
        images = labelled_and_unlabelled(labelled, unlabelled)
        targets = clean_logits(teacher, images, teacher_card.mean, teacher_card.std, device=cfg.device,
                               batch_size=cfg.eval_batch_size)
        del teacher
    model, card = load_model_dir(start_dir)
    model.train()
    recipe = round_config(cfg, semi)
    result = finetune(model, WithTargets(images, targets), data.test, recipe, mean=card.mean, std=card.std,
                      out_dir=out_dir, stage="distill")
    costs["distill"] = round(result.cpu_s, 1)
    provenance = {"start": str(Path(start_dir)), "start_accuracy": card.accuracy, "teacher": str(Path(teacher_dir)),
                  "teacher_accuracy": read_card(teacher_dir).accuracy, "recipe": recipe.model_dump(),
                  "history": result.history, "wall_s": round(result.wall_s, 1)}
    new = _card_from(card, engine=engine, accuracy=result.accuracy, costs=costs, data=data,
                     provenance=provenance, method=method)
    return save_with_costs(out_dir, model.eval(), new, costs)
