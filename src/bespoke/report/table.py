"""Markdown tables of result rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bespoke.export import ModelCard
from bespoke.report.rows import ResultRow

_DASH = "-"


def _num(value: float | None, fmt: str) -> str:
    return _DASH if value is None else format(value, fmt)


def _millions(value: int | None) -> str:
    return _DASH if value is None else f"{value / 1e6:.2f} M"


def _budget(row: ResultRow) -> str:
    if row.budget is None:
        return _DASH
    if row.budget_value is None:
        return row.budget
    unit = f" {row.budget_unit}" if row.budget_unit else ""
    return f"{row.budget} (= {row.budget_value:.3g}{unit})"


def _latency(value: float | None, row: ResultRow, *, check: bool) -> str:
    text = _num(value, ".3f")
    if check and row.within_budget is False:
        text += " (over)"
    return text


COLUMNS: tuple[tuple[str, Callable[[ResultRow], str]], ...] = (
    ("method", lambda r: r.method),
    ("target", lambda r: r.target or _DASH),
    ("budget", _budget),
    ("top-1", lambda r: _num(r.accuracy, ".4f")),
    ("latency 1T ms", lambda r: _latency(r.latency_1t_ms, r, check=True)),
    ("latency 2T ms", lambda r: _latency(r.latency_2t_ms, r, check=False)),
    ("pred ms", lambda r: _num(r.pred_ms, ".3f")),
    ("params", lambda r: _millions(r.params)),
    ("MACs", lambda r: _millions(r.macs)),
    ("cost CPU-s", lambda r: _num(r.cost_cpu_s, ".0f")),
)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (``|`` in cells escaped)."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join("---" for _ in header) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def results_table(rows: Sequence[ResultRow]) -> str:
    """Markdown: method, target, budget, top-1, latency 1T/2T ms, predicted ms, params, MACs, cost CPU-s.

    Latency is ONNX Runtime on CPU at batch 1; "(over)" marks a 1-thread latency above an ms budget.
    """
    return markdown_table([name for name, _ in COLUMNS], [[fn(r) for _, fn in COLUMNS] for r in rows])


def delivery_table(cards: Sequence[ModelCard]) -> str:
    """Markdown: per delivered model with a prediction, its target, resolved budget, the cost model's prediction,
    the measured median after export (the target's own runtime and unit), the prediction's error, the verdict."""
    rows = []
    for card in cards:
        d = card.delivery
        if d is None or d.predicted is None or not d.measured:
            continue
        budget = "-" if d.budget_resolved is None else f"{d.budget_resolved:.4g} {d.unit}"
        rows.append([d.target, budget, f"{d.predicted:.4g}", f"{d.measured:.4g}",
                     f"{100 * (d.predicted - d.measured) / d.measured:+.1f}%", str(d.meets_budget)])
    return markdown_table(["target", "budget", "predicted", "measured", "error", "meets budget"], rows)
