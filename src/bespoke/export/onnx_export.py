"""Verified ONNX for model directories: ONNX Runtime must reproduce PyTorch's output.

The graph itself comes from the one exporter, :func:`bespoke.targets.export_onnx_bytes` (here with a dynamic batch
axis, as a deployed model is called with any batch).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.targets.measure import cpu_model, eval_mode
from bespoke.targets.onnx_io import OPSET, export_onnx_bytes
from bespoke.utils.atomic import write_bytes

__all__ = ["FP32_SLACK", "OPSET", "check_tolerance", "export_onnx", "float32_error", "onnx_max_abs_diff",
           "verified_onnx_bytes"]

FP32_SLACK = 8.0
"""An export above the absolute tolerance still passes when ORT is within this multiple of PyTorch's own float32
error (against float64): ORT fuses and reorders the same arithmetic, so on an ill-conditioned model (large
activations, e.g. a randomly initialised deep net) it lands as far from the exact answer as PyTorch does."""


def onnx_max_abs_diff(model: nn.Module, onnx_model: bytes | str | Path, input_shape: tuple[int, ...], *,
                      samples: int = 2, seed: int = 0) -> float:
    """Largest |ORT − PyTorch| over ``samples`` random inputs (batch of 2 each); the caller's model is left as it
    was (mode and device).

    NaN when either output holds a NaN or inf anywhere: such a model is never faithful, whatever the difference of
    its finite values (``max`` would silently skip a NaN difference).
    """
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
            if not (np.isfinite(ref).all() and np.isfinite(out).all()):
                return math.nan
            worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def float32_error(model: nn.Module, input_shape: tuple[int, ...], *, samples: int = 2, seed: int = 0) -> float:
    """Largest |PyTorch float32 − PyTorch float64| over the inputs :func:`onnx_max_abs_diff` uses: how far float32
    rounding alone moves this model's output. NaN when the model cannot run in float64."""
    g = torch.Generator().manual_seed(seed)
    try:
        net = cpu_model(model)
        wide = copy.deepcopy(net).double()
    except (RuntimeError, TypeError):
        return math.nan
    worst = 0.0
    with eval_mode(net), eval_mode(wide), torch.inference_mode():
        for _ in range(samples):
            x = torch.randn(2, *input_shape[1:], generator=g)
            try:
                exact = wide(x.double())
            except (RuntimeError, TypeError):
                return math.nan
            worst = max(worst, float((net(x).double() - exact).abs().max()))
    return worst


def check_tolerance(tolerance: float) -> None:
    """Refuse a verification tolerance that no export could honestly pass (0, negative) or that passes anything
    (inf, NaN)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not math.isfinite(tolerance) \
            or tolerance <= 0:
        raise BespokeError(f"tolerance must be a finite number > 0, got {tolerance!r}",
                           "use e.g. --tolerance 1e-4 (the default)")


def verified_onnx_bytes(model: nn.Module, input_shape: tuple[int, ...], *, tolerance: float = 1e-4
                        ) -> tuple[bytes, float]:
    """Serialise ``model`` to ONNX (dynamic batch) and verify it: ONNX Runtime must reproduce PyTorch within
    ``tolerance``, or within :data:`FP32_SLACK` times PyTorch's own float32 error where that error is larger (an
    ill-conditioned model, whose float32 output is itself that uncertain). Returns the ONNX bytes and the max abs
    difference; nothing is written anywhere."""
    check_tolerance(tolerance)
    data = export_onnx_bytes(model, input_shape, dynamic_batch=True)
    diff = onnx_max_abs_diff(model, data, input_shape)
    if math.isnan(diff):
        raise BespokeError("the model's output holds NaN or inf on random inputs",
                           "the weights are broken (diverged training?); train again with a lower learning rate")
    if not diff <= tolerance:
        rounding = float32_error(model, input_shape)
        if diff <= FP32_SLACK * rounding:  # False for NaN: no float64 run, no slack
            return data, diff
        own = f"; PyTorch's own float32 error is {rounding:.3g}" if math.isfinite(rounding) else ""
        raise BespokeError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> {tolerance:g}{own})",
                           "the exported graph is not faithful; report this model")
    return data, diff


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...], *,
                tolerance: float = 1e-4) -> float:
    """Export ``model`` to ``path`` (atomically, dynamic batch) and return the verified max abs difference ORT vs
    PyTorch.

    Raises :class:`BespokeError` when the difference exceeds ``tolerance`` (or an output is not finite); nothing
    is written then.
    """
    data, diff = verified_onnx_bytes(model, input_shape, tolerance=tolerance)
    write_bytes(path, data)
    return diff
