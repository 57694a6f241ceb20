"""Benchmark stages: each one skipped when its model directory is complete, timed in CPU-seconds, recorded.

A record's ``role`` says how its cost scales with the number of targets: ``one-off`` (paid once, e.g. the
teacher's fine-tune or a donor's) or ``per-target`` (paid again for every target, e.g. pruning + KD to one
budget). ``uses`` names the one-off stages it builds on (their cost counts as the method's preparation).
The ledger (``OUT/stages.json``, written atomically after every stage) is what a resumed run reads back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from bespoke.errors import BespokeError
from bespoke.export import CARD, ModelCard, read_card
from bespoke.report import own_cost
from bespoke.train import cpu_seconds
from bespoke.utils.atomic import write_json

Role = Literal["one-off", "per-target"]
Status = Literal["done", "skipped", "failed", "not run"]



@dataclass
class StageRecord:
    """What one stage did and cost. ``cpu_s`` is the stage's full cost, earlier interrupted attempts included
    where its training checkpoints recorded them."""

    name: str
    method: str
    role: Role
    status: Status
    dirs: list[str] = field(default_factory=list)
    cpu_s: float | None = None
    wall_s: float | None = None
    target: str | None = None
    uses: list[str] = field(default_factory=list)
    message: str = ""
    settings: str = ""  # fingerprint of the settings the stage ran with (engines: rerun when it changes)


def card_cost(card: ModelCard) -> float:
    """The model's own CPU-seconds: its card's per-stage costs, shared (``shared:``) entries left out."""
    return own_cost(card) or 0.0


class StageLedger:
    """Stage records of one benchmark directory, persisted to ``stages.json`` after every change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, StageRecord] = {}
        if self.path.is_file():
            try:
                raw = json.loads(self.path.read_text())
                self.records = {name: StageRecord(**rec) for name, rec in raw.items()}
            except (ValueError, TypeError) as exc:
                raise BespokeError(f"{self.path} is not a stage ledger ({exc})",
                                   "delete it to re-measure stage costs") from None

    def get(self, name: str) -> StageRecord | None:
        return self.records.get(name)

    def put(self, record: StageRecord) -> StageRecord:
        self.records[record.name] = record
        self._write()
        return record

    def drop(self, name: str) -> StageRecord | None:
        """Forget one stage (it runs again on the next call); returns its record."""
        record = self.records.pop(name, None)
        if record is not None:
            self._write()
        return record

    def _write(self) -> None:
        write_json(self.path, {name: asdict(rec) for name, rec in self.records.items()})


def run_model_stage(ledger: StageLedger, name: str, model_dir: Path, make: Callable[[], ModelCard], *,
                    method: str, role: Role, target: str | None = None, uses: Sequence[str] = (),
                    log: Callable[[str], None] = print) -> StageRecord:
    """Run ``make`` (which writes ``model_dir``) unless ``model_dir`` already holds a card; record the cost.

    A ``BespokeError`` (e.g. a budget pruning cannot reach) marks the stage failed and the benchmark goes on.
    """
    base = {"name": name, "method": method, "role": role, "dirs": [str(model_dir)], "target": target,
            "uses": list(uses)}
    previous = ledger.get(name)
    if (model_dir / CARD).is_file():
        card = read_card(model_dir)
        log(f"[bench] {name}: done before, skipped ({model_dir})")
        return ledger.put(StageRecord(**base, status="skipped", cpu_s=card_cost(card),
                                      wall_s=previous.wall_s if previous else None))
    log(f"[bench] {name}: running -> {model_dir}")
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    try:
        card = make()
    except BespokeError as exc:
        log(f"[bench] {name}: FAILED: {exc}")
        return ledger.put(StageRecord(**base, status="failed", cpu_s=round(cpu_seconds() - cpu0, 1),
                                      wall_s=round(time.perf_counter() - wall0, 1), message=str(exc)))
    record = StageRecord(**base, status="done", cpu_s=card_cost(card), wall_s=round(time.perf_counter() - wall0, 1))
    log(f"[bench] {name}: done, {record.cpu_s:.0f} CPU-s, {record.wall_s:.0f} s")
    return ledger.put(record)


def complete_dirs(dirs: Sequence[str | Path]) -> bool:
    """Whether every directory holds a card (the commit marker of a model directory)."""
    return all((Path(d) / CARD).is_file() for d in dirs)
