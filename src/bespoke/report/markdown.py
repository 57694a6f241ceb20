"""``report.md`` + ``pareto.png``: the results table, the plot and any extra sections, written atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bespoke.report.plot import pareto_plot
from bespoke.report.rows import ResultRow
from bespoke.report.table import results_table
from bespoke.utils.atomic import write_text

PLOT_NAME = "pareto.png"
STANDARD_LEGEND = ("Test top-1 on the test split; latency = median of ONNX Runtime (CPU, batch 1) runs of the "
                   "exported `model.onnx` at 1 and 2 threads; pred = the engine's own latency prediction, on the "
                   "scale of the 1-thread column; cost = CPU-seconds (user + system) of the stages that made the "
                   "model.")


def render_report(rows: Sequence[ResultRow], title: str, extra_sections: Mapping[str, str] | None = None, *,
                  plot_name: str | None = PLOT_NAME, legend: str = STANDARD_LEGEND) -> str:
    """Markdown: title, results table (``legend`` says what its columns measured), the plot (when
    ``plot_name``), then ``extra_sections`` in order."""
    parts = [f"# {title}", "", "## Results", "", legend, "", results_table(rows)]
    if plot_name:
        parts += [f"![accuracy vs latency]({plot_name})", ""]
    for heading, body in (extra_sections or {}).items():
        parts += [f"## {heading}", "", body.rstrip(), ""]
    return "\n".join(parts).rstrip() + "\n"


def write_report(out_dir: str | Path, rows: Sequence[ResultRow], title: str,
                 extra_sections: Mapping[str, str] | None = None, *,
                 budgets_ms: Mapping[str, float] | None = None, name: str = "report.md",
                 legend: str = STANDARD_LEGEND) -> Path:
    """Write ``out_dir/<name>`` (markdown) and ``out_dir/pareto.png``; return the markdown's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pareto_plot(rows, out_dir / PLOT_NAME, budgets_ms, title=title)
    path = out_dir / name
    write_text(path, render_report(rows, title, extra_sections, legend=legend))
    return path
