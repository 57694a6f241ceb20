"""Safe weight loading: safetensors, or ``torch.load(weights_only=True)``; never arbitrary pickles."""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bespoke.errors import BespokeError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "ema", "model_ema")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat tensor dict from ``.safetensors`` or a torch file, without running any pickled code.

    Torch files that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and a
    ``module.`` prefix (DataParallel) is stripped.
    """
    path = Path(path)
    if path.is_dir():
        raise BespokeError(f"weights path {path} is a directory, expected a .safetensors or .pth file",
                           "pass the weights file itself")
    if not path.is_file():
        raise BespokeError(f"weights file not found: {path}", "check the path")
    if path.stat().st_size == 0:
        raise BespokeError(f"weights file is empty: {path}", "re-download or re-export it")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise BespokeError(f"{path} is not a readable safetensors file ({_short(exc)})",
                               "the file may be truncated or of another format") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: the error says it all
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BespokeError(f"refused to load {path}: it holds Python objects beyond tensors ({_refusal(exc)})",
                           "only plain state dicts are accepted; convert it to .safetensors in a trusted place") \
            from None
    except Exception as exc:  # torch raises many types (KeyError, EOFError, RuntimeError...) on foreign files
        raise BespokeError(f"{path} is not a readable torch weights file ({_short(exc)})",
                           "the file may be truncated or not a weights file") from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            if all(k.startswith("module.") for k in tensors):
                tensors = {k[len("module."):]: v for k, v in tensors.items()}
            return tensors
    raise BespokeError(f"{path} holds no tensor state dict", "save it with torch.save(model.state_dict(), ...)")


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                     skip_prefixes: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``model``; on any missing/unexpected key or shape mismatch raise one error naming them.

    ``skip_prefixes`` leaves those parameters at their initial value (e.g. a classifier re-made for new classes).
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefixes)}
    expected = {k for k in own if not k.startswith(skip_prefixes) and not k.endswith("num_batches_tracked")}
    missing = sorted(expected - state.keys())
    unexpected = sorted(k for k in state.keys() - own.keys() if not k.endswith("num_batches_tracked"))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in state.keys() & own.keys() if state[k].shape != own[k].shape)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
    if problems:
        raise BespokeError(f"weights from {source} do not fit the model: " + "; ".join(problems),
                           "check that the architecture name matches the weights")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _short(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch appends paragraphs of advice)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return first.split(". ")[0].rstrip(".")[:160]


def _refusal(exc: BaseException) -> str:
    """What the weights-only unpickler refused (e.g. ``Unsupported global: GLOBAL exec``)."""
    found = re.search(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed global|\n\n|$)", str(exc), re.S)
    return found.group(1).strip()[:160] if found and found.group(1).strip() else _short(exc)
