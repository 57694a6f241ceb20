"""Reports: result rows read from model cards, markdown tables, Pareto plots, ``report.md``."""

from bespoke.report.markdown import PLOT_NAME, render_report, write_report
from bespoke.report.plot import pareto_front, pareto_plot
from bespoke.report.rows import (
    LATENCY_1T,
    LATENCY_2T,
    SHARED_COST_PREFIX,
    ResultRow,
    card_method,
    collect_cards,
    is_shared_cost,
    own_cost,
    row_from_card,
)
from bespoke.report.table import delivery_table, markdown_table, results_table

__all__ = [
    "LATENCY_1T",
    "LATENCY_2T",
    "PLOT_NAME",
    "SHARED_COST_PREFIX",
    "ResultRow",
    "card_method",
    "collect_cards",
    "delivery_table",
    "is_shared_cost",
    "markdown_table",
    "own_cost",
    "pareto_front",
    "pareto_plot",
    "render_report",
    "results_table",
    "row_from_card",
    "write_report",
]
