"""Keyword arguments for a library model's constructor (``--model-args img_size=64 drop_rate=0.1``).

Each item is ``key=value``; the value is typed as a YAML scalar (``64`` int, ``0.1`` float, ``true`` bool, ``null``,
anything else text). Keys bespoke sets itself (classes, weights) are refused, and so are collections: the arguments
land in a model card's ``arch_config`` as plain JSON so the model rebuilds from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from bespoke.errors import BespokeError

Scalar = int | float | bool | str | None
ModelArgs = dict[str, Scalar]
MAX_MODEL_ARGS = 32
MAX_VALUE_CHARS = 200
#: set by bespoke itself: a model argument must not fight them
RESERVED = frozenset({"num_classes", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                      "weights", "features_only"})
_HINT = "model arguments are key=value with a scalar value, e.g. --model-args img_size=64"


def _check(key: Any, value: Any) -> tuple[str, Scalar]:
    if not isinstance(key, str) or not key.isidentifier():
        raise BespokeError(f"model argument name {key!r} is not a Python identifier", _HINT)
    if key in RESERVED:
        raise BespokeError(f"model argument {key!r} is set by bespoke itself", "use the matching option instead")
    if isinstance(value, float) and not math.isfinite(value):
        raise BespokeError(f"model argument {key}: {value} is not a finite number", _HINT)
    if value is not None and not isinstance(value, int | float | bool | str):
        raise BespokeError(f"model argument {key}: expected a scalar, got {type(value).__name__}", _HINT)
    return key, value


def _scalar(text: str, key: str) -> Scalar:
    if len(text) > MAX_VALUE_CHARS:
        raise BespokeError(f"model argument {key}: value longer than {MAX_VALUE_CHARS} characters", _HINT)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    return value if value is None or isinstance(value, int | float | bool | str) else text


def parse_model_args(items: Iterable[str] | Mapping[str, Any] | None) -> ModelArgs:
    """``{key: value}`` from ``key=value`` items (commas may also separate them) or from a mapping (YAML)."""
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        for item in items:
            if not isinstance(item, str):
                raise BespokeError(f"model argument {item!r} is not key=value text", _HINT)
            for part in filter(None, (p.strip() for p in item.split(","))):
                key, sep, text = part.partition("=")
                if not sep:
                    raise BespokeError(f"model argument {part!r} is not key=value", _HINT)
                pairs.append((key.strip(), _scalar(text.strip(), key.strip())))
    if len(pairs) > MAX_MODEL_ARGS:
        raise BespokeError(f"{len(pairs)} model arguments, at most {MAX_MODEL_ARGS}", _HINT)
    out: ModelArgs = {}
    for key, value in pairs:
        key, value = _check(key, value)
        if key in out:
            raise BespokeError(f"model argument {key!r} given twice", _HINT)
        out[key] = value
    return out
