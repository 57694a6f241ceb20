"""Block distillation: alternatives learn the teacher's span output from its span input (feature loss, no labels).

Many alternatives share one teacher pass per batch (:func:`distill_group`); held-out activations are cached once
(:class:`ActivationCache`) for validation loss and swap-in accuracy.
"""

from bespoke.distill.activations import ActivationCache, accuracy, teacher_boundaries, tensor_bytes
from bespoke.distill.adapters import fit_adapters
from bespoke.distill.block import (
    DistillConfig,
    DistillJob,
    DistillOutcome,
    GroupReport,
    distill_group,
    validate,
)

__all__ = [
    "ActivationCache",
    "DistillConfig",
    "DistillJob",
    "DistillOutcome",
    "GroupReport",
    "accuracy",
    "distill_group",
    "fit_adapters",
    "teacher_boundaries",
    "tensor_bytes",
    "validate",
]
