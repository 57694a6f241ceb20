"""Losses shared by fine-tuning, student retraining, block distillation and supernet training."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton distillation: KL(teacher_T || student_T) * T^2, averaged over the batch."""
    t = temperature
    log_p = F.log_softmax(student_logits / t, dim=-1)
    q = F.softmax(teacher_logits.detach() / t, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean") * (t * t)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability vector per sample (batch mean)."""
    return -(target_probs.detach() * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def feature_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalised feature MSE: ``mse(pred, target) / mean(target^2)``, comparable across layers of any scale."""
    target = target.detach()
    return F.mse_loss(pred, target) / (target.pow(2).mean() + eps)
