"""The unified semi-supervised loss of TOFA training, split into the largest subnet's and the others' parts.

Largest subnet (the in-place teacher), one forward on ``[labelled weak | unlabelled weak | unlabelled strong]``:
cross-entropy on labelled images + FixMatch on unlabelled ones (its own confident weak-view predictions as hard
labels for its strong view). Its weak-view logits of *all* images become the targets of every smaller subnet,
which sees the strong views: KD to the soft targets + cross-entropy on hard labels (the true label of a labelled
image, the confident pseudo-label of an unlabelled one).

With ``soft_targets: teacher | both`` a fixed teacher's logits of the clean images (computed once before training)
replace, or are averaged with, the largest subnet's as the smaller subnets' targets, and the largest subnet itself
is distilled towards them on every image of the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bespoke.supernet.config import SupernetTrainConfig
from bespoke.train.losses import kd_loss


@dataclass
class TeacherTargets:
    """Detached weak-view logits of the largest subnet for all images of the step; ``labels``: the true labels
    of the first ``len(labels)`` images (the labelled ones)."""

    logits: torch.Tensor
    labels: torch.Tensor | None = None

    def pseudo_labels(self, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard labels and the float mask of those whose confidence reaches ``threshold``."""
        conf, labels = F.softmax(self.logits, dim=-1).max(dim=-1)
        return labels, (conf >= threshold).float()

    def hard_labels(self, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The true label where it is known, else the confident pseudo-label (with its mask)."""
        labels, mask = self.pseudo_labels(threshold)
        if self.labels is not None:
            n = self.labels.shape[0]
            labels = torch.cat([self.labels, labels[n:]])
            mask = torch.cat([torch.ones_like(mask[:n]), mask[n:]])
        return labels, mask


def masked_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over all items, masked ones contributing zero (FixMatch's normalisation)."""
    return (F.cross_entropy(logits, labels, reduction="none") * mask).mean()


def mixed_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is the mean of ``softmax(a)`` and ``softmax(b)``."""
    return torch.logsumexp(torch.stack([F.log_softmax(a, -1), F.log_softmax(b, -1)]), dim=0) - math.log(2.0)


def largest_loss(logits: torch.Tensor, labels: torch.Tensor, n_unlabelled: int, cfg: SupernetTrainConfig,
                 teacher_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, TeacherTargets, dict[str, float]]:
    """Loss of the largest subnet; ``logits`` are of ``[labelled weak | unlabelled weak | unlabelled strong]``;
    ``teacher_logits``: the teacher's of ``[labelled | unlabelled]`` clean images (``soft_targets`` teacher | both)."""
    n_l = labels.shape[0]
    sup = F.cross_entropy(logits[:n_l], labels, label_smoothing=cfg.label_smoothing)
    loss = cfg.ce_weight * sup
    stats = {"sup": float(sup.detach())}
    if n_unlabelled:
        weak = TeacherTargets(logits[n_l:n_l + n_unlabelled].detach())
        pseudo, mask = weak.pseudo_labels(cfg.threshold)
        self_term = masked_ce(logits[n_l + n_unlabelled:], pseudo, mask)
        loss = loss + cfg.self_weight * self_term
        stats.update({"self": float(self_term.detach()), "mask": float(mask.mean())})
    own = logits[:n_l + n_unlabelled]
    soft = own.detach()
    if cfg.soft_targets != "inplace":
        if teacher_logits is None:
            raise ValueError(f"soft_targets {cfg.soft_targets!r} needs the teacher's logits of the step's images")
        teacher_logits = teacher_logits.to(own.dtype)
        kd = kd_loss(own, teacher_logits, cfg.temperature)
        loss = loss + cfg.teacher_weight * kd
        stats["teacher_kd"] = float(kd.detach())
        soft = teacher_logits if cfg.soft_targets == "teacher" else mixed_logits(soft, teacher_logits)
    targets = TeacherTargets(soft, labels if cfg.subnet_labels else None)
    return loss, targets, stats


def subnet_loss(logits: torch.Tensor, targets: TeacherTargets, cfg: SupernetTrainConfig
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a smaller subnet on strong views: KD to soft targets + CE on hard labels (true ones of labelled
    images with ``cfg.subnet_labels``, confident pseudo-labels of the rest)."""
    kd = kd_loss(logits, targets.logits, cfg.temperature)
    pseudo, mask = targets.hard_labels(cfg.threshold)
    pl = masked_ce(logits, pseudo, mask)
    return cfg.kd_weight * kd + cfg.pseudo_weight * pl, {"kd": float(kd.detach()), "pl": float(pl.detach())}
