"""Block distillation: each alternative learns to map the teacher's activation at its span input to the
teacher's activation at its span output (normalised feature MSE), on unlabelled training images.

A *group* of alternatives trains together from one shared teacher pass per batch: the teacher runs once up to
the last boundary any member needs, every member reads its input boundary and regresses its output boundary.
Memory is bounded by the group size (members' weights + optimiser state) and the cached boundaries of one
batch, both reported. A member whose loss or gradient turns NaN/inf is dropped from the group at that step (before
its weights change) and reported as diverged; the others carry on.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bespoke.distill.activations import ActivationCache, accuracy, teacher_boundaries, tensor_bytes
from bespoke.errors import DivergenceError
from bespoke.graph import Segmentation
from bespoke.train import (
    check_finite,
    check_finite_grads,
    cpu_seconds,
    feature_loss,
    make_optimizer,
    make_scheduler,
)
from bespoke.utils.device import autocast, channels_last, channels_last_safe
from bespoke.utils.progress import make_progress
from bespoke.utils.seed import Seed


class DistillConfig(BaseModel):
    """Settings of block distillation. Unknown keys are rejected, and so are NaN and inf."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: int = Field(200, ge=1, description="optimiser steps per alternative")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    group_size: int = Field(16, ge=1, description="alternatives trained from one shared teacher pass")
    val_images: int = Field(256, ge=0, description="held-out images for val feature loss and swap accuracy")
    max_cache_mb: float = Field(256.0, gt=0, description="cap on the held-out activation cache")
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="layout while distilling: channels_last (faster convolutions on CPU), contiguous, or "
                            "auto (channels_last unless the modules hold a block known to break in it)")
    seed: Seed = 0
    device: str = "auto"


@dataclass
class DistillJob:
    """One alternative to train: its id, module, and the teacher span ``[start, end)`` it replaces."""

    id: str
    module: nn.Module
    start: int
    end: int


@dataclass
class DistillOutcome:
    """What happened to one job: ``done`` with metrics, or ``diverged`` with the step and value."""

    id: str
    status: str
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    error: str | None = None


@dataclass
class GroupReport:
    outcomes: list[DistillOutcome]
    batch_activation_bytes: int
    group_param_bytes: int
    max_rss_mb: float
    cpu_s: float
    wall_s: float


def _state_bytes(modules: Sequence[nn.Module]) -> int:
    params = sum(tensor_bytes(m.parameters()) for m in modules)
    return 4 * params  # weights + grads + AdamW's two moments


def distill_group(seg: Segmentation, jobs: Sequence[DistillJob], next_batch: Callable[[], torch.Tensor],
                  cfg: DistillConfig, val: ActivationCache | None = None,
                  device: torch.device | None = None) -> GroupReport:
    """Train ``jobs`` together for ``cfg.steps`` steps on batches from ``next_batch()`` (normalised images).

    The teacher segmentation ``seg`` must be in eval mode on ``device``; modules are moved there.
    """
    device = device or torch.device("cpu")
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    alive = {job.id: job for job in jobs}
    outcomes: dict[str, DistillOutcome] = {}
    opts, scheds, running = {}, {}, {}
    for job in jobs:
        job.module.to(device).train()
        if any(p.requires_grad for p in job.module.parameters()):  # a plain skip has nothing to learn
            opts[job.id] = make_optimizer(job.module, lr=cfg.lr, weight_decay=cfg.weight_decay)
            scheds[job.id] = make_scheduler(opts[job.id], total_steps=cfg.steps, lr=cfg.lr)
    upto = max(job.end for job in jobs)
    needed = sorted({j.start for j in jobs} | {j.end for j in jobs})
    batch_bytes = 0
    modules = (*seg.segments, *(job.module for job in jobs))
    nhwc = cfg.memory_format == "channels_last" or (cfg.memory_format == "auto"
                                                    and channels_last_safe(device, *modules))
    layout = channels_last(*modules) if nhwc else contextlib.nullcontext()
    image_format = torch.channels_last if nhwc else torch.contiguous_format
    with layout, make_progress() as progress:
        task = progress.add_task(f"distill {len(jobs)} alternatives", total=cfg.steps, postfix="")
        for step in range(cfg.steps):
            if not alive:
                break
            acts = teacher_boundaries(seg, next_batch().to(device, memory_format=image_format), upto)
            batch_bytes = max(batch_bytes, tensor_bytes(acts[k] for k in needed))
            for job_id in list(alive):
                job = alive[job_id]
                with autocast(device):  # bf16 on CUDA; fp32 targets and loss
                    pred = job.module(acts[job.start])
                loss = feature_loss(pred.float(), acts[job.end])
                try:
                    check_finite(loss, stage=f"distill {job_id}", step=step)
                    if job_id in opts:
                        opts[job_id].zero_grad(set_to_none=True)
                        loss.backward()
                        check_finite_grads(job.module.parameters(), stage=f"distill {job_id}", step=step)
                        opts[job_id].step()
                        scheds[job_id].step()
                except DivergenceError as exc:
                    outcomes[job_id] = DistillOutcome(job_id, "diverged", {"step": step, "value": exc.value},
                                                      str(exc))
                    del alive[job_id]
                    continue
                value = loss.item()
                running[job_id] = value if step == 0 else 0.9 * running[job_id] + 0.1 * value
            progress.update(task, advance=1, postfix=f"{len(alive)} alive")
        for job_id, job in alive.items():
            job.module.eval()
            metrics: dict[str, float | int | None] = {"train_loss": running.get(job_id), "steps": cfg.steps}
            if val is not None and len(val):
                metrics.update(validate(seg, job, val, device))
            loss = metrics.get("val_loss")
            if loss is not None and not torch.isfinite(torch.tensor(float(loss))):
                outcomes[job_id] = DistillOutcome(job_id, "diverged", metrics, f"validation loss {loss}")
            else:
                outcomes[job_id] = DistillOutcome(job_id, "done", metrics)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return GroupReport(outcomes=[outcomes[j.id] for j in jobs], batch_activation_bytes=batch_bytes,
                       group_param_bytes=_state_bytes([j.module for j in jobs]), max_rss_mb=rss_mb,
                       cpu_s=cpu_seconds() - cpu0, wall_s=time.perf_counter() - wall0)


@torch.no_grad()
def validate(seg: Segmentation, job: DistillJob, val: ActivationCache,
             device: torch.device | None = None) -> dict[str, float]:
    """Held-out feature loss of the alternative and top-1 of the teacher with only it swapped in."""
    device = device or torch.device("cpu")
    losses, logits = [], []
    for i in range(0, len(val), val.chunk):
        x = val.acts[job.start][i:i + val.chunk].to(device)
        y = job.module(x)
        target = val.acts[job.end][i:i + val.chunk].to(device)
        losses.append(feature_loss(y, target).item() * len(x))
        logits.append(seg.run(y, job.end).cpu())
    n = len(val)
    return {"val_loss": sum(losses) / n, "val_accuracy": accuracy(torch.cat(logits), val.labels),
            "teacher_val_accuracy": val.teacher_accuracy, "val_images": n}
