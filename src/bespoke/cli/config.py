"""``--config FILE.yaml`` for every command: YAML sets options, the command line overrides them, pydantic validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bespoke.errors import BespokeError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping of option names (strings) from ``path``, or one clear error."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BespokeError(f"config file not found: {path}", "check the --config path") from None
    except UnicodeDecodeError:
        raise BespokeError(f"{path} is not a text file (not UTF-8)", "give a YAML file to --config") from None
    except OSError as exc:
        raise BespokeError(f"cannot read config file {path}: {exc.strerror or exc}", "check the --config path") \
            from None
    except yaml.YAMLError as exc:
        raise BespokeError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BespokeError(f"{path} must hold a mapping of option: value", "see `--help` for option names")
    bad = [key for key in data if not isinstance(key, str)]
    if bad:
        raise BespokeError(f"{path}: option names must be text, got {bad[0]!r}", "see `--help` for option names")
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
    for section in set(nested.values()):
        if section in data and data[section] is None:  # `train:` with nothing under it
            data[section] = {}
        if section in data and not isinstance(data[section], dict):
            raise BespokeError(f"option {section} must be a mapping of option: value, got {data[section]!r:.60}",
                               f"write e.g. `{section}: {{...}}` or set its options at the top level")
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
