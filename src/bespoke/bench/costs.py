"""Cost of delivering K targets, per method, from the measured per-stage CPU-seconds.

cost(K) = preparation + K x per-target, where

* preparation = the method's one-off stages (a donor's fine-tune, an engine's shared work) + the one-off
  stages it builds on, and those they build on (the teacher's fine-tune for pruning + KD and for the engines;
  the labelled-share teacher under the semi-supervised one);
* per-target = the mean cost of the method's per-target stages (pruning search + KD retraining for one
  budget; an engine's per-target search / extraction / retraining), measured on the benchmark's targets and
  extrapolated linearly to K targets. A method without per-target stages (a donor) costs the same for any K
  (it is one model, whether or not it meets each budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import mean
from typing import Any

from bespoke.bench.stages import StageRecord
from bespoke.report import markdown_table

DEFAULT_KS = (1, 5, 20)
_OK = ("done", "skipped")


@dataclass(frozen=True)
class MethodCost:
    """Preparation and per-target CPU-seconds of one method, and what K targets cost."""

    method: str
    preparation_cpu_s: float
    per_target_cpu_s: float
    targets_measured: int
    preparation_from: list[str] = field(default_factory=list)
    ks: tuple[int, ...] = DEFAULT_KS

    def cost(self, k: int) -> float:
        return self.preparation_cpu_s + k * self.per_target_cpu_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost_cpu_s": {str(k): round(self.cost(k), 1) for k in self.ks}}


def method_costs(records: Sequence[StageRecord], ks: Sequence[int] = DEFAULT_KS) -> list[MethodCost]:
    """One :class:`MethodCost` per method that has at least one successful stage, in first-seen order."""
    by_name = {r.name: r for r in records}
    out = []
    for method in dict.fromkeys(r.method for r in records):
        recs = [r for r in records if r.method == method and r.status in _OK]
        if not recs:
            continue
        one_off = [r for r in recs if r.role == "one-off"]
        per_target = [r.cpu_s or 0.0 for r in recs if r.role == "per-target"]
        used = _built_on([u for r in recs for u in r.uses], by_name)
        prep_records = [*used, *one_off]
        out.append(MethodCost(method=method, preparation_cpu_s=round(sum(r.cpu_s or 0.0 for r in prep_records), 1),
                              per_target_cpu_s=round(mean(per_target), 1) if per_target else 0.0,
                              targets_measured=len(per_target), preparation_from=[r.name for r in prep_records],
                              ks=tuple(ks)))
    return out


def _built_on(names: Sequence[str], by_name: dict[str, StageRecord]) -> list[StageRecord]:
    """The records named, and the ones they use in turn (each once, in first-seen order)."""
    found: dict[str, StageRecord] = {}
    queue = list(names)
    while queue:
        name = queue.pop(0)
        if name in found or name not in by_name:
            continue
        found[name] = by_name[name]
        queue.extend(by_name[name].uses)
    return list(found.values())


def costs_markdown(costs: Sequence[MethodCost], ks: Sequence[int] = DEFAULT_KS) -> str:
    """The cost table plus one line saying how it is computed."""
    header = ["method", "preparation CPU-s (stages)", "per target CPU-s (n measured)",
              *[f"K={k} CPU-s" for k in ks]]
    rows = [[c.method, f"{c.preparation_cpu_s:.0f} ({' + '.join(c.preparation_from) or '-'})",
             f"{c.per_target_cpu_s:.0f} ({c.targets_measured})", *[f"{c.cost(k):.0f}" for k in ks]]
            for c in costs]
    how = ("cost(K) = preparation + K x per-target. Preparation: the method's one-off stages plus those it "
           "builds on (the teacher's fine-tune for pruning + KD and the engines). Per target: the mean measured "
           "cost of the method's per-target stages, extrapolated linearly beyond the targets actually run. "
           "Donors are one model for all targets (constant in K, whether or not they meet each budget).")
    return markdown_table(header, rows) + "\n" + how + "\n"
