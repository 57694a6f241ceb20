"""``--config FILE.yaml`` for every command: YAML sets options, the command line overrides them, pydantic validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bespoke.errors import BespokeError
from bespoke.utils.yaml_io import load_yaml_file, short_repr

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping of option names (strings) from ``path``, or one clear error."""
    data = load_yaml_file(path, what="config file", hint="fix the file: --config takes YAML of option: value")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BespokeError(f"{path} must hold a mapping of option: value", "see `--help` for option names")
    bad = [key for key in data if not isinstance(key, str)]
    if bad:
        raise BespokeError(f"{path}: option names must be text, got {short_repr(bad[0])}",
                           "see `--help` for option names")
    return data


def resolve(model_cls: type[M], ctx: Any, config: Path | None, cli: dict[str, Any],
            nested: dict[str, str] | None = None) -> M:
    """Build ``model_cls`` from defaults < YAML ``config`` < options given on the command line.

    ``cli`` maps option names (python identifiers) to their values; ``nested`` maps an option name to the
    sub-model field that holds it, dotted for deeper ones (e.g. ``{"epochs": "train", "group_size":
    "house.distill"}``); ``cli``'s key may differ from the field's name as ``{"seed": "search.anneal:seed"}``.
    """
    nested = nested or {}
    data: dict[str, Any] = read_yaml(config) if config else {}
    data = {k.replace("-", "_"): v for k, v in data.items()}
    for name, where in nested.items():  # a flat YAML key may name a nested option, as on the command line
        section, field = _place(where, name)
        if name in data:
            _section(data, section)[field] = data.pop(name)
    for name, value in cli.items():
        # typer vendors its own click: compare the source by name, not against click's enum
        source = ctx.get_parameter_source(name)
        explicit = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        if name in nested:
            section, field = _place(nested[name], name)
            holder = _section(data, section)
            if explicit or field not in holder:
                holder[field] = value
        elif explicit or name not in data:
            data[name] = value
    return validate(model_cls, data)


def validate(model_cls: type[M], data: dict[str, Any]) -> M:
    """``model_cls`` built from option values, or one ``invalid option NAME: ...`` error line."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = " ".join(str(err["msg"]).split())  # one line, whatever a validator wrote
        got = err.get("input")
        shown = f" (got {got!r})" if isinstance(got, (int, float)) and len(repr(got)) <= 40 else ""
        raise BespokeError(f"invalid option {where}: {message}{shown}", "see --help") from None


def _place(where: str, name: str) -> tuple[str, str]:
    """``"a.b:field"`` -> (``"a.b"``, ``"field"``); without ``:`` the field is the option's own name."""
    section, _, field = where.partition(":")
    return section, field or name


def _section(data: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The mapping at ``dotted`` inside ``data`` (created where missing), or one clear error."""
    holder = data
    for part in dotted.split("."):
        if holder.get(part) is None:  # `train:` with nothing under it
            holder[part] = {}
        if not isinstance(holder[part], dict):
            raise BespokeError(f"option {dotted} must be a mapping of option: value, got {short_repr(holder[part])}",
                               f"write e.g. `{part}: {{...}}` or set its options at the top level")
        holder = holder[part]
    return holder
