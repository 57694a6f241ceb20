"""Fine-tuned donors: a pretrained zoo model fine-tuned on the (possibly label-scarce) training set."""

from __future__ import annotations

from pathlib import Path

from bespoke.baselines.common import TrainData, cpu_timer, save_with_costs
from bespoke.export import ModelCard, zoo_arch_config
from bespoke.train import FinetuneConfig, finetune
from bespoke.zoo import create_model, get_pretrained_cfg


def finetune_donor(name: str, data: TrainData, cfg: FinetuneConfig, out_dir: str | Path, *,
                   method: str | None = None, engine: str = "finetune") -> ModelCard:
    """Fine-tune zoo model ``name`` on ``data.train`` and write a model directory at ``out_dir``.

    Resumable (``out_dir/checkpoints``); the card's ``cost_cpu_s`` has ``setup``, ``finetune`` (all attempts
    together) and ``export``.
    """
    costs: dict[str, float] = {}
    pre = get_pretrained_cfg(name)
    with cpu_timer(costs, "setup"):
        model = create_model(name, num_classes=data.num_classes, resolution=data.resolution)
    result = finetune(model, data.train, data.test, cfg, mean=pre.mean, std=pre.std, out_dir=out_dir)
    costs["finetune"] = round(result.cpu_s, 1)
    card = ModelCard(
        arch=name, arch_config=zoo_arch_config(name, data.num_classes, data.resolution), engine=engine,
        num_classes=data.num_classes, classes=list(data.classes), resolution=data.resolution, mean=pre.mean,
        std=pre.std, accuracy=result.accuracy, cost_cpu_s=costs, data=dict(data.info),
        provenance={"weights": pre.source, "recipe": cfg.model_dump(),
                    "history": result.history, "wall_s": round(result.wall_s, 1)},
        method=method or f"finetuned {name}",
    )
    return save_with_costs(out_dir, model, card, costs)
