"""Post-training static quantization of an ONNX graph (onnxruntime.quantization) and running it on images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
from pydantic import BaseModel, ConfigDict
from torch.utils.data import Dataset

from bespoke.data import build_transform, make_loader
from bespoke.quantize.calibrate import ImageReader
from bespoke.targets.int8 import quantize_static_bytes
from bespoke.targets.onnx_io import INPUT_NAME

QuantFormatName = Literal["QDQ", "QOperator"]
TypeName = Literal["uint8", "int8"]
CalibrationName = Literal["MinMax", "Percentile", "Entropy"]
_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
#: Images per onnxruntime call when evaluating a graph (its batch axis is dynamic).
EVAL_BATCH = 64


class PTQSettings(BaseModel):
    """One way to quantize a graph statically: format, weight/activation types, calibration, nodes left in fp32."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: QuantFormatName = "QOperator"
    weight_type: TypeName = "uint8"
    activation_type: TypeName = "uint8"
    per_channel: bool = True
    reduce_range: bool = False
    calibration_method: CalibrationName = "MinMax"
    nodes_excluded: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        kinds = f"{self.activation_type[0].upper()}8{self.weight_type[0].upper()}8"
        rr = "+rr" if self.reduce_range else ""
        ex = f"-{len(self.nodes_excluded)}fp32" if self.nodes_excluded else ""
        return f"{self.format}/{kinds}{rr}/{self.calibration_method}{ex}"


def quantize_graph(fp32: bytes, settings: PTQSettings, calibration: np.ndarray) -> bytes:
    """The INT8 graph of the fp32 ONNX ``fp32`` (pre-processed by :func:`bespoke.targets.int8.prepare_graph`),
    calibrated on ``calibration`` images (float32 NCHW)."""
    return quantize_static_bytes(
        fp32, ImageReader(calibration),
        quant_format=QuantFormat.QDQ if settings.format == "QDQ" else QuantFormat.QOperator,
        per_channel=settings.per_channel, reduce_range=settings.reduce_range,
        activation_type=_TYPES[settings.activation_type], weight_type=_TYPES[settings.weight_type],
        nodes_to_exclude=list(settings.nodes_excluded) or None,
        calibrate_method=getattr(CalibrationMethod, settings.calibration_method),
    )


def _session(graph: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # a quantized graph's unused initializers are warned about one by one
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def predict(graph: bytes, images: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Logits of an ONNX ``graph`` (batch axis dynamic) on ``images``, ``EVAL_BATCH`` at a time."""
    session = _session(graph, threads)
    out = [session.run(None, {INPUT_NAME: images[i:i + EVAL_BATCH]})[0] for i in range(0, len(images), EVAL_BATCH)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def top1_on(graphs: Sequence[bytes], ds: Dataset, *, mean: Sequence[float], std: Sequence[float],
            threads: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """Top-1 of each ONNX graph on every image of ``ds`` (streamed, ``EVAL_BATCH`` at a time), and the labels."""
    sessions = [_session(g, threads) for g in graphs]
    preds: list[list[np.ndarray]] = [[] for _ in graphs]
    labels = []
    for x, y in make_loader(ds, build_transform("eval", mean, std), EVAL_BATCH, shuffle=False, seed=0):
        feed = {INPUT_NAME: x.numpy()}
        for session, out in zip(sessions, preds, strict=True):
            out.append(session.run(None, feed)[0].argmax(axis=1))
        labels.append(y.numpy())
    return [np.concatenate(p) for p in preds], np.concatenate(labels)


def top1(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=1)
