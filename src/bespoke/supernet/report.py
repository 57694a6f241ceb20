"""``OUT/report.md`` and ``OUT/pareto.png`` of a selection (minimal; ``bespoke.report`` may supersede it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bespoke.supernet.efficiency import SubnetCosts
from bespoke.supernet.space import SearchSpace, SubnetConfig
from bespoke.supernet.store import SupernetMeta
from bespoke.utils.atomic import atomic_path, write_text


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def write_pareto(path: Path, rows: Sequence[dict[str, Any]], tables: dict[str, SubnetCosts],
                 samples: Sequence[tuple[SubnetConfig, float]], space: SearchSpace) -> None:
    """Predicted cost vs val accuracy of the predictor's subnets, and the delivered subnets (measured, test)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_table.setdefault(tables[row["target"]].signature, []).append(row)
    fig, axes = plt.subplots(1, len(by_table), figsize=(6 * len(by_table), 4.5), squeeze=False)
    for ax, chosen in zip(axes[0], by_table.values(), strict=True):
        table = tables[chosen[0]["target"]]
        if samples:
            cost = table.predict([c for c, _ in samples])
            ax.scatter(cost, [a for _, a in samples], s=10, c="0.6", label="sampled subnets (pred. cost, val acc)")
        for row in chosen:
            ax.scatter([row["measured_cost"]], [row["accuracy"]], marker="*", s=180, zorder=3,
                       label=f"{row['target']} (measured, test acc)")
            if row["budget_resolved"] is not None:
                ax.axvline(row["budget_resolved"], ls="--", lw=0.8, c="0.3")
        ax.set_xlabel(f"cost ({table.unit}, {table.info.get('runtime', '')})")
        ax.set_ylabel("top-1 accuracy")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(out: Path, rows: Sequence[dict[str, Any]], *, predictor: dict[str, Any], meta: SupernetMeta,
                 tables: dict[str, SubnetCosts], samples: Sequence[tuple[SubnetConfig, float]],
                 space: SearchSpace, failed: dict[str, str] | None = None) -> None:
    """Markdown summary: supernet, predictor quality, one row per target, costs; plus the Pareto plot."""
    job = meta.job.get("train", {})
    lines = [
        "# TOFA supernet selection", "",
        f"Supernet from **{meta.teacher.arch}** ({meta.teacher.source}), data {meta.data.get('spec') or '-'}, "
        f"{meta.data.get('labelled')} labelled + {meta.data.get('unlabelled')} unlabelled images used, "
        f"{job.get('steps')} steps, semi-supervised: {job.get('semi_supervised')}.",
        f"Training cost {meta.cost_cpu_s.get('supernet_train', 0):.0f} CPU-s, paid once for any number of targets. "
        f"Largest / smallest subnet test top-1 after training: {_fmt(meta.eval.get('largest_accuracy'))} / "
        f"{_fmt(meta.eval.get('smallest_accuracy'))}.", "",
        "## Accuracy predictor", "",
        f"MLP on a one-hot architecture encoding, fitted on {predictor.get('n_train')} subnets measured on the val "
        f"split, tested on {predictor.get('n_test')} held-out ones: "
        f"Kendall tau **{_fmt(predictor.get('kendall_tau'))}**, RMSE {_fmt(predictor.get('rmse'))}; "
        f"cost {predictor.get('cpu_s', 0):.0f} CPU-s (once).", "",
        "## Delivered subnets", "",
        "| target | budget | resolved | predicted | measured after export | meets | test top-1 | predicted top-1 "
        "| resolution | depths | params | MACs | search ms | attempts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cfg = SubnetConfig.from_dict(r["config"])
        lines.append(
            f"| {r['target']} | {_fmt(r['budget'])} | {_fmt(r['budget_resolved'])} {r['unit']} | "
            f"{_fmt(r['predicted_cost'])} | {_fmt(r['measured_cost'])} | {'yes' if r['meets_budget'] else '**no**'} | "
            f"{r['accuracy']:.4f} | {r['predicted_accuracy']:.4f} | {cfg.resolution} | {list(cfg.depths)} | "
            f"{_fmt(r['params'])} | {_fmt(r['macs'])} | {r['search_ms']:.1f} | {r['attempts']} |")
    for name, why in (failed or {}).items():
        lines.append(f"| {name} | infeasible: {why} |" + " |" * 12)
    lines += ["", "## Cost tables", ""]
    for sig, table in {t.signature: t for t in tables.values()}.items():
        lines.append(f"- `{sig}`: {table.info.get('n_parts')} parts, {table.table.error_line()}, "
                     f"reference (largest subnet) {_fmt(table.reference)} {table.unit}, "
                     f"{table.info.get('cpu_s', 0):.0f} CPU-s (once per measurement setting)")
    lines += ["", "Search time per target once the predictor and tables exist: "
              + ", ".join(f"{r['target']} {r['search_ms']:.1f} ms" for r in rows) + ".", "",
              "![pareto](pareto.png)", ""]
    write_text(out / "report.md", "\n".join(lines))
    if rows:
        write_pareto(out / "pareto.png", rows, tables, samples, space)
