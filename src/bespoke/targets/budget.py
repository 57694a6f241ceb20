"""Budgets: how much a deployed model may cost on a target, written the way people say it.

Accepted text (spaces between number and suffix allowed, ``str()`` gives back exactly what was written):

========================  ============  ===============================================================
text                      kind          meaning
========================  ============  ===============================================================
``0.5x``                  ``relative``  half of the reference (original) model's value on the same target
``2.0ms`` ``800us`` ``1s``  ``time``    absolute latency; also ``ns`` and ``µs``; stored in milliseconds
``20M`` ``1.5G`` ``300k``  ``count``    absolute count (MACs, parameters or bytes); suffixes k/K, M, G, T
``4MB`` ``512KiB``        ``bytes``     absolute memory; B, kB/KB, MB, GB (powers of 1000), KiB, MiB, GiB
``12.5`` ``20``           ``plain``     a number in the target's own unit (ms, MACs, params or bytes)
========================  ============  ===============================================================

Numbers may use decimals and exponents (``1e6``); they must be finite and > 0 (and not subnormal). A relative
budget lies in [0.001x, 100x]: below that no model fits, above it the budget says nothing.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Literal

from pydantic_core import core_schema

from bespoke.errors import BespokeError

BudgetKind = Literal["relative", "time", "count", "bytes", "plain"]

#: Units a target can be measured in (see ``Target.unit``).
UNITS = ("ms", "MACs", "params", "bytes")

_NUMBER = r"[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_PATTERN = re.compile(rf"(?P<num>{_NUMBER})[ \t]*(?P<suffix>[A-Za-zµμ]*)")

# suffix -> (kind, multiplier to the canonical amount: fraction, ms, count, bytes)
_SUFFIXES: dict[str, tuple[BudgetKind, float]] = {
    "x": ("relative", 1.0),
    "X": ("relative", 1.0),
    "s": ("time", 1e3),
    "ms": ("time", 1.0),
    "us": ("time", 1e-3),
    "µs": ("time", 1e-3),  # micro sign
    "μs": ("time", 1e-3),  # greek mu
    "ns": ("time", 1e-6),
    "": ("plain", 1.0),
    "k": ("count", 1e3),
    "K": ("count", 1e3),
    "M": ("count", 1e6),
    "G": ("count", 1e9),
    "T": ("count", 1e12),
    "B": ("bytes", 1.0),
    "kB": ("bytes", 1e3),
    "KB": ("bytes", 1e3),
    "MB": ("bytes", 1e6),
    "GB": ("bytes", 1e9),
    "KiB": ("bytes", 1024.0),
    "MiB": ("bytes", 1024.0**2),
    "GiB": ("bytes", 1024.0**3),
}

# which absolute kinds make sense in which target unit
_COMPATIBLE: dict[str, tuple[BudgetKind, ...]] = {
    "ms": ("time", "plain"),
    "MACs": ("count", "plain"),
    "params": ("count", "plain"),
    "bytes": ("count", "bytes", "plain"),
}

#: Smallest and largest relative budget (a fraction of the reference model's value).
RELATIVE_RANGE = (1e-3, 100.0)

BUDGET_HINT = "write e.g. 0.5x (relative), 2.0ms / 800us (latency), 20M / 1.5G (MACs or params), 4MB (memory)"


@dataclass(frozen=True)
class Budget:
    """A parsed budget; ``amount`` is canonical: fraction (relative), ms (time), count, bytes, or plain."""

    text: str
    kind: BudgetKind
    amount: float

    @classmethod
    def parse(cls, text: Any) -> Budget:
        """Parse ``text`` (a string, or a number as YAML gives it); ``BespokeError`` on anything else."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            got = f"{type(text).__name__} {text!r}"
            raise BespokeError(f"budget must be text or a number, got {got}", BUDGET_HINT)
        raw = text.strip() if isinstance(text, str) else str(text)
        match = _PATTERN.fullmatch(raw)
        if match is None or match.group("suffix") not in _SUFFIXES:
            raise BespokeError(f"cannot read budget {raw!r}", BUDGET_HINT)
        kind, mult = _SUFFIXES[match.group("suffix")]
        try:
            number = float(match.group("num"))
        except (ValueError, OverflowError):  # pragma: no cover - the regex only lets floats through
            raise BespokeError(f"cannot read the number in budget {raw!r}", BUDGET_HINT) from None
        amount = number * mult
        if not math.isfinite(amount) or amount <= 0.0:
            raise BespokeError(f"budget {raw!r} must be a finite number > 0", BUDGET_HINT)
        low, high = RELATIVE_RANGE
        if kind == "relative" and not low <= amount <= high:
            raise BespokeError(f"relative budget {raw!r} must lie between {low:g}x and {high:g}x",
                               "write the share of the reference model's value, e.g. 0.5x")
        if amount < sys.float_info.min:  # subnormal: arithmetic on it loses all precision or becomes 0
            raise BespokeError(f"budget {raw!r} is too small to compute with", BUDGET_HINT)
        return cls(text=raw, kind=kind, amount=amount)

    @property
    def is_relative(self) -> bool:
        return self.kind == "relative"

    def check_unit(self, unit: str) -> None:
        """Raise ``BespokeError`` when this budget cannot apply to a target measured in ``unit``."""
        if unit not in _COMPATIBLE:
            raise BespokeError(f"unknown target unit {unit!r}", f"one of {', '.join(UNITS)}")
        if self.is_relative or self.kind in _COMPATIBLE[unit]:
            return
        what = {"time": "a latency", "count": "a count", "bytes": "a memory size"}[self.kind]
        raise BespokeError(
            f"budget {self.text!r} is {what} but the target is measured in {unit}",
            f"use a relative budget (e.g. 0.5x) or one in {unit}" + (" (e.g. 2.0ms)" if unit == "ms" else ""),
        )

    def resolve(self, reference: float | None, unit: str) -> float:
        """The absolute budget in ``unit`` (ms, MACs, params or bytes).

        A relative budget multiplies ``reference`` (the original model's value on the same target).
        """
        self.check_unit(unit)
        if not self.is_relative:
            return self.amount
        if reference is None:
            raise BespokeError(
                f"relative budget {self.text!r} needs the reference model's value",
                "measure the original model on this target first (bespoke.targets.reference_value)",
            )
        if isinstance(reference, bool) or not math.isfinite(reference) or reference <= 0:
            raise BespokeError(f"reference value {reference!r} for budget {self.text!r} must be > 0")
        value = self.amount * float(reference)
        if not math.isfinite(value):
            raise BespokeError(f"budget {self.text!r} of reference value {reference!r} is not a finite number")
        return value

    def __str__(self) -> str:
        return self.text

    # pydantic: a Budget field accepts a Budget, a string or a number, and serialises back to the text.
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._pydantic_validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "examples": ["0.5x", "2.0ms", "20M"]}

    @classmethod
    def _pydantic_validate(cls, value: Any) -> Budget:
        try:
            return cls.parse(value)
        except BespokeError as exc:  # pydantic wraps ValueError with the field's location
            raise ValueError(exc.message) from None
