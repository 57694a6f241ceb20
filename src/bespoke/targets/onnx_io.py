"""ONNX for measuring: export a module to bytes/file, and the weight-independent key of a part.

``part_key`` is how engines, latency tables and the device profiler agree on "the same part". It is the hash
of the exported ONNX graph with everything that does not change latency removed:

* weight values: initializer data is dropped (names, dtypes and shapes stay); large ``Constant`` tensors
  (more than 64 elements) lose their data too;
* names: node names, doc strings, producer, graph name and value names are replaced by canonical ones
  (values numbered by first appearance; every *use* of an initializer gets its own name, and ``Identity``
  nodes on initializers are looked through, so the exporter de-duplicating equal weight tensors - e.g. two
  zero biases - does not change the key);
* ``ir_version``, ``value_info`` and metadata.

What stays: operators, their attributes and order, opsets, input/output types and shapes, weight shapes and
dtypes. The key reads ``<input shape>_<16 hex digits of sha1>``, e.g. ``1x16x32x32_3f2a9c0d1e2b4a5f``; the
shape comes first so a table sorted by key groups parts by input size. Same module structure + same input
shape => same key, whatever the weights or where the module sat in a bigger network.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from onnx import helper
from torch import nn

from bespoke.errors import BespokeError
from bespoke.targets.measure import cpu_model, eval_mode, random_input
from bespoke.utils.atomic import write_bytes

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_CONSTANT_KEEP_ELEMENTS = 64
_DATA_FIELDS = (
    "raw_data",
    "float_data",
    "int32_data",
    "string_data",
    "int64_data",
    "double_data",
    "uint64_data",
    "external_data",
)


def export_onnx_bytes(model: nn.Module, input_shape: Sequence[int], *, dynamic_batch: bool = False) -> bytes:
    """The one ONNX exporter: ``model`` in eval mode on CPU, legacy (TorchScript) exporter at opset 17.

    Input is named ``input`` and the (first) output ``logits``; ``dynamic_batch`` makes their first axis symbolic
    (model directories), else every shape is fixed at ``input_shape`` (parts and timing). The caller's model keeps
    its mode and device. The result passes ``onnx.checker``.
    """
    shape = tuple(int(d) for d in input_shape)
    net = cpu_model(model)
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with eval_mode(net), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notes
        try:
            torch.onnx.export(
                net,
                (random_input(shape),),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BespokeError(
                f"cannot export {type(model).__name__} to ONNX at input shape {list(shape)}: {first[:200]}",
                "the model must be traceable by torch.onnx.export(dynamo=False, opset_version=17)",
            ) from None
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def write_onnx(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str]) -> Path:
    """Export like :func:`export_onnx_bytes` (fixed shape) and write the file atomically; return its path."""
    path = Path(path)
    write_bytes(path, export_onnx_bytes(model, input_shape))
    return path


def load_onnx(source: bytes | str | os.PathLike[str]) -> onnx.ModelProto:
    """An ONNX model from bytes or a file; ``BespokeError`` when it is missing or not ONNX."""
    try:
        if isinstance(source, bytes):
            return onnx.load_from_string(source)
        return onnx.load(os.fspath(source), load_external_data=False)
    except FileNotFoundError:
        raise BespokeError(f"ONNX file not found: {source}") from None
    except Exception as exc:
        where = "bytes" if isinstance(source, bytes) else str(source)
        raise BespokeError(f"not a readable ONNX model: {where}: {type(exc).__name__}: {exc}") from None


def input_shapes(model: onnx.ModelProto) -> list[list[int | str]]:
    """The graph inputs' shapes (initializers excluded); symbolic dims as their names (``"?"`` if unnamed)."""
    initializers = {init.name for init in model.graph.initializer}
    shapes = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims: list[int | str] = []
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or "?")
        shapes.append(dims)
    return shapes


def canonical_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without weight values, names or metadata (see the module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for field in ("producer_name", "producer_version", "domain", "doc_string"):
        setattr(out, field, "")
    out.model_version = 0
    out.ir_version = 0
    del out.metadata_props[:]
    graph = out.graph
    graph.name = ""
    graph.doc_string = ""
    del graph.value_info[:]

    initializers = {init.name: init for init in graph.initializer}
    names: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name:
            return name
        if name not in names:
            names[name] = f"v{len(names)}"
        return names[name]

    inputs = []
    for value in graph.input:  # old IR versions list initializers as inputs too: keep only real inputs
        if value.name not in initializers:
            kept = onnx.ValueInfoProto()
            kept.CopyFrom(value)
            kept.name = rename(kept.name)
            kept.doc_string = ""
            inputs.append(kept)
    del graph.input[:]
    graph.input.extend(inputs)
    # the exporter de-duplicates equal weights and may route one through an Identity: look through those
    aliases: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        source = node.input[0] if node.op_type == "Identity" and node.input else ""
        source = aliases.get(source, source)
        if source in initializers:
            aliases[node.output[0]] = source
            continue
        kept_node = onnx.NodeProto()
        kept_node.CopyFrom(node)
        nodes.append(kept_node)
    del graph.node[:]
    graph.node.extend(nodes)
    weights: list[onnx.TensorProto] = []
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        for slot, name in enumerate(node.input):
            name = aliases.get(name, name)
            if name in initializers:  # one canonical weight per use: sharing must not change the key
                weight = _stripped(initializers[name])
                weight.name = f"w{len(weights)}"
                weights.append(weight)
                node.input[slot] = weight.name
            else:
                node.input[slot] = rename(name)
        for slot, name in enumerate(node.output):
            node.output[slot] = rename(name)
        for attr in node.attribute:
            attr.doc_string = ""
            if attr.type == onnx.AttributeProto.TENSOR and _numel(attr.t) > _CONSTANT_KEEP_ELEMENTS:
                attr.t.CopyFrom(_stripped(attr.t))
    for value in graph.output:
        value.name = rename(value.name)
        value.doc_string = ""
    del graph.initializer[:]
    graph.initializer.extend(weights)
    del graph.sparse_initializer[:]
    return out


def part_key(
    part: nn.Module | bytes | str | os.PathLike[str],
    input_shape: Sequence[int] | None = None,
) -> str:
    """The weight-independent key of a part: a module (with ``input_shape``), ONNX bytes, or an ONNX file."""
    if isinstance(part, nn.Module):
        if input_shape is None:
            raise BespokeError("part_key of a module needs its input_shape, e.g. (1, 16, 32, 32)")
        part = export_onnx_bytes(part, input_shape)
    model = load_onnx(part)
    canonical = canonical_onnx(model)
    digest = hashlib.sha1(canonical.SerializeToString(deterministic=True)).hexdigest()[:16]
    shape = "+".join("x".join(_dim_text(d) for d in dims) for dims in input_shapes(model)) or "none"
    return f"{shape}_{digest}"


def overhead_onnx_bytes() -> bytes:
    """A trivial graph (Identity on a [1, 1] float): its latency is the fixed cost of one session run."""
    node = helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])
    graph = helper.make_graph(
        [node],
        "overhead",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, [1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    return model.SerializeToString()


def _stripped(tensor: onnx.TensorProto) -> onnx.TensorProto:
    out = onnx.TensorProto()
    out.CopyFrom(tensor)
    for field in _DATA_FIELDS:
        out.ClearField(field)
    out.ClearField("data_location")
    out.ClearField("doc_string")
    return out


def _numel(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count


def _dim_text(dim: int | str) -> str:
    return str(dim) if isinstance(dim, int) else "N"  # any symbolic dimension
