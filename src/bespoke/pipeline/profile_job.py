"""``bespoke profile``: measure a delivered model on deployment targets and record it in its card."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bespoke.errors import BespokeError
from bespoke.export import ONNX, ModelCard, load_model_dir, update_card
from bespoke.targets import Measurement, Target, measure, measure_onnx


def measure_model_dir(directory: str | Path, target: Target) -> Measurement:
    """Measure a model directory on ``target``: the exported ONNX file for onnxruntime/table targets (what ships),
    the PyTorch module for torch and the proxy targets (MACs, params, memory)."""
    directory = Path(directory)
    if target.runtime in ("onnxruntime", "table"):
        return measure_onnx(directory / ONNX, target)
    model, card = load_model_dir(directory)
    if card.precision != "fp32" and target.runtime in ("torch", "memory"):
        raise BespokeError(f"{directory} is an {card.precision} model; target {target.name!r} ({target.runtime}) "
                           "would measure its fp32 PyTorch module instead",
                           "profile it on an onnxruntime target")
    return measure(model, target, card.resolution)


def profile_model_dir(directory: str | Path, targets: Sequence[Target]) -> ModelCard:
    """Measure ``directory`` on every target; write ``latency_ms`` (latency targets) and the full measurement
    (median, p10/p90, spread, n) per target into the card. The delivery section (the engine's own verdict, on its
    reference's scale) is left as it is."""
    latency_ms: dict[str, float] = {}
    full: dict[str, dict] = {}
    update_card(directory)  # validates the directory before any measuring
    for target in targets:
        m = measure_model_dir(directory, target)
        full[target.name] = m.model_dump()
        if m.unit == "ms":
            latency_ms[target.name] = round(m.value, 4)
    return update_card(directory, latency_ms=latency_ms, latency=full)
