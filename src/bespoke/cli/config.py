"""``--config FILE.yaml`` for every command: YAML sets options, the command line overrides them, pydantic validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bespoke.errors import BespokeError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, or one clear error."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise BespokeError(f"config file not found: {path}", "check the --config path") from None
    except yaml.YAMLError as exc:
        raise BespokeError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BespokeError(f"{path} must hold a mapping of option: value", "see `--help` for option names")
    return data


def resolve(model_cls: type[M], ctx: Any, config: Path | None, cli: dict[str, Any],
            nested: dict[str, str] | None = None) -> M:
    """Build ``model_cls`` from defaults < YAML ``config`` < options given on the command line.

    ``cli`` maps option names (python identifiers) to their values; ``nested`` maps an option name to the
    sub-model field that holds it (e.g. ``{"epochs": "train"}``).
    """
    nested = nested or {}
    data: dict[str, Any] = read_yaml(config) if config else {}
    data = {k.replace("-", "_"): v for k, v in data.items()}
    for name, section in nested.items():  # a flat YAML key may name a nested option, as on the command line
        if name in data:
            data.setdefault(section, {})[name] = data.pop(name)
    for name, value in cli.items():
        # typer vendors its own click: compare the source by name, not against click's enum
        source = ctx.get_parameter_source(name)
        explicit = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        if name in nested:
            section = data.setdefault(nested[name], {})
            if explicit or name not in section:
                section[name] = value
        elif explicit or name not in data:
            data[name] = value
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BespokeError(f"invalid option {where}: {err['msg']}", "see --help") from None
