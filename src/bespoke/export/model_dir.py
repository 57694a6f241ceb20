"""The model directory — the output contract every engine writes.

``DIR/model.safetensors`` (weights), ``DIR/model.onnx`` (verified export), ``DIR/card.json`` (+ ``card.md``).
``card.json`` is written last and is the commit marker: a directory without it is incomplete and never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from bespoke.errors import BespokeError
from bespoke.export.builders import build_arch
from bespoke.export.card import ModelCard
from bespoke.export.onnx_export import OPSET, export_onnx
from bespoke.utils.atomic import save_safetensors, write_text
from bespoke.utils.lock import locks_output
from bespoke.zoo import apply_state_dict, load_state_dict

WEIGHTS, ONNX, CARD, CARD_MD = "model.safetensors", "model.onnx", "card.json", "card.md"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, resolution: int) -> int:
    """Multiply-accumulates of one 3×R×R image (fvcore counts one fused multiply-add as one 'flop')."""
    import warnings

    import torch
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's jit tracing warns on every call
        fca = FlopCountAnalysis(model, torch.zeros(1, 3, resolution, resolution))
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        total = int(fca.total())
    model.train(was_training)
    return total


@locks_output("directory")
def save_model_dir(directory: str | Path, model: nn.Module, card: ModelCard, *, tolerance: float = 1e-4
                   ) -> ModelCard:
    """Write weights, verified ONNX and the card (params, MACs, ONNX diff filled in); returns the final card."""
    from bespoke import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CARD).unlink(missing_ok=True)  # the directory is incomplete until the new card lands
    model = model.eval().cpu()
    shape = (1, 3, card.resolution, card.resolution)
    diff = export_onnx(model, directory / ONNX, shape, tolerance=tolerance)
    save_safetensors(model.state_dict(), directory / WEIGHTS, metadata={"arch": card.arch, "engine": card.engine})
    card = card.model_copy(update={
        "params": count_params(model), "macs": count_macs(model, card.resolution), "onnx_max_abs_diff": diff,
        "onnx_opset": OPSET, "bespoke_version": __version__})
    write_card(directory, card)
    return card


def write_card(directory: str | Path, card: ModelCard) -> None:
    """Atomically (re)write ``card.md`` then ``card.json``."""
    directory = Path(directory)
    write_text(directory / CARD_MD, card.to_markdown())
    write_text(directory / CARD, card.model_dump_json(indent=2) + "\n")


def update_card(directory: str | Path, **fields: Any) -> ModelCard:
    """Merge ``fields`` into an existing card (dict fields are merged key by key) and rewrite it."""
    card = read_card(directory)
    data = card.model_dump()
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    new = ModelCard.model_validate(data)
    write_card(directory, new)
    return new


def read_card(directory: str | Path) -> ModelCard:
    """The card of a complete model directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BespokeError(f"model directory not found: {directory}", "give the --out folder of a bespoke run")
    return ModelCard.read(directory / CARD)


def load_model_dir(directory: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model of a directory from its card's recipe and its safetensors weights."""
    card = read_card(directory)
    model = build_arch(card.arch_config)
    apply_state_dict(model, load_state_dict(Path(directory) / WEIGHTS), source=str(Path(directory) / WEIGHTS))
    return model.eval(), card
