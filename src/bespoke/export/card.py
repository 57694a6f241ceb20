"""The model card: everything a deployer needs to know about one delivered model, as typed JSON."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bespoke.errors import BespokeError

#: ``provenance`` key an engine writes beside ``latency_pred_ms``: the value of its own reference model (teacher,
#: largest subnet) on the scale of that prediction, so a report can put the prediction on another scale.
PRED_REFERENCE = "latency_reference_ms"


class ModelCard(BaseModel):
    """``card.json`` of a model directory (the output contract every engine writes)."""

    model_config = ConfigDict(extra="allow")

    arch: str = Field(description="architecture name (zoo name, or the engine's family name)")
    arch_config: dict[str, Any] = Field(description="JSON recipe that rebuilds the architecture (see builders)")
    engine: str = Field(description="what produced the model: finetune | bespoke | tofa | baseline-*")
    num_classes: int
    classes: list[str] = Field(default_factory=list)
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_format: str = "float32 NCHW RGB in [0,1], normalised by (x-mean)/std"
    accuracy: float | None = Field(None, description="test top-1, 0-1")
    accuracy_split: str = "test"
    params: int | None = None
    macs: int | None = None
    onnx_max_abs_diff: float | None = None
    onnx_opset: int | None = None
    latency_ms: dict[str, float] = Field(default_factory=dict, description="median per measured target")
    latency: dict[str, dict[str, Any]] = Field(default_factory=dict, description="full measurement per target")
    cost_cpu_s: dict[str, float] = Field(default_factory=dict, description="CPU-seconds per stage")
    target: str | None = None
    budget: str | None = None
    budget_resolved: float | None = None
    budget_unit: str | None = None
    latency_pred_ms: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    bespoke_version: str = ""

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError:
            raise BespokeError(f"no model card at {path}", "point at a model directory written by bespoke") from None
        except (json.JSONDecodeError, ValidationError) as exc:
            raise BespokeError(f"{path} is not a valid model card ({str(exc).splitlines()[0]})",
                               "re-export the model") from None

    def to_markdown(self) -> str:
        """A human-readable model card."""
        lines = [f"# Model card: {self.arch} ({self.engine})", ""]
        if self.target:
            resolved = f" (= {self.budget_resolved:g} {self.budget_unit or ''})" if self.budget_resolved else ""
            lines += [f"Delivered for target **{self.target}** under budget `{self.budget}`{resolved}.", ""]
        lines += ["| field | value |", "|---|---|"]
        rows: list[tuple[str, Any]] = [
            ("test top-1", f"{self.accuracy:.4f}" if self.accuracy is not None else "not measured"),
            ("classes", self.num_classes), ("input", f"3x{self.resolution}x{self.resolution}, {self.input_format}"),
            ("mean / std", f"{self.mean} / {self.std}"),
            ("params", f"{self.params:,}" if self.params is not None else "-"),
            ("MACs", f"{self.macs:,}" if self.macs is not None else "-"),
            ("ONNX opset / max abs diff vs PyTorch",
             f"{self.onnx_opset} / {self.onnx_max_abs_diff:.2e}" if self.onnx_max_abs_diff is not None else "-"),
        ]
        for tgt, ms in self.latency_ms.items():
            noise = self.latency.get(tgt, {}).get("spread")
            rows.append((f"latency on {tgt}", f"{ms:.3f} ms" + (f" (spread {noise:.1%})" if noise is not None else "")))
        if self.latency_pred_ms is not None:
            rows.append(("predicted latency", f"{self.latency_pred_ms:.3f} ms"))
        for stage, s in self.cost_cpu_s.items():
            rows.append((f"cost: {stage}", f"{s:.0f} CPU-s"))
        lines += [f"| {k} | {v} |" for k, v in rows]
        if self.provenance:
            lines += ["", "## Provenance", "", "```json", json.dumps(self.provenance, indent=2), "```"]
        return "\n".join(lines) + "\n"
