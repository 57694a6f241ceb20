"""Result rows: one delivered model as the report sees it, read from its card (never from the weights)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bespoke.errors import BespokeError
from bespoke.export import CARD, SHARED_COST_PREFIX, ModelCard, read_card

#: ``card.latency_ms`` keys of the two standard measurements: ONNX Runtime, CPU, batch 1, 1 and 2 threads.
LATENCY_1T = "ort-cpu-1t"
LATENCY_2T = "ort-cpu-2t"


def is_shared_cost(key: str) -> bool:
    """Whether a ``cost_cpu_s`` key is preparation shared by several models (``shared:house``), not the model's own
    cost (cards of format 1 spelled the block engine's ``house (shared by all targets)``: read as ``shared:house``)."""
    return key.startswith(SHARED_COST_PREFIX)


@dataclass(frozen=True)
class ResultRow:
    """One delivered model: what it is, what it was made for, what it measures and what it cost."""

    method: str
    arch: str
    engine: str
    target: str | None = None
    budget: str | None = None
    budget_value: float | None = None
    budget_unit: str | None = None
    accuracy: float | None = None
    latency_1t_ms: float | None = None
    latency_2t_ms: float | None = None
    pred_ms: float | None = None
    params: int | None = None
    macs: int | None = None
    cost_cpu_s: float | None = None
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def within_budget(self) -> bool | None:
        """Whether the measured 1-thread latency meets an ms budget (``None`` when not decidable)."""
        if self.budget_unit != "ms" or self.budget_value is None or self.latency_1t_ms is None:
            return None
        return self.latency_1t_ms <= self.budget_value


def card_method(card: ModelCard) -> str:
    """The label a card asks to be reported under: its ``method`` field, else ``engine:arch``."""
    return card.method or f"{card.engine}:{card.arch}"


def own_cost(card: ModelCard) -> float | None:
    """The model's own CPU-seconds: the card's per-stage costs without ``shared:`` entries (``None``: none)."""
    own = [v for k, v in card.cost_cpu_s.items() if not is_shared_cost(k)]
    return round(float(sum(own)), 1) if own else None


def row_from_card(card: ModelCard, path: str | Path = "", *, method: str | None = None,
                  latency_1t_key: str = LATENCY_1T, latency_2t_key: str = LATENCY_2T) -> ResultRow:
    """A :class:`ResultRow` from a model card; cost is :func:`own_cost`."""
    return ResultRow(
        method=method or card_method(card), arch=card.arch, engine=card.engine, target=card.target,
        budget=card.budget, budget_value=card.budget_resolved, budget_unit=card.budget_unit,
        accuracy=card.accuracy, latency_1t_ms=card.latency_ms.get(latency_1t_key),
        latency_2t_ms=card.latency_ms.get(latency_2t_key), pred_ms=card.latency_pred_ms, params=card.params,
        macs=card.macs, cost_cpu_s=own_cost(card),
        path=str(path),
    )


def collect_cards(root: str | Path) -> list[ResultRow]:
    """Rows of every complete model directory (one holding ``card.json``) under ``root``, sorted by path.

    Incomplete directories (no card yet) are skipped; an unreadable card raises ``BespokeError``.
    """
    root = Path(root)
    if not root.is_dir():
        raise BespokeError(f"not a directory: {root}", "give the output folder of a bespoke run")
    dirs = sorted({p.parent for p in root.rglob(CARD)})
    return [row_from_card(read_card(d), d) for d in dirs]
