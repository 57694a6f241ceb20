"""Target specs: a name, a runtime, its settings and a budget; loaded from YAML with loud errors.

Example ``targets.yaml``::

    targets:
      - name: cpu1-half        # also the output sub-directory name: 1-64 of [A-Za-z0-9_.-], not starting with '.'
        runtime: onnxruntime   # onnxruntime | torch | table | macs | params | memory
        threads: 1
        batch: 1
        budget: 0.5x           # or 2.0ms, or 20M for macs/params; relative to the original model in fp32
        precision: int8        # fp32 (default) | int8: the model delivered is a statically quantized ONNX
      - name: board
        runtime: table
        table: latencies.csv   # relative paths resolve against this file's folder
        budget: 5ms
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bespoke.errors import BespokeError
from bespoke.targets.budget import BUDGET_HINT, Budget
from bespoke.targets.table import TableLookup
from bespoke.utils.yaml_io import load_yaml_file, short_repr

Runtime = Literal["onnxruntime", "torch", "table", "macs", "params", "memory"]
OptLevel = Literal["disable", "basic", "extended", "all"]
Precision = Literal["fp32", "int8"]
#: every target is a search + delivery of its own: far more than anyone runs, few enough to validate at once
MAX_TARGETS = 1000

RUNTIME_NAMES: tuple[str, ...] = get_args(Runtime)
LATENCY_RUNTIMES = ("onnxruntime", "torch", "table")
#: Runtimes that run an INT8 ONNX graph; the others time or count the fp32 PyTorch module (or a table of fp32 parts).
INT8_RUNTIMES = ("onnxruntime",)
_UNITS: dict[str, str] = {
    "onnxruntime": "ms",
    "torch": "ms",
    "table": "ms",
    "macs": "MACs",
    "params": "params",
    "memory": "bytes",
}
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1-64 letters, digits, '_', '.' or '-', not starting with '.'"
#: Largest thread count a target may ask for: more intra-op threads than any edge CPU has only stalls the host.
MAX_THREADS = 256
#: Largest measured batch: an edge target runs a few images at a time; bigger batches exhaust the host's memory.
MAX_BATCH = 256
#: Largest number of untimed or timed runs per measurement.
MAX_RUNS = 100_000


class Target(BaseModel):
    """Where and how a model is measured, and what it may cost there. Immutable; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="target name; also the output sub-directory name")
    runtime: Runtime
    threads: int = Field(default=1, ge=1, le=MAX_THREADS, strict=True, description="intra-op threads (latency "
                         "runtimes)")
    batch: int = Field(default=1, ge=1, le=MAX_BATCH, strict=True, description="batch size of the measured input")
    opt_level: OptLevel = Field(default="all", description="onnxruntime graph optimisation level")
    precision: Precision = Field(default="fp32", description="fp32, or int8: the delivered model is a statically "
                                 "quantized ONNX graph (onnxruntime targets only)")
    budget: Budget | None = Field(default=None, description="0.5x (relative), 2.0ms, 20M, 4MB or a number")
    table: Path | None = Field(default=None, description="latency CSV measured on the device (runtime table)")
    warmup: int = Field(default=10, ge=0, le=MAX_RUNS, strict=True, description="untimed runs before timing")
    repeats: int = Field(default=50, ge=1, le=MAX_RUNS, strict=True, description="timed runs")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        check_folder_name(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        if self.runtime == "table" and self.table is None:
            raise ValueError("runtime 'table' needs 'table: <latencies.csv>' (measured on the device)")
        if self.runtime != "table" and self.table is not None:
            raise ValueError(f"'table' is only used by runtime 'table', not {self.runtime!r}")
        if self.precision == "int8" and self.runtime not in INT8_RUNTIMES:
            raise ValueError(f"precision int8 needs runtime {' or '.join(INT8_RUNTIMES)}: {self.runtime!r} "
                             "cannot run an INT8 graph")
        if self.budget is not None:
            try:
                self.budget.check_unit(self.unit)
            except BespokeError as exc:
                raise ValueError(f"{exc.message}; {exc.hint}") from None
        return self

    @property
    def unit(self) -> str:
        """``ms`` (onnxruntime, torch, table), ``MACs``, ``params`` or ``bytes`` (memory)."""
        return _UNITS[self.runtime]

    @property
    def is_latency(self) -> bool:
        return self.runtime in LATENCY_RUNTIMES

    def resolve_budget(self, reference: float | None) -> float | None:
        """The absolute budget in :attr:`unit` (``None`` without one); a relative one needs ``reference``."""
        return None if self.budget is None else self.budget.resolve(reference, self.unit)


def check_folder_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is safe as one folder name on every file system (see NAME_RULE)."""
    if _NAME_PATTERN.fullmatch(name) is None:
        shown = f"{name[:24]!r}... ({len(name)} characters)" if len(name) > 32 else repr(name)
        raise ValueError(f"{shown} must be {NAME_RULE} (it becomes a folder name)")


def check_run_settings(source: str, **settings: Any) -> None:
    """One-line ``BespokeError`` unless ``settings`` (threads, batch, warmup, repeats) are valid for a target.

    For measurements set up outside a targets file (the board's profiler command), so they obey the same bounds.
    """
    try:
        Target.model_validate({"name": "settings", "runtime": "onnxruntime", **settings})
    except ValidationError as exc:
        message, _ = _condense(exc)
        raise BespokeError(f"{source}: {message}", f"threads 1..{MAX_THREADS}, batch 1..{MAX_BATCH}, warmup "
                                                   f"0..{MAX_RUNS}, repeats 1..{MAX_RUNS}") from None


def targets_from_dicts(
    items: Sequence[Mapping[str, Any]],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    source: str = "targets",
) -> list[Target]:
    """Validate target mappings; relative ``table`` paths resolve against ``base_dir`` (default: cwd).

    Every problem raises ``BespokeError`` on one line naming ``source``, the target and the key.
    """
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise BespokeError(f"{source}: 'targets' must be a list of mappings", _YAML_HINT)
    if not items:
        raise BespokeError(f"{source}: no targets defined", _YAML_HINT)
    if len(items) > MAX_TARGETS:
        raise BespokeError(f"{source}: {len(items)} targets, more than the {MAX_TARGETS} allowed",
                           "split them over several targets files")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    targets: list[Target] = []
    for index, item in enumerate(items):
        label = _label(item, index)
        if not isinstance(item, Mapping):
            raise BespokeError(f"{source}: {label}: expected a mapping of keys, got {type(item).__name__}",
                               _YAML_HINT)
        data = dict(item)
        table = data.get("table")
        if isinstance(table, (str, os.PathLike)) and str(table) and not Path(table).is_absolute():
            data["table"] = base / table
        try:
            target = Target.model_validate(data)
        except ValidationError as exc:
            message, hint = _condense(exc)
            raise BespokeError(f"{source}: {label}: {message}", hint) from None
        if target.table is not None and not target.table.is_file():
            raise BespokeError(
                f"{source}: {label}: table file not found: {target.table}",
                "measure the parts on the device (bespoke profile-device) and point 'table' at the CSV",
            )
        if target.table is not None:
            try:
                TableLookup(target.table)  # a broken table fails here, not halfway through a search
            except BespokeError as exc:
                raise BespokeError(f"{source}: {label}: {exc.message}", exc.hint) from None
        targets.append(target)
    seen: dict[str, str] = {}
    for target in targets:
        folded = target.name.lower()  # names are directory names: clash on case-insensitive file systems too
        if folded in seen:
            raise BespokeError(f"{source}: duplicate target name {target.name!r} (also {seen[folded]!r})",
                               "every target needs its own name: it is its output sub-directory")
        seen[folded] = target.name
    return targets


def load_targets(path: str | os.PathLike[str]) -> list[Target]:
    """Read a ``targets.yaml`` (``targets: [ {name, runtime, ...}, ... ]``) into validated targets."""
    path = Path(path)
    doc = load_yaml_file(path, what="targets file", hint=_YAML_HINT)
    if not isinstance(doc, Mapping) or "targets" not in doc:
        raise BespokeError(f"{path}: expected a top-level 'targets:' list", _YAML_HINT)
    extra = sorted(str(k) for k in doc if k != "targets")
    if extra:
        raise BespokeError(f"{path}: unknown top-level key(s): {', '.join(extra)}", _YAML_HINT)
    items = doc["targets"]
    if items is None:
        items = []
    return targets_from_dicts(items, base_dir=path.parent, source=str(path))


_YAML_HINT = "expected 'targets:' and a list like '- {name: cpu1, runtime: onnxruntime, budget: 0.5x}'"


def _label(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, Mapping) else None
    shown = isinstance(name, str) and len(name) <= 64  # a longer one is shortened where its error is told
    return f"target {name!r} (#{index + 1})" if shown else f"target #{index + 1}"


def _condense(exc: ValidationError) -> tuple[str, str | None]:
    """One line out of pydantic's errors: which key, what is wrong; a hint listing the allowed keys."""
    problems = []
    hint = None
    for err in exc.errors(include_url=False):
        key = ".".join(str(part) for part in err["loc"])
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            problems.append(f"unknown key {short_repr(key)}")
            hint = "allowed keys: " + ", ".join(Target.model_fields)
        elif kind == "missing":
            problems.append(f"missing key {key!r}")
        elif not key:
            problems.append(msg)
            hint = hint or (BUDGET_HINT if msg.startswith("budget") else None)
        else:
            got = err.get("input")
            plain = isinstance(got, (str, int, float))  # bools too: `threads: true`
            shown = f" (got {short_repr(got)})" if plain and short_repr(got) not in msg else ""
            problems.append(f"key {key!r}: {msg}{shown}")
            hint = hint or (BUDGET_HINT if key == "budget" else None)
    return "; ".join(problems), hint
