"""Choosing how to quantize: every candidate setting scored on held-out images, then timed against the fp32 graph.

Policy (:class:`PTQSearch`): every candidate is timed against the fp32 graph, and only those at least
``min_speedup`` times faster compete (an INT8 graph slower than its fp32 twin is never delivered: QDQ graphs with
uint8 weights can run several times slower on CPUs without VNNI). Among them, keep the fastest whose held-out
top-1 is within ``tolerance`` of the fp32 graph's (else the most accurate); if that one still loses more than
``exclude_above``, leave the nodes whose quantization adds the most noise in fp32 (ranked by
:func:`rank_sensitive_nodes`), 1, 2, 4, ... of them, and keep the first that is within ``exclude_above`` and still
fast enough (else the most accurate fast one of all tried).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import qdq_loss_debug
from pydantic import BaseModel, ConfigDict, Field

from bespoke.errors import BespokeError
from bespoke.quantize.calibrate import ImageReader
from bespoke.quantize.ptq import (
    CalibrationName,
    PTQSettings,
    QuantFormatName,
    TypeName,
    predict,
    quantize_graph,
    top1,
)
from bespoke.targets import Target, measure_paired
from bespoke.targets.int8 import prepare_graph


class PTQSearch(BaseModel):
    """The candidate settings tried and the accuracy rules that pick one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    formats: tuple[QuantFormatName, ...] = Field(("QOperator", "QDQ"), min_length=1)
    weight_types: tuple[TypeName, ...] = Field(("uint8", "int8"), min_length=1)
    methods: tuple[CalibrationName, ...] = Field(("MinMax", "Percentile", "Entropy"), min_length=1)
    reduce_range: tuple[bool, ...] = Field((False, True), min_length=1)
    tolerance: float = Field(0.005, ge=0, le=1, description="largest held-out top-1 loss vs fp32 for a candidate "
                             "to compete on speed")
    exclude_above: float = Field(0.003, ge=0, le=1, description="a pick losing more than this gets sensitive "
                                 "nodes left in fp32")
    max_excluded: int = Field(8, ge=0, le=1000, description="most nodes left in fp32")
    min_speedup: float = Field(1.1, ge=0, le=100, description="a candidate must be at least this many times "
                               "faster than the fp32 graph (paired timing) to be delivered; 0: any speed")
    sensitivity_images: int = Field(16, ge=1, le=10_000)

    def grid(self) -> list[PTQSettings]:
        """Every combination (reduce_range only with int8 weights, where it avoids saturation)."""
        return [PTQSettings(format=f, weight_type=w, calibration_method=m, reduce_range=r)
                for f, w, m, r in product(self.formats, self.weight_types, self.methods, self.reduce_range)
                if not (r and w == "uint8")]


@dataclass
class Candidate:
    settings: PTQSettings
    graph: bytes = field(repr=False)
    accuracy: float
    speedup: float | None = None

    def row(self) -> dict[str, Any]:
        return {"settings": self.settings.label, "val_accuracy": round(self.accuracy, 5),
                "speedup": None if self.speedup is None else round(self.speedup, 4)}


@dataclass
class Choice:
    """The pick, every candidate's row, and how sensitive nodes were chosen (``None``: none left in fp32)."""

    best: Candidate
    fp32_accuracy: float
    rows: list[dict[str, Any]]
    sensitivity: str | None = None


def rank_sensitive_nodes(fp32: bytes, settings: PTQSettings, images: np.ndarray) -> list[str]:
    """fp32 graph nodes ordered from the most sensitive: the lowest signal-to-quantization-noise ratio of their
    output in the QDQ graph of ``settings`` on ``images`` (onnxruntime's qdq_loss_debug)."""
    qdq = quantize_graph(fp32, settings.model_copy(update={"format": "QDQ", "nodes_excluded": ()}), images)
    prepared = prepare_graph(fp32)
    producer = {out: node.name for node in onnx.load_from_string(prepared).graph.node for out in node.output}
    with tempfile.TemporaryDirectory(prefix="bespoke-sens-") as tmp:
        paths = {}
        for key, data in (("fp32", prepared), ("qdq", qdq)):
            src, aug = Path(tmp) / f"{key}.onnx", Path(tmp) / f"{key}-aug.onnx"
            src.write_bytes(data)
            qdq_loss_debug.modify_model_output_intermediate_tensors(str(src), str(aug))
            paths[key] = str(aug)
        q_acts = qdq_loss_debug.collect_activations(paths["qdq"], ImageReader(images))
        f_acts = qdq_loss_debug.collect_activations(paths["fp32"], ImageReader(images))
    errors = qdq_loss_debug.compute_activation_error(qdq_loss_debug.create_activation_matching(q_acts, f_acts))
    scored = sorted((err["qdq_err"], name) for name, err in errors.items()
                    if name in producer and np.isfinite(err.get("qdq_err", np.nan)))
    ranked: list[str] = []
    for _, tensor in scored:
        if producer[tensor] not in ranked:
            ranked.append(producer[tensor])
    return ranked


def choose_settings(fp32: bytes, calibration: np.ndarray, images: np.ndarray, labels: np.ndarray, target: Target,
                    search: PTQSearch, *, log: Callable[[str], None] = lambda _line: None,
                    step: Callable[[], None] = lambda: None) -> Choice:
    """Quantize ``fp32`` in every setting of ``search``, score each on held-out ``images``, time each against
    ``fp32`` on ``target`` (paired), and pick by the module's policy. ``step`` is called per candidate."""
    fp32_acc = float((top1(predict(fp32, images)) == labels).mean())
    candidates = []
    for settings in search.grid():
        candidates.append(_candidate(fp32, settings, calibration, images, labels, target))
        log(f"[quantize] {settings.label}: held-out top-1 {candidates[-1].accuracy:.4f} (fp32 {fp32_acc:.4f}), "
            f"{candidates[-1].speedup:.2f}x fp32")
        step()
    fast = [c for c in candidates if (c.speedup or 0.0) >= search.min_speedup]
    if not fast:
        quickest = max(candidates, key=lambda c: c.speedup or 0.0)
        raise BespokeError(f"no INT8 setting is at least {search.min_speedup:g}x faster than fp32 on target "
                           f"{target.name} (best: {quickest.settings.label}, {quickest.speedup:.2f}x)",
                           "deliver the fp32 model for this target, or try another runtime setting")
    within = [c for c in fast if fp32_acc - c.accuracy <= search.tolerance]
    best = (max(within, key=lambda c: c.speedup or 0.0) if within
            else max(fast, key=lambda c: c.accuracy))
    sensitivity = None
    if fp32_acc - best.accuracy > search.exclude_above and search.max_excluded:
        ranked = rank_sensitive_nodes(fp32, best.settings, images[: search.sensitivity_images])
        sensitivity = (f"lowest SQNR of the node's output in the QDQ graph on {search.sensitivity_images} held-out "
                       "images (onnxruntime qdq_loss_debug)")
        tried = [best]
        k = 1
        while k <= min(search.max_excluded, len(ranked)):
            settings = best.settings.model_copy(update={"nodes_excluded": tuple(ranked[:k])})
            tried.append(_candidate(fp32, settings, calibration, images, labels, target))
            candidates.append(tried[-1])
            log(f"[quantize] {settings.label}: held-out top-1 {tried[-1].accuracy:.4f}, "
                f"{tried[-1].speedup:.2f}x fp32")
            if fp32_acc - tried[-1].accuracy <= search.exclude_above:
                break
            k *= 2
        usable = [c for c in tried if (c.speedup or 0.0) >= search.min_speedup]
        ok = [c for c in usable if fp32_acc - c.accuracy <= search.exclude_above]
        best = ok[-1] if ok else max(usable, key=lambda c: c.accuracy)
    return Choice(best, fp32_acc, [c.row() for c in candidates], sensitivity)


def _candidate(fp32: bytes, settings: PTQSettings, calibration: np.ndarray, images: np.ndarray,
               labels: np.ndarray, target: Target) -> Candidate:
    """``settings`` applied: the graph, its held-out top-1 and its paired speed-up over ``fp32``."""
    graph = quantize_graph(fp32, settings, calibration)
    candidate = Candidate(settings, graph, float((top1(predict(graph, images)) == labels).mean()))
    _time(candidate, fp32, target)
    return candidate


def _time(candidate: Candidate, fp32: bytes, target: Target) -> None:
    m = measure_paired(candidate.graph, fp32, target, reference_value=None)
    candidate.speedup = 1.0 / float(m.details["ratio"])
