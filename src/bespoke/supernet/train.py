"""Train the supernet once: sandwich rule + one semi-supervised loss for all subnets (TOFA).

Each step: the largest subnet learns from labelled images (CE) and, FixMatch-style, from its own confident
predictions on unlabelled ones; its weak-view predictions on all images are distilled into the smallest subnet
and ``n_random`` random subnets, which see strong views at their own resolutions. Subnets are drawn from a
generator seeded by ``(seed, step)``: the same on every rank and after a resume. The cost does not depend on
how many targets will be served later. A NaN/inf loss stops the run (``DivergenceError``); the last good
checkpoint stays.

Launched by ``torchrun`` it trains data-parallel: every rank takes its share of each global batch (same images
and augmentations as one process), trains the same subnets, and gradients are averaged before the optimiser step;
rank 0 alone writes checkpoints and the supernet directory while the others wait.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bespoke.data import TwoViewDataset, build_transform, split_labelled
from bespoke.errors import BespokeError
from bespoke.export import TeacherInfo, check_teacher_fits, load_teacher, read_card
from bespoke.supernet.build import build_supernet
from bespoke.supernet.config import SupernetJob, SupernetTrainConfig
from bespoke.supernet.data import DataSource, SpecSource
from bespoke.supernet.elastic import ElasticNet
from bespoke.supernet.evaluator import SubnetEvaluator
from bespoke.supernet.losses import largest_loss, subnet_loss
from bespoke.supernet.space import SubnetConfig
from bespoke.supernet.store import (
    META_FILE,
    SupernetMeta,
    calibration_pool,
    read_meta,
    save_supernet,
)
from bespoke.supernet.stream import BatchStream
from bespoke.train import (
    Checkpointer,
    WithTargets,
    check_finite,
    clean_logits,
    cpu_seconds,
    make_optimizer,
    make_scheduler,
)
from bespoke.utils.device import autocast
from bespoke.utils.distributed import DistContext, distributed
from bespoke.utils.lock import output_lock
from bespoke.utils.progress import make_progress
from bespoke.utils.seed import rng_state, seed_everything, set_rng_state

STAGE = "supernet"
StepCallback = Callable[[int, dict[str, float], ElasticNet], None]


@dataclass
class SupernetResult:
    """What a training run produced (also recorded in ``supernet.json``)."""

    out: Path
    steps: int
    cpu_s: float
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, Any] = field(default_factory=dict)


def step_subnets(net: ElasticNet, cfg: SupernetTrainConfig, step: int) -> list[SubnetConfig]:
    """The smaller subnets trained at ``step``: the smallest, then ``n_random`` drawn from ``(seed, step)``."""
    rng = np.random.default_rng([cfg.seed, step])
    return [net.space.smallest(), *(net.space.sample(rng) for _ in range(cfg.n_random))]


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


def sandwich_step(net: ElasticNet, labelled: list[torch.Tensor], unlabelled: list[torch.Tensor] | None,
                  cfg: SupernetTrainConfig, step: int, device: torch.device) -> dict[str, float]:
    """Forward/backward of one sandwich step (gradients accumulate; the caller steps the optimiser)."""
    xl_w, xl_s, yl = (t.to(device, non_blocking=True) for t in labelled[:3])
    parts = [xl_w]
    teacher = [labelled[3]] if len(labelled) > 3 else []  # the teacher's logits of the clean images, if any
    n_u = 0
    if unlabelled is not None:
        xu_w, xu_s = unlabelled[0].to(device), unlabelled[1].to(device)  # their labels are never read
        parts += [xu_w, xu_s]
        n_u = xu_w.shape[0]
        teacher += [unlabelled[3]] if len(unlabelled) > 3 else []
    net.set_active_subnet(net.space.largest())
    with autocast(device):
        logits = net(torch.cat(parts))
    teacher_logits = torch.cat(teacher).to(device) if teacher else None
    loss, targets, stats = largest_loss(logits.float(), yl, n_u, cfg, teacher_logits)
    check_finite(loss, stage=STAGE, step=step)
    loss.backward()
    total = float(loss.detach())
    strong = torch.cat([xl_s, xu_s]) if unlabelled is not None else xl_s
    kd, pl = [], []
    for sub in step_subnets(net, cfg, step):
        net.set_active_subnet(sub)
        with autocast(device):
            out = net(_resize(strong, sub.resolution))
        sub_loss, sub_stats = subnet_loss(out.float(), targets, cfg)
        check_finite(sub_loss, stage=STAGE, step=step)
        sub_loss.backward()
        total += float(sub_loss.detach())
        kd.append(sub_stats["kd"])
        pl.append(sub_stats["pl"])
    if kd:
        stats.update({"kd": float(np.mean(kd)), "pl": float(np.mean(pl))})
    stats["loss"] = total
    return stats


def _teacher_resolution(job: SupernetJob) -> int:
    if job.resolution is not None:
        return job.resolution
    if Path(job.teacher).is_dir():
        return read_card(job.teacher).resolution
    raise BespokeError(f"teacher {job.teacher!r} is a zoo name: the resolution must be given",
                       "pass --resolution (e.g. 64), or a fine-tuned model directory as --teacher")


def _job_record(job: SupernetJob) -> dict[str, Any]:
    return job.model_dump(mode="json", exclude={"out"})


class _Trainer:
    """State of one training run: network, optimiser, schedule, streams, counters; saves and restores it."""

    def __init__(self, net: ElasticNet, job: SupernetJob, streams: dict[str, BatchStream], ctx: DistContext) -> None:
        cfg = job.train
        self.net, self.cfg, self.streams, self.ctx, self.device = net, cfg, streams, ctx, ctx.device
        self.opt = make_optimizer(net, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = make_scheduler(self.opt, total_steps=cfg.steps, lr=cfg.lr)
        self.ckpt = Checkpointer(Path(job.out) / "checkpoints", "last.pt")
        self.record = _job_record(job)
        self.step, self.history, self.spent_cpu, self.spent_wall = 0, [], 0.0, 0.0
        self.cpu0, self.wall0 = cpu_seconds(), time.perf_counter()

    def restore(self) -> None:
        """Continue from the last checkpoint (read by rank 0, sent to every rank), if any."""
        state = self.ctx.broadcast_object(self.ckpt.load() if self.ctx.is_main else None)
        if state is None:
            return
        if state.get("job") != self.record:
            raise BespokeError(f"checkpoint {self.ckpt.path} belongs to a run with other settings",
                               "use another --out, or delete the checkpoint to start over")
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.ctx.world_size:
            set_rng_state(ranks[self.ctx.rank])
        else:  # resumed on another number of processes: only dropout draws differ
            set_rng_state(state["rng"])
            if self.ctx.rank:
                seed_everything(_rank_seed(self.cfg.seed, self.ctx.rank, int(state["step"])))
        self.step, self.history = int(state["step"]), list(state["history"])
        self.spent_cpu, self.spent_wall = float(state["cpu_s"]), float(state["wall_s"])

    def cpu_s(self) -> float:
        """CPU seconds of all ranks so far (a collective: every rank calls it at the same point)."""
        return self.spent_cpu + self.ctx.sum(cpu_seconds() - self.cpu0)

    def wall_s(self) -> float:
        return self.spent_wall + time.perf_counter() - self.wall0

    def save(self) -> None:
        """Checkpoint (every rank calls it; rank 0 writes, the others wait until the file is there)."""
        self.ctx.average_buffers(self.net)
        rngs = self.ctx.all_gather_object(rng_state())
        cpu_s = self.cpu_s()
        if self.ctx.is_main:
            self.ckpt.save({"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                            "scheduler": self.sched.state_dict(), "rng": rngs[0], "rng_ranks": rngs,
                            "step": self.step, "streams": {n: s.state_dict() for n, s in self.streams.items()},
                            "job": self.record, "history": self.history, "cpu_s": cpu_s, "wall_s": self.wall_s()})
        self.ctx.barrier()

    def train_step(self) -> dict[str, float]:
        self.net.train()
        labelled = self.streams["labelled"].next()
        unlabelled = self.streams["unlabelled"].next() if "unlabelled" in self.streams else None
        self.opt.zero_grad(set_to_none=True)
        stats = sandwich_step(self.net, labelled, unlabelled, self.cfg, self.step, self.device)
        self.ctx.all_reduce_gradients(self.net.parameters())
        stats = self.ctx.mean_stats(stats)
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        check_finite(norm, stage=STAGE, step=self.step, what="gradient norm")  # before the weights are touched
        self.opt.step()
        self.sched.step()
        self.step += 1
        stats = {"step": self.step, "lr": self.sched.get_last_lr()[0], **stats}
        self.history.append({k: round(v, 5) for k, v in stats.items()})
        return stats

    def run(self, callback: StepCallback | None) -> None:
        with make_progress() as progress:
            task = progress.add_task(STAGE, total=self.cfg.steps, completed=self.step, postfix="")
            while self.step < self.cfg.steps:
                stats = self.train_step()
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    self.save()
                postfix = f"loss {stats['loss']:.3f} sup {stats['sup']:.3f}"
                if "mask" in stats:
                    postfix += f" mask {stats['mask']:.2f}"
                progress.update(task, advance=1, postfix=postfix)
                if callback is not None:
                    callback(self.step, stats, self.net)


def _final_eval(net: ElasticNet, source: DataSource, info: TeacherInfo, job: SupernetJob,
                device: torch.device) -> dict[str, Any]:
    """Test accuracy of the largest and the smallest subnet (each with recalibrated BN)."""
    if job.train.eval_images == 0:
        return {}
    evaluator = SubnetEvaluator(source, info.mean, info.std, split="test", limit=job.train.eval_images,
                                seed=job.train.seed, calib_labelled=calibration_pool(_job_record(job)),
                                device=device)
    out: dict[str, Any] = {"test_images": job.train.eval_images}
    for name, cfg in (("largest", net.space.largest()), ("smallest", net.space.smallest())):
        _, acc = evaluator(net, cfg)
        out[f"{name}_accuracy"] = round(acc, 4)
    net.set_active_subnet(net.space.largest())
    return out


def train_supernet(job: SupernetJob, *, data: DataSource | None = None, callback: StepCallback | None = None,
                   dist: DistContext | None = None) -> SupernetResult:
    """Build the supernet from ``job.teacher`` and train it on ``job.data``; write ``job.out``.

    Resumes from ``job.out/checkpoints/last.pt``; a finished directory (``supernet.json``) with the same
    settings is returned as is. ``data`` overrides the data spec (e.g. in-memory splits via ``ResizedSource``).
    ``callback(step, stats, net)`` runs after every step (after that step's checkpoint, if any). ``dist``: the
    data-parallel context; by default it is read from torchrun's environment (a single process without it).
    """
    if dist is None:
        with distributed(job.train.device) as ctx:
            return train_supernet(job, data=data, callback=callback, dist=ctx)
    with output_lock(job.out) if dist.is_main else contextlib.nullcontext():
        return _train(job, data, callback, dist)


def _train(job: SupernetJob, data: DataSource | None, callback: StepCallback | None,
           dist: DistContext) -> SupernetResult:
    finished = dist.broadcast_object(_finished(job) if dist.is_main else None)
    if isinstance(finished, BespokeError):
        raise finished
    if finished is not None:
        return finished
    out = Path(job.out)
    cfg = job.train
    device = dist.device
    source = data or SpecSource(job.data, seed=cfg.seed, val_fraction=job.val_fraction,
                                train_limit=job.train_limit, test_limit=job.test_limit)
    resolution = _teacher_resolution(job)
    splits = source.splits(resolution)
    model, info = load_teacher(job.teacher, num_classes=splits.num_classes, resolution=resolution)
    check_teacher_fits(info, splits)
    labelled, unlabelled = split_labelled(splits.train, job.labels, cfg.seed)
    weak, strong = build_transform("weak", info.mean, info.std), build_transform("strong", info.mean, info.std)
    shard = {"rank": dist.rank, "world_size": dist.world_size}
    semi = cfg.semi_supervised and len(unlabelled) > 0
    views = {"labelled": TwoViewDataset(labelled, weak, strong)}
    if semi:
        views["unlabelled"] = TwoViewDataset(unlabelled, weak, strong)
    cpu0 = cpu_seconds()
    if cfg.soft_targets != "inplace":  # the teacher's view of every image, before the supernet takes its weights
        parts = {"labelled": labelled, **({"unlabelled": unlabelled} if semi else {})}
        views = {k: WithTargets(v, clean_logits(model, parts[k], info.mean, info.std, device=str(device)))
                 for k, v in views.items()}
    targets_cpu = cpu_seconds() - cpu0
    seed_everything(cfg.seed)
    net = build_supernet(model, resolution, options=job.space).to(device)
    dist.broadcast_module(net)
    if dist.rank:  # own dropout draws per rank (rank 0 keeps the single-process ones)
        seed_everything(_rank_seed(cfg.seed, dist.rank, 0))
    streams = {"labelled": BatchStream(views["labelled"], cfg.batch_size, seed=cfg.seed, salt=1, **shard)}
    if semi:
        streams["unlabelled"] = BatchStream(views["unlabelled"], cfg.batch_size * cfg.unlabelled_ratio,
                                            seed=cfg.seed, salt=2, **shard)
    trainer = _Trainer(net, job, streams, dist)
    trainer.restore()
    trainer.run(callback)
    cpu_train = trainer.cpu_s()
    result: SupernetResult | None = None
    if dist.is_main:
        cpu0 = cpu_seconds()
        evaluation = _final_eval(net, source, info, job, device)
        meta = SupernetMeta(
            teacher=info, classes=list(splits.classes), spec=net.spec.to_dict(), space=net.space.to_dict(),
            data={**source.describe(), "labels": job.labels, "labelled": len(labelled),
                  "unlabelled": len(unlabelled) if "unlabelled" in streams else 0, "resolution": resolution},
            job=_job_record(job),
            cost_cpu_s={"supernet_train": round(cpu_train + targets_cpu, 1),
                        "supernet_eval": round(cpu_seconds() - cpu0, 1)},
            wall_s=round(trainer.wall_s(), 1), history=trainer.history, eval=evaluation)
        save_supernet(out, net.cpu(), meta)
        result = SupernetResult(out, trainer.step, cpu_train, trainer.wall_s(), trainer.history, evaluation)
    return dist.broadcast_object(result)


def _finished(job: SupernetJob) -> SupernetResult | BespokeError | None:
    """The recorded result of a finished directory with the same settings, an error for other settings, or None."""
    out = Path(job.out)
    if not (out / META_FILE).is_file():
        return None
    meta = read_meta(out)
    if meta.job != _job_record(job):
        return BespokeError(f"{out} holds a supernet trained with other settings", "use another --out")
    return SupernetResult(out, job.train.steps, sum(meta.cost_cpu_s.values()), meta.wall_s, meta.history, meta.eval)


def _rank_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step, 7]).generate_state(1)[0])
