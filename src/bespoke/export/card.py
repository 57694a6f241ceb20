"""The model card: everything a deployer needs to know about one delivered model, as typed JSON."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bespoke.errors import BespokeError

#: ``provenance`` key an engine writes beside ``latency_pred_ms``: the value of its own reference model (teacher,
#: largest subnet) on the scale of that prediction, so a report can put the prediction on another scale.
PRED_REFERENCE = "latency_reference_ms"

#: Layout version of ``card.json`` this code writes, and the oldest one it still reads. A card without the field
#: was written before it existed: format 1.
CARD_FORMAT, OLDEST_CARD_FORMAT, UNVERSIONED_CARD_FORMAT = 1, 1, 1

#: Largest input size and class count a card may declare: rebuilding or exporting a model allocates in proportion
#: (a hand-edited ``resolution: 100000`` asks for 120 GB, ``num_classes: 1e9`` for terabytes).
MAX_RESOLUTION, MAX_CLASSES = 4096, 100_000
_SIZE_LIMITS = {"resolution": MAX_RESOLUTION, "num_classes": MAX_CLASSES}
_REWRITE = "restore the card, or re-run the command that wrote the model"


class ModelCard(BaseModel):
    """``card.json`` of a model directory (the output contract every engine writes)."""

    model_config = ConfigDict(extra="allow")

    arch: str = Field(description="architecture name (zoo name, or the engine's family name)")
    arch_config: dict[str, Any] = Field(description="JSON recipe that rebuilds the architecture (see builders)")
    card_format: int = Field(CARD_FORMAT, ge=OLDEST_CARD_FORMAT, le=CARD_FORMAT,
                             description="layout version of this file (see CARD_FORMAT)")
    engine: str = Field(description="what produced the model: finetune | bespoke | tofa | baseline-*")
    num_classes: int = Field(ge=1, le=MAX_CLASSES)
    classes: list[str] = Field(default_factory=list)
    resolution: int = Field(ge=1, le=MAX_RESOLUTION)
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

    @model_validator(mode="before")
    @classmethod
    def _known_format(cls, data: Any) -> Any:
        """A card of another layout version is refused before any field is read: its fields may mean other things."""
        version = data.get("card_format") if isinstance(data, dict) else None
        if isinstance(version, int | float) and not isinstance(version, bool):
            if version > CARD_FORMAT:
                raise BespokeError(f"card format {version} is newer than this bespoke ({CARD_FORMAT})",
                                   "upgrade bespoke to read this model")
            if version < OLDEST_CARD_FORMAT:
                raise BespokeError(f"card format {version} is older than any this bespoke reads "
                                   f"({OLDEST_CARD_FORMAT}..{CARD_FORMAT})",
                                   "read it with the bespoke version that wrote it")
        return data

    @field_validator("arch_config")
    @classmethod
    def _bounded_recipe(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The recipe's own sizes (a zoo recipe repeats num_classes and resolution) obey the card's limits."""
        stack: list[Any] = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, sub in item.items():
                    limit = _SIZE_LIMITS.get(key)
                    if limit is not None and isinstance(sub, int | float) and not 1 <= sub <= limit:
                        raise ValueError(f"{key} {sub!r} is outside 1..{limit}")
                    stack.append(sub)
            elif isinstance(item, list):
                stack.extend(item)
        return value

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data.setdefault("card_format", UNVERSIONED_CARD_FORMAT)
            return cls.model_validate(data)
        except FileNotFoundError:
            raise BespokeError(f"no model card at {path}", "point at a model directory written by bespoke") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BespokeError(f"{path} is not a valid model card ({str(exc).splitlines()[0]})", _REWRITE) from None
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "card"
            message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
            raise BespokeError(f"{path} is not a valid model card ({where}: {message})", _REWRITE) from None
        except BespokeError as exc:
            raise BespokeError(f"{path}: {exc.message}", exc.hint) from None

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
