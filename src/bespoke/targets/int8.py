"""Graphs as an int8 target runs them: the static INT8 quantization cost tables and searches are timed on.

An int8 target's model is a statically quantized ONNX graph, so everything an engine times for it (each part of a
cost table, the reference model, every pick measured after export) is quantized first, the way a delivered model
is. Latency depends on the graph's operators and shapes, not on the scales calibration finds, so timing graphs are
calibrated on a few seeded random inputs and use one fixed setting (:data:`TIMING_SETTING`: QOperator, uint8
activations and weights, per-channel; the fastest static form measured on AVX2 CPUs without VNNI, see
``benchmarks/results/int8_ptq.md``). The delivered model's own setting is chosen by :mod:`bespoke.quantize` on real
images; the measurement after export of that graph is the verdict either way.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from bespoke.errors import BespokeError

#: The static quantization timing graphs get (fixed, so one cost table holds comparable parts).
TIMING_SETTING: dict[str, Any] = {"quant_format": QuantFormat.QOperator, "activation_type": QuantType.QUInt8,
                                  "weight_type": QuantType.QUInt8, "per_channel": True, "reduce_range": False,
                                  "calibrate_method": CalibrationMethod.MinMax}
#: Version of how int8 parts are timed (part of an int8 cost table's settings: a change re-measures old tables).
#: 2: parts without their float boundary (:func:`inner_graph`).
TIMING_VERSION = 2
#: Random inputs a timing graph is calibrated on.
TIMING_CALIBRATION = 4
#: Operators whose presence marks a graph as quantized already.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                           "MatMulInteger", "DynamicQuantizeLinear"})


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """onnxruntime.quantization logs advice per node on the root logger, prints calibration steps, and its
    calibration sessions warn about every initializer the quantized graph no longer uses; a command prints its own
    lines."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings
        logging.disable(previous)


def prepare_graph(fp32: bytes) -> bytes:
    """onnxruntime's pre-processing for quantization (shape inference, constant folding, fusions): the graph whose
    node names a quantization's excluded nodes refer to."""
    with tempfile.TemporaryDirectory(prefix="bespoke-ptq-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        source.write_bytes(fp32)
        with quiet_quantization():
            quant_pre_process(str(source), str(target))
        return target.read_bytes()


def quantize_static_bytes(fp32: bytes, reader: CalibrationDataReader, **settings: Any) -> bytes:
    """``quantize_static`` over bytes: the pre-processed ``fp32`` graph quantized with ``settings``
    (onnxruntime's keyword arguments), calibrated on what ``reader`` yields."""
    with tempfile.TemporaryDirectory(prefix="bespoke-ptq-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(prepare_graph(fp32))
        with quiet_quantization():
            quantize_static(source, target, reader, calibration_cache_path=None, **settings)
        return target.read_bytes()


def is_quantized(graph: bytes | str | Path) -> bool:
    """Whether ``graph`` already holds quantized operators (a delivered INT8 model)."""
    model = onnx.load_from_string(graph) if isinstance(graph, bytes) else onnx.load(str(graph),
                                                                                     load_external_data=False)
    return any(node.op_type in QUANTIZED_OPS for node in model.graph.node)


class _RandomInputs(CalibrationDataReader):
    """Seeded standard-normal inputs of one graph's input shapes (symbolic axes as 1)."""

    def __init__(self, graph: bytes, count: int, seed: int) -> None:
        model = onnx.load_from_string(graph)
        initializers = {i.name for i in model.graph.initializer}
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(count):
            feed = {}
            for value in model.graph.input:
                if value.name in initializers:
                    continue
                dims = [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
                feed[value.name] = rng.standard_normal(dims).astype(np.float32)
            self.items.append(feed)
        self._it = iter(self.items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.items)


def timing_graph(graph: bytes, *, seed: int = 0) -> bytes:
    """``graph`` as an int8 target runs it: statically quantized with :data:`TIMING_SETTING` (a graph already
    quantized is returned as it is). The last few results are kept: a reference model timed with every chunk of
    parts, or with every pick, is quantized once."""
    return _timing_graph(graph, seed)


@functools.lru_cache(maxsize=4)
def _timing_graph(graph: bytes, seed: int) -> bytes:
    if is_quantized(graph):
        return graph
    try:
        return quantize_static_bytes(graph, _RandomInputs(graph, TIMING_CALIBRATION, seed), **TIMING_SETTING)
    except Exception as exc:  # onnxruntime.quantization raises bare exceptions of many kinds
        raise BespokeError(f"cannot quantize a graph for int8 timing: {str(exc).splitlines()[0] if str(exc) else exc}",
                           "measure this model on an fp32 target") from None


def as_deployed(graph: bytes | str | Path, precision: str) -> bytes | str | Path:
    """``graph`` (bytes or a file) the way a target of ``precision`` runs it: fp32 unchanged; int8 statically
    quantized for timing (:func:`timing_graph`) unless it is quantized already."""
    if precision != "int8":
        return graph
    data = graph if isinstance(graph, bytes) else Path(graph).read_bytes()
    return timing_graph(data)


def _zero_point_type(graph: onnx.GraphProto, node: onnx.NodeProto) -> int:
    """The integer type a QuantizeLinear produces / a DequantizeLinear consumes (its zero point's; uint8 without)."""
    if len(node.input) > 2 and node.input[2]:
        for init in graph.initializer:
            if init.name == node.input[2]:
                return init.data_type
    return onnx.TensorProto.UINT8


def inner_graph(graph: bytes) -> bytes:
    """A part's quantized timing graph as it runs *inside* a whole quantized model: the QuantizeLinear on its input
    and the DequantizeLinear on its output removed (it takes and gives integer tensors), so parts summed do not
    count a float boundary per part that the whole model does not have. A boundary that is not a lone Q / DQ (an
    input that feeds float ops too, an output not dequantized) is left as it is."""
    model = onnx.load_from_string(graph)
    g = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producers: dict[str, onnx.NodeProto] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producers[name] = node
    changed = False
    for index, value in enumerate(list(g.input)):
        users = consumers.get(value.name, [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or users[0].input[0] != value.name:
            continue
        q = users[0]
        dims = [d.dim_value if d.dim_value > 0 else d.dim_param for d in value.type.tensor_type.shape.dim]
        g.input.remove(value)
        g.input.insert(index, onnx.helper.make_tensor_value_info(q.output[0], _zero_point_type(g, q), dims))
        g.node.remove(q)
        changed = True
    for index, value in enumerate(list(g.output)):
        dq = producers.get(value.name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers.get(value.name, [])) > 0:
            continue
        dims = [d.dim_value if d.dim_value > 0 else d.dim_param for d in value.type.tensor_type.shape.dim]
        g.output.remove(value)
        g.output.insert(index, onnx.helper.make_tensor_value_info(dq.input[0], _zero_point_type(g, dq), dims))
        g.node.remove(dq)
        changed = True
    return model.SerializeToString() if changed else graph


def part_timing_graph(graph: bytes, precision: str) -> bytes:
    """A cost-table part the way it runs inside a whole model on a target of ``precision`` (int8: quantized for
    timing, its float boundary removed: :func:`inner_graph`)."""
    return inner_graph(timing_graph(graph)) if precision == "int8" else graph
