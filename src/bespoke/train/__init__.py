"""Training shared by every stage: fine-tuning, losses, evaluation, checkpoints, divergence guard, cost."""

from bespoke.train.checkpoint import Checkpointer
from bespoke.train.cost import cpu_seconds
from bespoke.train.evaluate import EvalResult, evaluate, predict_logits
from bespoke.train.finetune import UNLABELLED, FinetuneConfig, FinetuneResult, ResumableSampler, finetune
from bespoke.train.guard import check_finite, check_finite_grads
from bespoke.train.losses import feature_loss, kd_loss, soft_cross_entropy
from bespoke.train.optim import make_optimizer, make_scheduler
from bespoke.train.semi import (
    HiddenLabels,
    SemiSupervisedConfig,
    SemiSupervisedResult,
    WithTargets,
    clean_logits,
    labelled_and_unlabelled,
    round_config,
    semi_supervised_finetune,
)

__all__ = [
    "UNLABELLED",
    "Checkpointer",
    "EvalResult",
    "FinetuneConfig",
    "FinetuneResult",
    "HiddenLabels",
    "ResumableSampler",
    "SemiSupervisedConfig",
    "SemiSupervisedResult",
    "WithTargets",
    "check_finite",
    "check_finite_grads",
    "clean_logits",
    "cpu_seconds",
    "evaluate",
    "feature_loss",
    "finetune",
    "kd_loss",
    "labelled_and_unlabelled",
    "make_optimizer",
    "make_scheduler",
    "predict_logits",
    "round_config",
    "semi_supervised_finetune",
    "soft_cross_entropy",
]
