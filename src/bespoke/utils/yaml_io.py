"""The one YAML reader for every YAML file the package reads (configs, targets, presets), bounded before reading.

A small hostile file must not exhaust memory: the file is refused above ``MAX_YAML_BYTES`` before it is read (and
never more than that is read, whatever ``stat`` says), and a document whose aliases would expand to more than
``MAX_YAML_VALUES`` values (a "billion laughs" bomb, or ``<<:`` merge keys nested the same way) is refused after
composing and before constructing, since anything that walks the values later (validation, ``repr``) pays for
every copy. Every problem is one ``BespokeError`` naming the file.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

from bespoke.errors import BespokeError

#: configs, targets files and presets are a few KB; nothing legitimate comes near this
MAX_YAML_BYTES = 1 << 20
#: values in a document with every alias counted as a full copy of what it refers to
MAX_YAML_VALUES = 200_000

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4
_SHORT.maxlevel = 2
_SHORT_CHARS = 80


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to ``_SHORT_CHARS``, from a repr that is bounded already (cheap on any value)."""
    text = _SHORT.repr(value)
    return text if len(text) <= _SHORT_CHARS else text[: _SHORT_CHARS - 3] + "..."


class _TooManyValues(Exception):
    """Raised by the loader when aliases expand past the budget or refer to themselves."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document whose aliases expand to more than ``MAX_YAML_VALUES`` values."""

    def compose_document(self) -> yaml.Node:  # type: ignore[override]
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values under ``node`` with aliases copied out; memoised per node, so linear in the distinct nodes."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _TooManyValues("an alias refers to a value that contains it")
    open_nodes.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, sizes, open_nodes)
            if size > MAX_YAML_VALUES:
                break
    elif isinstance(node, yaml.MappingNode):
        for child_key, child_value in node.value:
            size += _expanded_size(child_key, sizes, open_nodes) + _expanded_size(child_value, sizes, open_nodes)
            if size > MAX_YAML_VALUES:
                break
    if size > MAX_YAML_VALUES:
        raise _TooManyValues(f"its aliases expand to more than {MAX_YAML_VALUES} values")
    open_nodes.discard(key)
    sizes[key] = size
    return size


def load_yaml_file(path: str | Path, *, what: str, hint: str) -> Any:
    """The document in the YAML file ``path`` (``None`` if empty), or one ``BespokeError`` saying what is wrong.

    ``what`` names the file in messages (``"config file"``, ``"targets file"``, ``"preset"``); ``hint`` says how
    to fix a file that does not parse.
    """
    path = Path(path)
    read_hint = f"check the path of the {what}"
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)  # /dev/zero or a FIFO has no meaningful size: bound the read itself
    except FileNotFoundError:
        raise BespokeError(f"cannot read {what} {path}: no such file", read_hint) from None
    except OSError as exc:
        raise BespokeError(f"cannot read {what} {path}: {exc.strerror or exc}", read_hint) from None
    if len(raw) > MAX_YAML_BYTES:
        raise BespokeError(f"{what} {path} is larger than {MAX_YAML_BYTES // (1 << 20)} MiB, refused before parsing",
                           f"a {what} is a few KB of YAML: check the path")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BespokeError(f"cannot read {what} {path}: not a text file (not UTF-8: byte 0x{raw[exc.start]:02x} "
                           f"at offset {exc.start})", f"give a YAML file as the {what}") from None
    try:
        return _compose_and_construct(text)
    except _TooManyValues as exc:
        raise BespokeError(f"{what} {path} refused: {exc}",
                           "write the values out instead of nesting &anchor / *alias references") from None
    except RecursionError:
        raise BespokeError(f"{what} {path} is nested too deeply to read", hint) from None
    except yaml.YAMLError as exc:
        raise BespokeError(f"{path}: invalid YAML{_where(exc)}: {_problem(exc)}", hint) from None


def _compose_and_construct(text: str) -> Any:
    loader = _BoundedLoader(text)  # the reader checks the first characters already here
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return " ".join(str(problem).split())
