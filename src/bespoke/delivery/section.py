"""The one writer of a card's delivery section."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bespoke.export import Delivery, ModelCard, update_card
from bespoke.targets import Measurement, Target


def write_delivery(directory: str | Path, target: Target | tuple[str, str | None, str], *, budget: float | None,
                   readings: Sequence[Measurement | float], predicted: float | None = None, attempts: int = 1,
                   reference: float | None = None) -> ModelCard:
    """Record in ``directory``'s card how its model was delivered for ``target`` (a :class:`Target`, or its name,
    budget as written and unit).

    ``budget``: the resolved budget, ``readings``: the measurements after export and ``predicted``: the cost
    model's value, all on the scale where the engine's reference model takes ``reference``. The card's latency
    fields get the last reading (a :class:`Measurement`; a bare value is a reading without details) and, for ms,
    the median of all as the target's latency.
    """
    name, written, unit = ((target.name, None if target.budget is None else str(target.budget), target.unit)
                           if isinstance(target, Target) else target)
    values = [float(getattr(m, "value", m)) for m in readings]
    delivery = Delivery(target=name, budget=written, budget_resolved=budget, unit=unit, predicted=predicted,
                        readings=values, attempts=attempts, reference=reference)
    fields: dict = {"delivery": delivery.model_dump(mode="json")}
    if readings and isinstance(readings[-1], Measurement):
        fields["latency"] = {name: readings[-1].model_dump(mode="json")}
    if unit == "ms" and delivery.measured is not None:
        fields["latency_ms"] = {name: round(delivery.measured, 4)}
    return update_card(directory, **fields)
