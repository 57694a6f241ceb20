"""Verified ONNX for model directories: ONNX Runtime must reproduce PyTorch's output.

The graph itself comes from the one exporter, :func:`bespoke.targets.export_onnx_bytes` (here with a dynamic batch
axis, as a deployed model is called with any batch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.targets.measure import cpu_model, eval_mode
from bespoke.targets.onnx_io import OPSET, export_onnx_bytes
from bespoke.utils.atomic import write_bytes

__all__ = ["OPSET", "export_onnx", "onnx_max_abs_diff"]


def onnx_max_abs_diff(model: nn.Module, onnx_model: bytes | str | Path, input_shape: tuple[int, ...], *,
                      samples: int = 2, seed: int = 0) -> float:
    """Largest |ORT − PyTorch| over ``samples`` random inputs (batch of 2 each); the caller's model is left as it
    was (mode and device)."""
    import onnxruntime as ort

    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    net = cpu_model(model)
    worst = 0.0
    with eval_mode(net), torch.inference_mode():
        for _ in range(samples):
            x = torch.randn(2, *input_shape[1:], generator=g)
            ref = net(x).numpy()
            out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...], *,
                tolerance: float = 1e-4) -> float:
    """Export ``model`` to ``path`` (atomically, dynamic batch) and return the verified max abs difference ORT vs
    PyTorch.

    Raises :class:`BespokeError` when the difference exceeds ``tolerance``; nothing is written then.
    """
    data = export_onnx_bytes(model, input_shape, dynamic_batch=True)
    diff = onnx_max_abs_diff(model, data, input_shape)
    if not diff <= tolerance:
        raise BespokeError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> {tolerance:g})",
                           "the exported graph is not faithful; report this model")
    write_bytes(path, data)
    return diff
