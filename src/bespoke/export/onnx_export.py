"""ONNX export with verification: ONNX Runtime must reproduce PyTorch's output."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.utils.atomic import write_bytes

OPSET = 17


def export_onnx_bytes(model: nn.Module, input_shape: tuple[int, ...], *, dynamic_batch: bool = True) -> bytes:
    """Serialise ``model`` (eval mode, CPU) to ONNX opset 17 via the TorchScript exporter (no onnxscript needed)."""
    model = model.eval().cpu()
    x = torch.zeros(*input_shape)
    buf = io.BytesIO()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                              output_names=["logits"], dynamic_axes=axes, do_constant_folding=True)
        except Exception as exc:
            raise BespokeError(f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200]}", "the model uses an op ONNX cannot express"
                               ) from None
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def onnx_max_abs_diff(model: nn.Module, onnx_model: bytes | str | Path, input_shape: tuple[int, ...], *,
                      samples: int = 2, seed: int = 0) -> float:
    """Largest |ORT − PyTorch| over ``samples`` random inputs (batch of 2 each)."""
    import onnxruntime as ort

    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    model = model.eval().cpu()
    worst = 0.0
    for _ in range(samples):
        x = torch.randn(2, *input_shape[1:], generator=g)
        with torch.inference_mode():
            ref = model(x).numpy()
        out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...], *,
                tolerance: float = 1e-4) -> float:
    """Export ``model`` to ``path`` (atomically) and return the verified max abs difference ORT vs PyTorch.

    Raises :class:`BespokeError` when the difference exceeds ``tolerance``; nothing is written then.
    """
    data = export_onnx_bytes(model, input_shape)
    diff = onnx_max_abs_diff(model, data, input_shape)
    if not diff <= tolerance:
        raise BespokeError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> {tolerance:g})",
                           "the exported graph is not faithful; report this model")
    write_bytes(path, data)
    return diff
