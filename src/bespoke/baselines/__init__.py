"""Baselines the engines are compared against: fine-tuned donors, the pruned teacher retrained with KD, and for
the label-scarce runs a self-trained (semi-supervised) teacher and donors distilled from it on every image.

Importing this package registers the ``"pruned"`` architecture builder, so ``load_model_dir`` can rebuild
pruned models from their JSON recipe. Per-target extraction + fine-tune (``bespoke.baselines.extract``) is
imported on its own: it is built on the supernet engine.
"""

from bespoke.baselines.common import TrainData, cpu_timer, save_with_costs
from bespoke.baselines.distilled import distilled_from, self_trained_teacher
from bespoke.baselines.donors import finetune_donor
from bespoke.baselines.pruned import BudgetInfo, PruneSettings, Teacher, prune_and_distill
from bespoke.baselines.pruning import (
    PRUNED_BUILDER,
    PruneSearch,
    build_pruned,
    prune_to_budget,
    prune_uniform,
    pruned_arch_config,
)

__all__ = [
    "PRUNED_BUILDER",
    "BudgetInfo",
    "PruneSearch",
    "PruneSettings",
    "Teacher",
    "TrainData",
    "build_pruned",
    "cpu_timer",
    "distilled_from",
    "finetune_donor",
    "prune_and_distill",
    "prune_to_budget",
    "prune_uniform",
    "pruned_arch_config",
    "save_with_costs",
    "self_trained_teacher",
]
