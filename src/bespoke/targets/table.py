"""Latency tables measured on a device: ``key,median_ms,p10_ms,p90_ms,n`` (one row per part).

Keys are :func:`bespoke.targets.onnx_io.part_key` values (the device profiler uses each ONNX file's stem),
plus the optional ``__overhead__`` row: the fixed cost of one session run (a trivial graph), which every
part's median already includes once. Extra columns are ignored, so the format can grow without breaking
readers. A sidecar ``<table>.json`` (written by the profiler: settings, machine, date) is read when present.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bespoke.errors import BespokeError
from bespoke.targets.device_profiler import CSV_COLUMNS, OVERHEAD_KEY
from bespoke.targets.measure import Measurement

# p90 - p10 of a normal distribution is 2 * 1.2816 standard deviations
_P10_P90_IN_STDEVS = 2.0 * 1.2815515655446004
_HINT = "the table must be the CSV written by device_profiler.py (header key,median_ms,p10_ms,p90_ms,n)"


@dataclass(frozen=True)
class TableRow:
    key: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    n: int


class TableLookup:
    """Read-only view of a latency table: ``get(key)`` is the median in ms, or ``None`` for an unknown key."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._rows: Mapping[str, TableRow] = MappingProxyType(_read_table(self.path))
        self.meta: dict[str, Any] | None = _read_meta(Path(f"{self.path}.json"))

    def get(self, key: str) -> float | None:
        row = self._rows.get(key)
        return None if row is None else row.median_ms

    def row(self, key: str) -> TableRow | None:
        return self._rows.get(key)

    @property
    def rows(self) -> Mapping[str, TableRow]:
        return self._rows

    @property
    def overhead(self) -> float:
        """Median ms of the ``__overhead__`` row (0.0 when the table has none)."""
        value = self.get(OVERHEAD_KEY)
        return 0.0 if value is None else value

    def measurement(self, key: str, *, details: Mapping[str, Any] | None = None) -> Measurement | None:
        """The row as a :class:`Measurement` (mean and stdev approximated from median/p10/p90)."""
        row = self._rows.get(key)
        if row is None:
            return None
        spread = (row.p90_ms - row.p10_ms) / row.median_ms if row.median_ms > 0 else 0.0
        info = {
            "key": key,
            "table": str(self.path),
            "approximated": "mean = median, stdev = (p90 - p10) / 2.563 (the table keeps no raw runs)",
            **(details or {}),
        }
        if self.meta is not None:
            info["table_settings"] = self.meta.get("settings", {})
        stdev = (row.p90_ms - row.p10_ms) / _P10_P90_IN_STDEVS
        return Measurement(value=row.median_ms, unit="ms", median=row.median_ms, mean=row.median_ms,
                           p10=row.p10_ms, p90=row.p90_ms, stdev=stdev, spread=spread, n=row.n,
                           runtime="table", details=info)

    def keys(self) -> list[str]:
        return list(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __repr__(self) -> str:
        return f"TableLookup({str(self.path)!r}, {len(self)} rows)"


def _read_table(path: Path) -> dict[str, TableRow]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BespokeError(f"latency table not found: {path}",
                           "measure the parts on the device first (bespoke profile-device)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BespokeError(f"cannot read latency table {path}: {exc}", _HINT) from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BespokeError(f"{path}: missing column(s) {', '.join(missing)}", _HINT)
    rows: dict[str, TableRow] = {}
    for line, record in enumerate(reader, start=2):
        key = (record.get("key") or "").strip()
        if not key:
            raise BespokeError(f"{path}, line {line}: empty key", _HINT)
        if key in rows:
            raise BespokeError(f"{path}, line {line}: duplicate key {key!r}", _HINT)
        try:
            median, p10, p90 = (float(record[c]) for c in ("median_ms", "p10_ms", "p90_ms"))
            n = int(record["n"])
        except (TypeError, ValueError):
            raise BespokeError(f"{path}, line {line}: not a number in row {key!r}", _HINT) from None
        if not all(math.isfinite(v) and v >= 0 for v in (median, p10, p90)) or n < 1:
            raise BespokeError(f"{path}, line {line}: row {key!r} needs finite times >= 0 and n >= 1", _HINT)
        rows[key] = TableRow(key=key, median_ms=median, p10_ms=p10, p90_ms=p90, n=n)
    return rows


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None
