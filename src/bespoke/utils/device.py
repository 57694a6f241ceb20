"""Device choice: CUDA when present (with mixed precision), CPU otherwise. No code path assumes either."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` may be ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``None``/``"auto"`` (CUDA if available)."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from bespoke.errors import BespokeError

        raise BespokeError(f"device {requested!r} asked for but CUDA is not available", "use --device cpu")
    return dev


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it (no loss scaling needed); a no-op on CPU (CPU autocast slows
    small convnets down) and on older GPUs (fp16 would need a gradient scaler: they train in fp32)."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: Blocks whose CPU backward pass hangs or crashes in channels-last layout (a torch bug: timm's RepVGG blocks;
#: ``double free or corruption`` / bus error on AMD EPYC, a hang on Intel Xeon).
CHANNELS_LAST_UNSAFE_CPU = frozenset({"RepVggBlock"})


def channels_last_safe(device: torch.device, *modules: torch.nn.Module | None) -> bool:
    """Whether ``modules`` may train in channels-last layout on ``device`` (not on CPU with a known-broken block)."""
    return device.type != "cpu" or not any(type(m).__name__ in CHANNELS_LAST_UNSAFE_CPU
                                           for module in modules if module is not None for m in module.modules())


@contextlib.contextmanager
def channels_last(*modules: torch.nn.Module | None) -> Iterator[None]:
    """Keep the 4-D weights of ``modules`` in channels-last (NHWC) layout inside the block, plain layout after.

    oneDNN's depthwise and 1x1 convolutions run faster on NHWC (64 px, batch 64, 2 CPU cores: training +20 % /
    +45 % / +32 % for EfficientNet-Lite2 / Lite0 / MobileNetV2; ``benchmarks/results/channels_last.md``);
    safetensors, ONNX export and collective communication want contiguous tensors, hence the restore.
    Parameters keep their identity (an optimiser built before stays valid).
    """
    present = [m for m in modules if m is not None]
    for m in present:
        m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for m in present:
            m.to(memory_format=torch.contiguous_format)
