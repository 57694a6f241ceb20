"""Pareto plot: test accuracy against measured latency, one marker per method, budgets as dashed lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bespoke.report.rows import ResultRow
from bespoke.utils.atomic import atomic_path

# tab10 colours and distinct markers: a method stays recognisable in grey print too
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points no other point beats (faster-or-equal and more accurate)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_plot(rows: Sequence[ResultRow], path: str | Path, budgets_ms: Mapping[str, float] | None = None, *,
                title: str = "Accuracy vs latency", threads: int = 1) -> Path:
    """Save a PNG of test top-1 vs measured ONNX Runtime latency (batch 1, ``threads`` 1 or 2) atomically.

    Rows without accuracy or latency are left out. The Pareto front over all plotted models is drawn as a step
    line with its points ringed; every ``budgets_ms`` entry (target name -> ms) is a labelled dashed line.
    """
    path = Path(path)
    pts = [(r, r.latency_1t_ms if threads == 1 else r.latency_2t_ms) for r in rows]
    points = [(r, x, 100.0 * r.accuracy) for r, x in pts if x is not None and r.accuracy is not None]
    fig = Figure(figsize=(9.5, 6), dpi=120)  # no pyplot: no global figure state, no display needed
    ax = fig.subplots()
    markers, colours = cycle(_MARKERS), cycle(_COLOURS)
    for method in dict.fromkeys(r.method for r, _, _ in points):
        xs = [x for r, x, _ in points if r.method == method]
        ys = [y for r, _, y in points if r.method == method]
        ax.scatter(xs, ys, marker=next(markers), color=next(colours), s=55, label=method, zorder=3)
    if points:
        front = [points[i] for i in pareto_front([(x, y) for _, x, y in points])]
        fx, fy = [x for _, x, _ in front], [y for _, _, y in front]
        ax.step(fx, fy, where="post", color="0.35", linewidth=1.2, zorder=2, label="Pareto front")
        ax.scatter(fx, fy, s=170, facecolors="none", edgecolors="black", linewidths=1.3, zorder=4)
    else:
        ax.text(0.5, 0.5, "no measured models", ha="center", va="center", transform=ax.transAxes)
    _draw_budgets(ax, budgets_ms or {})
    plural = "s" if threads > 1 else ""
    ax.set_xlabel(f"measured latency: ONNX Runtime, CPU, batch 1, {threads} thread{plural} [ms]")
    ax.set_ylabel("test top-1 accuracy [%]")
    ax.set_title(title, pad=26 if budgets_ms else 6)
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _draw_budgets(ax: Axes, budgets_ms: Mapping[str, float]) -> None:
    """Dashed vertical lines, labelled just above the plot area (never on top of a data point)."""
    if budgets_ms:
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, *budgets_ms.values()) * 0.95, max(hi, *budgets_ms.values()) * 1.05)
    for i, (name, ms) in enumerate(sorted(budgets_ms.items(), key=lambda kv: kv[1])):
        ax.axvline(ms, color="tab:red", linestyle="--", linewidth=1.0, alpha=0.7, zorder=1)
        ax.annotate(f"{name}: {ms:.3g} ms", xy=(ms, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 3 + 9 * (i % 2)), textcoords="offset points", ha="center", va="bottom",
                    fontsize=7, color="tab:red")
