"""The model card: everything a deployer needs to know about one delivered model, as typed JSON."""

from __future__ import annotations

import datetime as _dt
import json
import statistics
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, field_validator, model_validator

from bespoke.errors import BespokeError

#: ``provenance`` key of format-1 cards beside ``latency_pred_ms``: the engine's reference value on the scale of
#: that prediction (format 2: ``delivery.reference``).
PRED_REFERENCE = "latency_reference_ms"

#: Layout version of ``card.json`` this code writes, and the oldest one it still reads. A card without the field
#: was written before it existed: format 1. Format 2 moved the budget fields into the typed ``delivery`` section.
CARD_FORMAT, OLDEST_CARD_FORMAT, UNVERSIONED_CARD_FORMAT = 2, 1, 1
#: ``cost_cpu_s`` keys with this prefix are preparation shared by all the targets an engine served.
SHARED_COST_PREFIX = "shared:"

#: Largest input size and class count a card may declare: rebuilding or exporting a model allocates in proportion
#: (a hand-edited ``resolution: 100000`` asks for 120 GB, ``num_classes: 1e9`` for terabytes).
MAX_RESOLUTION, MAX_CLASSES = 4096, 100_000
_SIZE_LIMITS = {"resolution": MAX_RESOLUTION, "num_classes": MAX_CLASSES}
_REWRITE = "restore the card, or re-run the command that wrote the model"


class Delivery(BaseModel):
    """How a model was delivered for one target: written once, by :func:`bespoke.delivery.write_delivery`.

    Values are in the target's unit, on the scale of the engine's own reference model (the teacher, the largest
    subnet) measured ``reference``: budgets, predictions and readings are all judged there, so the machine's speed
    drifting between them does not decide a verdict. ``measured`` and ``meets_budget`` are computed, never written.
    """

    model_config = ConfigDict(extra="forbid")

    target: str
    budget: str | None = Field(None, description="the budget as written in the targets file (0.5x, 2ms, 20M)")
    budget_resolved: float | None = Field(None, description="the budget in the target's unit (relative budgets: "
                                          "x the engine's reference)")
    unit: str
    predicted: float | None = Field(None, description="the engine's cost model's prediction")
    readings: list[float] = Field(default_factory=list, description="measurements after export, each the median "
                                  "of its own runs")
    attempts: int = Field(1, ge=0, description="architectures exported and measured to meet the budget")
    reference: float | None = Field(None, description="the engine's reference model's value on this scale")

    @model_validator(mode="before")
    @classmethod
    def _drop_computed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("measured", "meets_budget")}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def measured(self) -> float | None:
        """Median of the readings."""
        return float(statistics.median(self.readings)) if self.readings else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def meets_budget(self) -> bool | None:
        """``measured <= budget_resolved`` (``None`` without a budget or a reading)."""
        if self.budget_resolved is None or self.measured is None:
            return None
        return self.measured <= self.budget_resolved


#: Longest list of graph nodes a card may name as left in fp32 (a model has a few hundred nodes at most).
MAX_EXCLUDED_NODES = 10_000
Share = Annotated[float, Field(ge=0.0, le=1.0)]


class Quantization(BaseModel):
    """How an INT8 model's ONNX graph was quantized and verified (post-training static quantization).

    Its verification is agreement, not elementwise tolerance: ``agreement`` is the share of test images where the
    INT8 graph's top-1 equals the fp32 twin's, and a directory is written only when it reaches
    ``agreement_threshold``.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["ptq-static", "qat-static"] = Field(
        "ptq-static", description="ptq-static: the trained model quantized; qat-static: quantized after a "
                                  "fine-tune under fake quantization (bespoke.quantize.qat)")
    format: Literal["QDQ", "QOperator"]
    weight_type: Literal["uint8", "int8"]
    activation_type: Literal["uint8", "int8"]
    per_channel: bool
    reduce_range: bool
    calibration_method: Literal["MinMax", "Percentile", "Entropy"]
    calibration_images: int = Field(ge=1, le=1_000_000)
    calibration_set: str = Field(max_length=500, description="data set, split and seed the images came from")
    nodes_excluded: list[str] = Field(default_factory=list, max_length=MAX_EXCLUDED_NODES,
                                      description="graph nodes left in fp32")
    sensitivity: str | None = Field(None, max_length=200, description="how the excluded nodes were chosen")
    fp32_accuracy: Share | None = None
    int8_accuracy: Share | None = None
    agreement: Share
    agreement_threshold: Share
    agreement_split: str = "test"
    selection_split: str = Field("val", description="split the settings were chosen on")
    fp32_twin: str | None = Field(None, max_length=4096, description="the fp32 model directory quantized")


class ModelCard(BaseModel):
    """``card.json`` of a model directory (the output contract every engine writes). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

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
    method: str | None = Field(None, description="the label a report lists the model under (default engine:arch)")
    delivery: Delivery | None = Field(None, description="the target it was delivered for and how it measured")
    precision: Literal["fp32", "int8"] = Field("fp32", description="numeric precision of model.onnx (the "
                                               "safetensors weights are always the fp32 twin's)")
    quantization: Quantization | None = Field(None, description="how the INT8 graph was made (int8 only)")
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
            if version == 1:
                data = _from_format_1(data)
        return data

    @model_validator(mode="after")
    def _quantized_when_int8(self) -> ModelCard:
        if (self.precision == "int8") != (self.quantization is not None):
            raise ValueError("an int8 card needs a quantization section, and only an int8 card has one")
        return self

    @property
    def target(self) -> str | None:
        return self.delivery.target if self.delivery else None

    @property
    def budget(self) -> str | None:
        return self.delivery.budget if self.delivery else None

    @property
    def budget_resolved(self) -> float | None:
        return self.delivery.budget_resolved if self.delivery else None

    @property
    def budget_unit(self) -> str | None:
        return self.delivery.unit if self.delivery else None

    @property
    def latency_pred_ms(self) -> float | None:
        """The delivery's prediction when its unit is ms."""
        return self.delivery.predicted if self.delivery and self.delivery.unit == "ms" else None

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
        if self.delivery:
            d = self.delivery
            resolved = f" (= {d.budget_resolved:g} {d.unit})" if d.budget_resolved is not None else ""
            verdict = {True: "met", False: "**missed**", None: "not measured"}[d.meets_budget]
            lines += [f"Delivered for target **{d.target}** under budget `{d.budget}`{resolved}: {verdict}"
                      + (f", measured {d.measured:.4g} {d.unit} (median of {len(d.readings)})"
                         if d.measured is not None else "")
                      + (f", predicted {d.predicted:.4g}" if d.predicted is not None else "")
                      + f", {d.attempts} attempt(s).", ""]
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
        if self.quantization:
            q = self.quantization
            rows += [("precision", f"int8 ({q.format}, weights {q.weight_type}, activations {q.activation_type}"
                      f"{', reduce_range' if q.reduce_range else ''})"),
                     ("calibration", f"{q.calibration_method} on {q.calibration_images} images of "
                      f"{q.calibration_set}"),
                     ("fp32 twin top-1", f"{q.fp32_accuracy:.4f}" if q.fp32_accuracy is not None else "-"),
                     ("int8 vs fp32 top-1 agreement", f"{q.agreement:.4f} (threshold {q.agreement_threshold})"),
                     ("nodes left in fp32", ", ".join(q.nodes_excluded) or "none")]
        for tgt, ms in self.latency_ms.items():
            noise = self.latency.get(tgt, {}).get("spread")
            rows.append((f"latency on {tgt}", f"{ms:.3f} ms" + (f" (spread {noise:.1%})" if noise is not None else "")))
        for stage, s in self.cost_cpu_s.items():
            rows.append((f"cost: {stage}", f"{s:.0f} CPU-s"))
        lines += [f"| {k} | {v} |" for k, v in rows]
        if self.provenance:
            lines += ["", "## Provenance", "", "```json", json.dumps(self.provenance, indent=2), "```"]
        return "\n".join(lines) + "\n"


#: Format-1 keys that were untyped extras, kept under ``provenance["card_format_1"]`` when a card is read.
_FORMAT_1_EXTRAS = ("predicted_value_table", "teacher_value_now", "prediction_error", "measured_value",
                    "predicted_value", "meets_budget", "budget_now")
_FORMAT_1_SHARED_KEYS = {"house (shared by all targets)": f"{SHARED_COST_PREFIX}house"}


def _from_format_1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 card's fields in format 2: the budget fields (and the block engine's untyped extras) become the
    ``delivery`` section, ``method`` a field, the shared cost one spelling; what has no place stays in provenance."""
    data = dict(data)
    provenance = dict(data.get("provenance") or {})
    old = {k: data.pop(k) for k in ("target", "budget", "budget_resolved", "budget_unit", "latency_pred_ms")
           if k in data}
    extras = {k: data.pop(k) for k in _FORMAT_1_EXTRAS if k in data}
    if old.get("target"):
        target = old["target"]
        measured = extras.get("measured_value", (data.get("latency", {}).get(target) or {}).get("value"))
        engine_budget = provenance.pop("engine_budget_resolved", old.get("budget_resolved"))  # the bench relabelled it
        data["delivery"] = {
            "target": target, "budget": old.get("budget"),
            "budget_resolved": extras.get("budget_now", engine_budget), "unit": old.get("budget_unit") or "ms",
            "predicted": extras.get("predicted_value", old.get("latency_pred_ms")),
            "readings": [float(measured)] if measured is not None else [],
            "attempts": int(provenance.get("attempts", len(provenance.get("search_rounds", [])) or 1)),
            "reference": extras.get("teacher_value_now", provenance.get(PRED_REFERENCE)),
        }
    if extras:
        provenance["card_format_1"] = extras
    data["provenance"] = provenance
    data["cost_cpu_s"] = {_FORMAT_1_SHARED_KEYS.get(k, k): v for k, v in (data.get("cost_cpu_s") or {}).items()}
    data["card_format"] = 2
    return data
