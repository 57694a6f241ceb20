"""The measurement protocol and its result.

Timings (runtimes ``onnxruntime`` and ``torch``; ``table`` rows were produced the same way on the device):

* input: float32 standard-normal numbers (seed 0) of shape ``[target.batch, 3, R, R]``;
* threads pinned: onnxruntime ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``, sequential
  execution; torch ``torch.set_num_threads(threads)``, restored afterwards;
* ``target.warmup`` untimed runs, then ``target.repeats`` runs timed one by one with ``time.perf_counter_ns``
  (garbage collection paused while timing);
* ``value`` = median; ``spread`` = (p90 - p10) / median is the measurement's own noise: two models whose
  medians differ by less than about ``spread * median`` are not told apart by this measurement.

The timing loop and statistics live in :mod:`bespoke.targets.device_profiler` (which must run alone on a
board); this module imports them so host and device measure identically.

Counts (``macs``, ``params``, ``memory``) are exact: median = mean = p10 = p90 = value, stdev = spread = 0,
n = 1. Models are measured on CPU in eval mode; a model living elsewhere is measured through a CPU copy, and
the caller's model keeps its device and train/eval flags.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bespoke.errors import BespokeError
from bespoke.targets.device_profiler import summarize, time_runs

__all__ = [
    "Measurement",
    "cpu_model",
    "eval_mode",
    "image_shape",
    "random_input",
    "summarize",
    "time_runs",
    "torch_threads",
]


class Measurement(BaseModel):
    """One measurement of one model on one target. ``value`` is what budgets compare against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float
    unit: str
    median: float
    mean: float
    p10: float
    p90: float
    stdev: float
    spread: float
    n: int
    runtime: str
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_samples(
        cls, samples_ms: Sequence[float], *, runtime: str, details: Mapping[str, Any] | None = None
    ) -> Measurement:
        """A latency measurement (unit ms) from raw per-run timings."""
        return cls.from_stats(summarize(samples_ms), runtime=runtime, details=details)

    @classmethod
    def from_stats(
        cls, stats: Mapping[str, float], *, runtime: str, details: Mapping[str, Any] | None = None
    ) -> Measurement:
        """A latency measurement from :func:`summarize`'s dict (median, mean, p10, p90, stdev, spread, n)."""
        return cls(
            value=float(stats["median"]),
            unit="ms",
            median=float(stats["median"]),
            mean=float(stats["mean"]),
            p10=float(stats["p10"]),
            p90=float(stats["p90"]),
            stdev=float(stats["stdev"]),
            spread=float(stats["spread"]),
            n=int(stats["n"]),
            runtime=runtime,
            details=dict(details or {}),
        )

    @classmethod
    def exact(
        cls, value: float, *, unit: str, runtime: str, details: Mapping[str, Any] | None = None
    ) -> Measurement:
        """A noiseless count (MACs, parameters, bytes)."""
        value = float(value)
        return cls(value=value, unit=unit, median=value, mean=value, p10=value, p90=value, stdev=0.0,
                   spread=0.0, n=1, runtime=runtime, details=dict(details or {}))


def image_shape(batch: int, resolution: int) -> tuple[int, int, int, int]:
    """The measured input shape ``[batch, 3, R, R]``."""
    if resolution < 1 or batch < 1:
        raise BespokeError(f"resolution and batch must be >= 1, got {resolution} and {batch}")
    return (int(batch), 3, int(resolution), int(resolution))


def random_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Standard-normal float32 input from a private generator (the global RNG is left alone)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside, the previous count restored afterwards (even on error)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside; every submodule's own ``training`` flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def cpu_model(model: nn.Module) -> nn.Module:
    """``model`` itself when all its tensors are on CPU, else a CPU copy (the caller's model is not moved)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == "cpu" for t in tensors):
        return model
    return copy.deepcopy(model).to("cpu")
