"""Peak activation memory: an estimate in bytes, for the ``memory`` runtime.

What it estimates: the largest number of bytes of activation tensors alive at the same time during one eager
forward pass on a float32 input ``[batch, 3, R, R]``, if every tensor is freed right after its last use (an
ideal in-order executor). Counted: the input, every intermediate and the outputs, by storage (views and
in-place results share their base's bytes). Not counted: parameters and buffers (see runtime ``params``),
operator workspaces (e.g. im2col buffers), allocator rounding and fragmentation, the runtime itself.

How: every torch function and tensor method the forward calls is traced with a ``TorchFunctionMode`` (one
call = one step; what happens inside a call, e.g. inside ``batch_norm``, is its workspace); for each storage
we record the step that produced it and the last step that read it. Live bytes at step ``i`` = bytes of
storages produced at or before ``i`` and last read at or after ``i`` (outputs live to the end, the input from
the start); the estimate is the maximum over ``i``. Skip connections count (a kept tensor stays live until its
last reader), which "max of input + output per layer" would miss. The traced pass holds references to every
intermediate so storages are not recycled mid-trace: it needs up to the sum of all activations in real
memory, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from bespoke.targets.measure import cpu_model, eval_mode, random_input


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int
    total_bytes: int  # sum over all activation storages (what no reuse at all would need)
    input_bytes: int
    largest_tensor_bytes: int
    n_ops: int


class _StorageTrace(TorchFunctionMode):
    """Records, per storage, its size, the step that produced it and the last step that touched it."""

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude = exclude
        self.step = 0
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self._keep: list[torch.Tensor] = []

    def touch(self, value: Any, step: int) -> None:
        for leaf in tree_flatten(value)[0]:
            if not isinstance(leaf, torch.Tensor):
                continue
            try:
                storage = leaf.untyped_storage()
                ptr, nbytes = storage.data_ptr(), storage.nbytes()
            except (RuntimeError, NotImplementedError):  # tensors without a plain storage
                continue
            if nbytes == 0 or ptr in self.exclude:
                continue
            if ptr not in self.first:
                self.first[ptr] = step
                self._keep.append(leaf)
            self.last[ptr] = max(self.last.get(ptr, step), step)
            self.size[ptr] = max(self.size.get(ptr, 0), nbytes)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.step += 1
        self.touch((args, kwargs), self.step)
        self.touch(out, self.step)
        return out

    def release(self) -> None:
        self._keep.clear()


def estimate_peak_memory(model: nn.Module, input_shape: tuple[int, ...]) -> MemoryEstimate:
    """Trace one forward pass; return the peak-live-activation estimate (see the module docstring)."""
    net = cpu_model(model)
    exclude = {t.untyped_storage().data_ptr() for t in (*net.parameters(), *net.buffers())}
    x = random_input(input_shape)
    trace = _StorageTrace(exclude)
    with eval_mode(net), torch.inference_mode():
        trace.touch(x, 0)
        with trace:
            out = net(x)
        end = trace.step + 1
        trace.touch(out, end)  # outputs stay live to the end
    delta = [0] * (end + 2)
    for ptr, size in trace.size.items():
        delta[trace.first[ptr]] += size
        delta[trace.last[ptr] + 1] -= size
    live = peak = 0
    for change in delta:
        live += change
        peak = max(peak, live)
    sizes = list(trace.size.values())
    estimate = MemoryEstimate(
        peak_bytes=peak,
        total_bytes=sum(sizes),
        input_bytes=x.numel() * x.element_size(),
        largest_tensor_bytes=max(sizes, default=0),
        n_ops=trace.step,
    )
    trace.release()
    return estimate
