"""What a selection's ``report.md`` shows beyond the results table: the supernet, the accuracy predictor's quality,
the choice per target; written through :func:`bespoke.report.write_report`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bespoke.export import read_card
from bespoke.report import markdown_table, row_from_card, write_report
from bespoke.supernet.efficiency import SubnetCosts
from bespoke.supernet.space import SubnetConfig
from bespoke.supernet.store import SupernetMeta

TITLE = "TOFA supernet selection"
LEGEND = ("Test top-1 on the test split; the latency columns hold each model's measured median on its own "
          "target (batch and threads as that target says); pred = the cost table's prediction; cost = "
          "CPU-seconds (user + system) of the model's own selection.")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def selection_sections(choices: Sequence[dict[str, Any]], *, predictor: Mapping[str, Any], meta: SupernetMeta,
                       failed: Mapping[str, str] | None = None,
                       tables: Mapping[str, SubnetCosts] | None = None) -> dict[str, str]:
    """The supernet, predictor quality and per-target choice sections, as markdown by heading (budgets,
    predictions and readings in each target's unit)."""
    job = meta.job.get("train", {})
    supernet = (
        f"Supernet from **{meta.teacher.arch}** ({meta.teacher.source}), data {meta.data.get('spec') or '-'}, "
        f"{meta.data.get('labelled')} labelled + {meta.data.get('unlabelled')} unlabelled images used, "
        f"{job.get('steps')} steps, semi-supervised: {job.get('semi_supervised')}. "
        f"Training cost {meta.cost_cpu_s.get('supernet_train', 0):.0f} CPU-s, paid once for any number of targets. "
        f"Largest / smallest subnet test top-1 after training: {_fmt(meta.eval.get('largest_accuracy'))} / "
        f"{_fmt(meta.eval.get('smallest_accuracy'))}.")
    quality = (
        f"MLP on a one-hot architecture encoding, fitted on {predictor.get('n_train')} subnets measured on the val "
        f"split, tested on {predictor.get('n_test')} held-out ones: "
        f"Kendall tau **{_fmt(predictor.get('kendall_tau'))}**, RMSE {_fmt(predictor.get('rmse'))}; "
        f"cost {predictor.get('cpu_s', 0):.0f} CPU-s (once).")
    header = ["target", "budget", "resolved", "predicted", "measured after export", "meets", "test top-1",
              "predicted top-1", "resolution", "depths", "search ms", "attempts"]
    rows = []
    for c in choices:
        cfg = SubnetConfig.from_dict(c["config"])
        rows.append([c["target"], _fmt(c["budget"]), f"{_fmt(c['budget_resolved'])} {c['unit']}",
                     _fmt(c["predicted_cost"]), _fmt(c["measured_cost"]), "yes" if c["meets_budget"] else "**no**",
                     f"{c['accuracy']:.4f}", f"{c['predicted_accuracy']:.4f}", str(cfg.resolution),
                     str(list(cfg.depths)), f"{c['search_ms']:.1f}", str(c["attempts"])])
    rows += [[name, f"infeasible: {why}", *["-"] * (len(header) - 2)] for name, why in (failed or {}).items()]
    sections = {"Supernet": supernet, "Accuracy predictor": quality, "Per-target choice": markdown_table(header, rows)}
    if tables:
        sections["Cost tables"] = "\n".join(
            f"- `{sig}`: {t.info.get('n_parts')} parts, {t.table.error_line()}, reference (largest subnet) "
            f"{_fmt(t.reference)} {t.unit}, {t.info.get('cpu_s', 0):.0f} CPU-s (once per measurement setting)"
            for sig, t in {t.signature: t for t in tables.values()}.items())
    return sections


def write_selection_report(out: Path, choices: Sequence[dict[str, Any]], *, predictor: Mapping[str, Any],
                           meta: SupernetMeta, failed: Mapping[str, str] | None = None,
                           tables: Mapping[str, SubnetCosts] | None = None) -> Path:
    """``OUT/report.md`` + ``OUT/pareto.png``: a results row per delivered model directory (read from its card,
    latency = its own target's measured median), then :func:`selection_sections`."""
    rows = [row_from_card(read_card(c["model_dir"]), c["model_dir"], method="tofa", latency_1t_key=c["target"],
                          latency_2t_key="") for c in choices]
    budgets = {r.target: r.budget_value for r in rows if r.target and r.budget_unit == "ms" and r.budget_value}
    sections = selection_sections(choices, predictor=predictor, meta=meta, failed=failed, tables=tables)
    return write_report(out, rows, TITLE, sections, budgets_ms=budgets, legend=LEGEND)
