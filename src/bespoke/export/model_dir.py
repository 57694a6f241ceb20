"""The model directory — the output contract every engine writes.

``DIR/model.safetensors`` (weights), ``DIR/model.onnx`` (verified export), ``DIR/card.json`` (+ ``card.md``).
``card.json`` is written last and is the commit marker: a directory without it is incomplete and never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bespoke import targets
from bespoke.errors import BespokeError
from bespoke.export.builders import build_arch
from bespoke.export.card import CARD_FORMAT, ModelCard
from bespoke.export.onnx_export import OPSET, verified_onnx_bytes
from bespoke.targets.measure import cpu_model
from bespoke.utils.atomic import replace_files, safetensors_bytes, write_bytes
from bespoke.utils.lock import locks_output
from bespoke.zoo import apply_state_dict, load_state_dict

WEIGHTS, ONNX, CARD, CARD_MD = "model.safetensors", "model.onnx", "card.json", "card.md"

#: Files that mark a folder as another kind of bespoke output (the supernet's weights and completion marker, the
#: model house's definition); their owners sit above this layer, hence the names here.
OTHER_OUTPUTS = {"supernet.json": "a trained supernet", "supernet.safetensors": "a supernet",
                 "house.json": "a model house"}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, resolution: int) -> int:
    """Multiply-accumulates of one 3×R×R image (:func:`bespoke.targets.count_macs`, fvcore)."""
    return targets.count_macs(model, (1, 3, resolution, resolution))[0]


@locks_output("directory")
def save_model_dir(directory: str | Path, model: nn.Module, card: ModelCard, *, tolerance: float = 1e-4
                   ) -> ModelCard:
    """Write weights, verified ONNX and the card (params, MACs, ONNX diff filled in); returns the final card.

    Check before replace: the weights must be finite and the ONNX export must pass verification before any file of
    ``directory`` is touched, and the new files replace the old ones together (:func:`replace_files`), so a failed
    (re-)export leaves an earlier model directory exactly as it was.
    """
    from bespoke import __version__

    directory = Path(directory)
    if card.precision != "fp32":
        raise BespokeError(f"{directory}: an {card.precision} model directory is not re-exported from PyTorch (its "
                           "model.onnx is the quantized graph)",
                           "export its fp32 twin, then run `bespoke quantize` on it again")
    net = cpu_model(model)  # the caller's model keeps its device and mode
    state = net.state_dict()
    check_finite_weights(state)
    shape = (1, 3, card.resolution, card.resolution)
    onnx_bytes, diff = verified_onnx_bytes(net, shape, tolerance=tolerance)
    card = card.model_copy(update={
        "params": count_params(net), "macs": count_macs(net, card.resolution), "onnx_max_abs_diff": diff,
        "onnx_opset": OPSET, "bespoke_version": __version__, "card_format": CARD_FORMAT})
    weights = safetensors_bytes(state, metadata={"arch": card.arch, "engine": card.engine})
    replace_files({directory / ONNX: onnx_bytes, directory / WEIGHTS: weights, **_card_files(directory, card)},
                  marker=directory / CARD)
    return card


@locks_output("directory")
def save_quantized_model_dir(directory: str | Path, weights: bytes, onnx_bytes: bytes, card: ModelCard
                             ) -> ModelCard:
    """Write an INT8 model directory: the fp32 twin's ``weights`` (safetensors bytes), the quantized graph as
    model.onnx and ``card``, all replaced together with card.json last.

    Its verification is the card's top-1 agreement with the fp32 twin (``card.quantization``), not elementwise
    tolerance: below the threshold nothing is written.

    Raises:
        BespokeError: the card is not an int8 card, or its agreement is below its threshold.
    """
    from bespoke import __version__

    directory = Path(directory)
    q = card.quantization
    if card.precision != "int8" or q is None:
        raise BespokeError(f"{directory}: save_quantized_model_dir writes int8 cards, got {card.precision}")
    if q.agreement < q.agreement_threshold:
        raise BespokeError(f"{directory}: the INT8 graph agrees with its fp32 twin on {q.agreement:.1%} of the "
                           f"{q.agreement_split} images, below the {q.agreement_threshold:.1%} required: "
                           "quantization collapsed the model, nothing was written",
                           "calibrate on more images, or leave more layers in fp32")
    card = card.model_copy(update={"onnx_opset": OPSET, "onnx_max_abs_diff": None, "bespoke_version": __version__,
                                   "card_format": CARD_FORMAT})
    replace_files({directory / ONNX: onnx_bytes, directory / WEIGHTS: weights, **_card_files(directory, card)},
                  marker=directory / CARD)
    return card


def check_finite_weights(state: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or inf (a diverged run): such a model must never be delivered.

    Raises:
        BespokeError: naming the first such tensor.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise BespokeError(f"weight {name} holds {bad} NaN/inf value(s) of {tensor.numel()}: the model is "
                                   "broken, nothing was written",
                                   "the training diverged; train again with a lower learning rate")


def _card_files(directory: Path, card: ModelCard) -> dict[Path, bytes]:
    """``card.md`` then ``card.json`` (the commit marker, last)."""
    return {directory / CARD_MD: card.to_markdown().encode("utf-8"),
            directory / CARD: (card.model_dump_json(indent=2) + "\n").encode("utf-8")}


def check_out_dir(directory: str | Path, engine: str) -> None:
    """Refuse to write a model of ``engine`` into a folder that holds another kind of bespoke output (a supernet,
    a model house, or the model directory of another engine): the two would mix and neither could be trusted.

    A folder holding this engine's own earlier output is fine (a resumed or repeated run).

    Raises:
        BespokeError: naming what the folder holds.
    """
    directory = Path(directory)
    hint = f"give --out a new folder (or the folder of an earlier {engine} run)"
    for name, what in OTHER_OUTPUTS.items():
        if (directory / name).exists():
            raise BespokeError(f"{directory} already holds {what} ({name}); a {engine} model would mix with it", hint)
    if (directory / CARD).exists():
        other = read_card(directory).engine
        if other != engine:
            raise BespokeError(f"{directory} already holds a model of engine {other!r} ({CARD}); a {engine} model "
                               "would replace it", hint)


def write_card(directory: str | Path, card: ModelCard) -> None:
    """Atomically (re)write ``card.md`` then ``card.json``."""
    for path, data in _card_files(Path(directory), card).items():
        write_bytes(path, data)


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
