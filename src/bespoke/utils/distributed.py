"""Data-parallel training across processes (torch.distributed), launched with ``torchrun``.

``torchrun`` starts one process per device and sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`distributed` reads them, joins the process group (NCCL when the device is CUDA, gloo on
CPU) and yields a :class:`DistContext`; without them it yields a single-process context whose collectives do
nothing, so one code path serves both. Training loops built on it keep the *global* batch of the single-process
run (each rank takes its share of every batch), average gradients after backward, write files on rank 0 only and
let the other ranks wait at a barrier.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from bespoke.errors import BespokeError
from bespoke.utils.device import pick_device

T = TypeVar("T")
BUCKET_ELEMENTS = 1 << 23  # gradients are averaged in flat buckets of up to 8M values (32 MB in fp32)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run (``world_size == 1``: a plain single-process run)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints and outputs."""
        return self.rank == 0

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def per_rank(self, global_batch: int, what: str = "batch size") -> int:
        """This rank's share of a global batch (the global batch must split evenly)."""
        if global_batch % self.world_size:
            raise BespokeError(f"{what} {global_batch} does not split evenly over {self.world_size} processes",
                               f"use a multiple of {self.world_size}")
        return global_batch // self.world_size

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items of a global batch: every ``world_size``-th, from position ``rank``."""
        return list(items[self.rank::self.world_size])

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. until rank 0 has written a checkpoint)."""
        if self.enabled:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def all_reduce_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average ``.grad`` over ranks, in flat buckets (parameters without a gradient are skipped: every rank
        must run the same computation, which holds when all ranks train the same subnet on their shard)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for group in by_dtype.values():
            bucket: list[torch.Tensor] = []
            size = 0
            for g in group:
                bucket.append(g)
                size += g.numel()
                if size >= BUCKET_ELEMENTS:
                    self._average_into(bucket)
                    bucket, size = [], 0
            if bucket:
                self._average_into(bucket)

    def _average_into(self, tensors: list[torch.Tensor]) -> None:
        flat = torch.cat([t.reshape(-1) for t in tensors]).to(self._comm_device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over ranks: each rank saw its shard."""
        if not self.enabled:
            return
        buffers = [b for b in module.buffers() if b.is_floating_point()]
        if buffers:
            with torch.no_grad():
                self._average_into(buffers)

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (all start from identical weights)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                buf = t.detach().to(self._comm_device)
                dist.broadcast(buf, src=0)
                if buf.data_ptr() != t.data_ptr():
                    t.copy_(buf)

    def sum(self, value: float) -> float:
        """Sum of ``value`` over ranks (e.g. CPU seconds spent by all processes)."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Per-key mean over ranks of a dict of floats (every rank has the same keys)."""
        if not self.enabled or not stats:
            return dict(stats)
        keys = sorted(stats)
        t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        means = (t / self.world_size).tolist()
        return {k: means[keys.index(k)] for k in stats}

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (picklable objects; waits for rank 0)."""
        if not self.enabled:
            return obj
        box: list[Any] = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._comm_device if self.backend == "nccl" else None)
        return box[0]

    def all_gather_object(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise BespokeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number",
                           "launch with torchrun --nproc_per_node N") from None


@contextlib.contextmanager
def distributed(device: str | None = "auto", *, timeout_s: float = 3600.0) -> Iterator[DistContext]:
    """The data-parallel context of this process, from torchrun's environment variables.

    With ``WORLD_SIZE`` > 1 it joins the process group (unless this process already has one) and leaves it on
    exit; each rank uses CUDA device ``LOCAL_RANK`` when the device resolves to CUDA (NCCL), else the CPU (gloo).
    ``timeout_s`` bounds how long a rank waits for the others (rank 0 may evaluate and export meanwhile).
    """
    if not dist.is_initialized() and launched_world_size() <= 1:
        yield DistContext(pick_device(device))
        return
    if not dist.is_available():
        raise BespokeError("this torch build has no torch.distributed", "run a single process (no torchrun)")
    requested = pick_device(device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if requested.type == "cuda":
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = requested, "gloo"
    owns = not dist.is_initialized()
    if owns:
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except ValueError as exc:
            raise BespokeError(f"cannot join the process group ({exc})",
                               "launch with torchrun, which sets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE") \
                from None
    ctx = DistContext(dev, rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                      backend=dist.get_backend())
    try:
        yield ctx
    finally:
        if owns:
            dist.destroy_process_group()
