"""Fine-tuning loop shared by ``bespoke finetune``, student retraining and the baselines.

Cross-entropy with label smoothing, optional knowledge distillation from a teacher, AdamW + one-cycle, resumable at
step granularity: a killed run restarted with the same arguments continues from its last checkpoint and ends with
the same weights as an uninterrupted run (same seed, same sample order, same augmentation draws).

Data-parallel when given a multi-process :class:`~bespoke.utils.distributed.DistContext` (torchrun): every rank
walks the same global batches of ``batch_size`` and takes its share, gradients are averaged before each optimiser
step, rank 0 alone writes checkpoints (the others wait), and the test set is evaluated in shards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from bespoke.data import TransformedDataset, build_transform
from bespoke.errors import BespokeError
from bespoke.train.checkpoint import Checkpointer
from bespoke.train.cost import cpu_seconds
from bespoke.train.evaluate import EvalResult, evaluate
from bespoke.train.guard import check_finite, check_finite_grads
from bespoke.train.losses import kd_loss
from bespoke.train.optim import make_optimizer, make_scheduler
from bespoke.utils.device import autocast, channels_last, channels_last_safe, pick_device
from bespoke.utils.distributed import DistContext
from bespoke.utils.progress import make_progress
from bespoke.utils.seed import Seed, rng_state, seed_everything, set_rng_state


class FinetuneConfig(BaseModel):
    """Recipe of a fine-tune. Unknown keys are rejected (a typo must not silently change a run), and so are NaN and
    inf (``lr: inf`` trains weights into NaN)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, le=1, description="peak learning rate (AdamW); above 1 every run diverges")
    weight_decay: float = Field(0.05, ge=0, le=1, description="AdamW decoupled weight decay")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: Literal["none", "flip", "weak", "strong"] = "weak"
    kd_weight: float = Field(0.0, ge=0, le=1, description="weight of the KD term when a teacher is given")
    kd_temperature: float = Field(4.0, gt=0, le=100)
    seed: Seed = 0
    device: str = "auto"
    checkpoint_every: int = Field(50, ge=1, description="steps between mid-epoch checkpoints")
    eval_batch_size: int = Field(256, ge=1)
    memory_format: Literal["channels_last", "contiguous", "auto"] = Field(
        "auto", description="layout of weights and images while training: channels_last (faster convolutions), "
                            "contiguous, or auto (channels_last unless the model is known to break in it)")


def resolve_memory_format(model: nn.Module, requested: str, device: torch.device,
                          *related: nn.Module | None) -> str:
    """The layout a fine-tune of ``model`` on ``device`` trains in: ``requested`` unless it is ``"auto"``, which
    picks contiguous for models with a block known to break in channels-last on CPU, channels-last otherwise.
    ``related``: models ``model`` was made from (its teacher: a student assembled from traced segments no longer
    names the blocks it holds)."""
    if requested != "auto":
        return requested
    return "channels_last" if channels_last_safe(device, model, *related) else "contiguous"


@dataclass
class FinetuneResult:
    accuracy: float
    test_loss: float
    steps: int
    epochs: int
    cpu_s: float
    wall_s: float
    history: list[dict] = field(default_factory=list)
    memory_format: str = "channels_last"  # the layout it trained in (``FinetuneConfig.memory_format`` resolved)


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation that can start part-way through (resume without replaying skipped batches).

    With ``world_size`` > 1 it yields this rank's share of every global batch of ``batch_size`` (every
    ``world_size``-th index from position ``rank``), so all ranks together see the single-process batches; a last
    partial global batch is dropped when ``drop_last``.
    """

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, *, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1, drop_last: bool = False) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start
        self.rank, self.world_size, self.batch_size, self.drop_last = rank, world_size, batch_size, drop_last

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[self.start:].tolist()
        if self.world_size == 1:
            return order
        mine: list[int] = []
        for i in range(0, len(order), self.batch_size):
            batch = order[i:i + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                break
            mine += batch[self.rank::self.world_size]
        return mine

    def __iter__(self) -> Iterator[int]:
        yield from self._indices()

    def __len__(self) -> int:
        return self.n - self.start if self.world_size == 1 else len(self._indices())


def finetune(model: nn.Module, train_ds: Dataset, test_ds: Dataset, cfg: FinetuneConfig, *,
             mean: tuple[float, ...], std: tuple[float, ...], out_dir: str | Path,
             teacher: nn.Module | None = None, stage: str = "finetune",
             dist: DistContext | None = None) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``train_ds`` and evaluate it on ``test_ds``.

    Distillation (``cfg.kd_weight`` > 0) targets ``teacher``'s logits of each augmented batch, or the logits a
    dataset yields as a third item (computed once, e.g. on un-augmented images).

    ``out_dir/checkpoints/<stage>.pt`` holds the resumable state; a finished run's checkpoint is kept, so calling
    again returns the recorded result and the final weights without training. ``dist``: the data-parallel context
    (default: this process alone, on ``cfg.device``); ``cfg.batch_size`` is then the global batch.
    """
    n = len(train_ds)  # type: ignore[arg-type]
    if n == 0:
        raise BespokeError("the training split is empty", "check the data path and --train-limit")
    ctx = dist or DistContext(pick_device(cfg.device))
    device = ctx.device
    local_batch = ctx.per_rank(cfg.batch_size)
    if n < ctx.world_size:
        raise BespokeError(f"{n} training images cannot be shared by {ctx.world_size} processes",
                           "use more data or fewer processes")
    steps_per_epoch = n // cfg.batch_size if n >= cfg.batch_size else 1
    total_steps = steps_per_epoch * cfg.epochs
    seed_everything(cfg.seed)
    model.to(device)
    ctx.broadcast_module(model)
    if ctx.rank:  # own augmentation and dropout draws per rank (rank 0 keeps the single-process ones)
        seed_everything(_rank_seed(cfg.seed, ctx.rank))
    if teacher is not None:
        teacher.to(device).eval()
    opt = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, total_steps=total_steps, lr=cfg.lr)
    ckpt = Checkpointer(Path(out_dir) / "checkpoints", f"{stage}.pt")
    state = ctx.broadcast_object(ckpt.load() if ctx.is_main else None)
    epoch, step_in_epoch, step, history, spent_cpu, spent_wall = 0, 0, 0, [], 0.0, 0.0
    running = 0.0
    if state is not None:
        recorded = state.get("config")  # checkpoints written before the recipe was recorded only know the steps
        if state.get("total_steps") != total_steps or (recorded is not None and recorded != _recipe(cfg)):
            raise BespokeError(f"checkpoint {ckpt.path} belongs to a run with other settings",
                               "use another --out, or delete the checkpoint to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        set_rng_state(ranks[ctx.rank] if len(ranks) == ctx.world_size else state["rng"])
        if len(ranks) != ctx.world_size and ctx.rank:  # resumed on another number of processes
            seed_everything(_rank_seed(cfg.seed, ctx.rank, state["step"]))
        epoch, step_in_epoch, step = state["epoch"], state["step_in_epoch"], state["step"]
        history, spent_cpu, spent_wall = list(state["history"]), state["cpu_s"], state["wall_s"]
        running = float(state.get("running", 0.0))  # the epoch's smoothed loss so far (its history entry)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()

    def save_state() -> None:  # every rank calls it; rank 0 writes, the others wait for the file
        ctx.average_buffers(model)
        rngs = ctx.all_gather_object(rng_state())
        cpu_s = spent_cpu + ctx.sum(cpu_seconds() - cpu0)
        if ctx.is_main:
            ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                       "rng": rngs[0], "rng_ranks": rngs, "epoch": epoch, "step_in_epoch": step_in_epoch,
                       "step": step, "total_steps": total_steps, "config": _recipe(cfg), "history": history,
                       "running": running,
                       "cpu_s": cpu_s, "wall_s": spent_wall + time.perf_counter() - wall0})
        ctx.barrier()

    train_tf = build_transform("eval" if cfg.augment == "none" else cfg.augment, mean, std)
    data = TransformedDataset(train_ds, train_tf)
    model.train()
    layout = resolve_memory_format(model, cfg.memory_format, device, teacher)
    image_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    weights_layout = channels_last(model, teacher) if layout == "channels_last" else contextlib.nullcontext()
    with weights_layout, make_progress() as progress:
        task = progress.add_task(stage, total=total_steps, completed=step, postfix="")
        while epoch < cfg.epochs:
            sampler = ResumableSampler(n, cfg.seed, epoch, start=step_in_epoch * cfg.batch_size, rank=ctx.rank,
                                       world_size=ctx.world_size, batch_size=cfg.batch_size,
                                       drop_last=n >= cfg.batch_size)
            # Own generator: a DataLoader otherwise draws from the global RNG when it starts an epoch, which would
            # shift augmentation draws after a resume.
            loader = DataLoader(data, batch_size=local_batch, sampler=sampler,
                                drop_last=n >= cfg.batch_size and not ctx.enabled,
                                generator=torch.Generator().manual_seed(cfg.seed + epoch))
            if step_in_epoch == 0:
                running = 0.0
            for batch in loader:
                x = batch[0].to(device, non_blocking=True, memory_format=image_format)
                y = batch[1].to(device, non_blocking=True)
                given = batch[2].to(device) if len(batch) > 2 else None  # the dataset's own teacher logits
                with autocast(device):
                    logits = model(x)
                    loss = labelled_cross_entropy(logits, y, cfg.label_smoothing)
                    if (teacher is not None or given is not None) and cfg.kd_weight > 0:
                        with torch.no_grad():
                            t_logits = given if given is not None else teacher(x)
                        loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * kd_loss(
                            logits.float(), t_logits.float(), cfg.kd_temperature)
                value = ctx.mean_stats({"loss": float(loss.detach())})["loss"]  # the global batch's loss
                check_finite(value, stage=stage, step=step)  # same verdict on every rank
                opt.zero_grad(set_to_none=True)
                loss.backward()
                ctx.all_reduce_gradients(model.parameters())
                check_finite_grads(model.parameters(), stage=stage, step=step)  # averaged: same verdict everywhere
                opt.step()
                sched.step()
                step += 1
                step_in_epoch += 1
                running = 0.9 * running + 0.1 * value if step_in_epoch > 1 else value
                progress.update(task, advance=1, postfix=f"ep {epoch + 1}/{cfg.epochs} loss {running:.3f}")
                if step_in_epoch % cfg.checkpoint_every == 0 and step_in_epoch < steps_per_epoch:
                    save_state()
            history.append({"epoch": epoch + 1, "train_loss": running, "step": step})
            epoch += 1
            step_in_epoch = 0
            save_state()
        model.eval()
        result = _evaluate_shards(model, TransformedDataset(test_ds, build_transform("eval", mean, std)),
                                  cfg.eval_batch_size, ctx)
    return FinetuneResult(accuracy=result.accuracy, test_loss=result.loss, steps=step, epochs=cfg.epochs,
                          cpu_s=spent_cpu + ctx.sum(cpu_seconds() - cpu0),
                          wall_s=spent_wall + time.perf_counter() - wall0, history=history, memory_format=layout)


#: Label of a training image whose label is not used (a semi-supervised run's unlabelled share).
UNLABELLED = -1


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy averaged over the batch's labelled images (``labels != UNLABELLED``); 0 when it has none,
    so a batch of unlabelled images trains on the distillation term alone."""
    known = labels != UNLABELLED
    if bool(known.all()):
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    per_image = F.cross_entropy(logits, labels.clamp(min=0), label_smoothing=label_smoothing, reduction="none")
    return (per_image * known).sum() / known.sum().clamp(min=1)


def _evaluate_shards(model: nn.Module, ds: Dataset, batch_size: int, ctx: DistContext) -> EvalResult:
    """Test accuracy and loss; each rank evaluates every ``world_size``-th image and the sums are combined."""
    if not ctx.enabled:
        return evaluate(model, DataLoader(ds, batch_size=batch_size), device=ctx.device)
    size = len(ds)  # type: ignore[arg-type]
    part = evaluate(model, DataLoader(Subset(ds, range(ctx.rank, size, ctx.world_size)), batch_size=batch_size),
                    device=ctx.device)
    local = {"n": part.n, "correct": part.accuracy * part.n if part.n else 0.0,
             "loss": part.loss * part.n if part.n else 0.0}
    total = {k: v * ctx.world_size for k, v in ctx.mean_stats(local).items()}
    n = round(total["n"])
    if n == 0:
        return EvalResult(accuracy=float("nan"), loss=float("nan"), n=0)
    return EvalResult(accuracy=round(total["correct"]) / n, loss=total["loss"] / n, n=n)


def _rank_seed(seed: int, rank: int, step: int = 0) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step) % 2**63


def _recipe(cfg: FinetuneConfig) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint (where it runs and how often it saves may change)."""
    return cfg.model_dump(mode="json", exclude={"device", "checkpoint_every", "eval_batch_size", "memory_format"})
