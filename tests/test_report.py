"""bespoke.report: rows from cards, the markdown table, the Pareto front and plot, report.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bespoke.errors import BespokeError
from bespoke.export import Delivery, ModelCard, write_card
from bespoke.report import (
    LATENCY_1T,
    LATENCY_2T,
    ResultRow,
    collect_cards,
    pareto_front,
    pareto_plot,
    results_table,
    row_from_card,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_card(method: str | None = None, *, accuracy: float = 0.9, lat1: float = 2.0, lat2: float = 1.5,
              target: str | None = None, budget: str | None = None, budget_ms: float | None = None,
              engine: str = "finetune") -> ModelCard:
    delivery = Delivery(target=target, budget=budget, budget_resolved=budget_ms, unit="ms") if target else None
    return ModelCard(arch="tiny", arch_config={"builder": "zoo"}, engine=engine, num_classes=3, resolution=16,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), accuracy=accuracy, params=1_500_000,
                     macs=25_000_000, latency_ms={LATENCY_1T: lat1, LATENCY_2T: lat2}, delivery=delivery,
                     cost_cpu_s={"finetune": 100.0, "export": 5.0, "shared:house": 1.0}, method=method)


@pytest.fixture
def rows() -> list[ResultRow]:
    cards = [make_card("teacher", accuracy=0.92, lat1=3.0, lat2=2.0),
             make_card("donor", accuracy=0.88, lat1=1.7, lat2=1.2),
             make_card("pruned+KD", accuracy=0.86, lat1=1.4, lat2=1.0, target="t50", budget="0.5x", budget_ms=1.5),
             make_card("pruned+KD", accuracy=0.80, lat1=1.2, lat2=0.9, target="t35", budget="0.35x", budget_ms=1.05),
             make_card("bespoke", accuracy=0.87, lat1=1.0, lat2=0.8, target="t35", budget="0.35x", budget_ms=1.05,
                       engine="bespoke")]
    return [row_from_card(c, f"dir{i}") for i, c in enumerate(cards)]


def test_row_from_card_reads_method_latency_and_cost() -> None:
    row = row_from_card(make_card("donor"), "x")
    assert row.method == "donor"
    assert (row.latency_1t_ms, row.latency_2t_ms) == (2.0, 1.5)
    assert row.cost_cpu_s == pytest.approx(105.0)  # shared: entries are not the model's own
    assert row_from_card(make_card(None, engine="tofa"), "x").method == "tofa:tiny"


def test_within_budget_marks_over_budget_rows() -> None:
    over = row_from_card(make_card(lat1=1.2, target="t", budget="0.35x", budget_ms=1.05))
    under = row_from_card(make_card(lat1=1.0, target="t", budget="0.35x", budget_ms=1.05))
    assert over.within_budget is False and under.within_budget is True
    assert row_from_card(make_card()).within_budget is None
    assert "1.200 (over)" in results_table([over])


def test_collect_cards_walks_dirs_and_skips_incomplete(tmp_path: Path) -> None:
    write_card(tmp_path / "a", make_card("alpha"))
    write_card(tmp_path / "nested" / "b", make_card("beta"))
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "model.onnx").write_bytes(b"")
    found = collect_cards(tmp_path)
    assert [r.method for r in found] == ["alpha", "beta"]
    assert found[0].path == str(tmp_path / "a")
    with pytest.raises(BespokeError):
        collect_cards(tmp_path / "missing")


def test_results_table_has_every_column(rows: list[ResultRow]) -> None:
    text = results_table(rows)
    lines = text.strip().splitlines()
    assert lines[0] == ("| method | target | budget | top-1 | latency 1T ms | latency 2T ms | pred ms | params | "
                        "MACs | cost CPU-s |")
    assert len(lines) == 2 + len(rows)
    assert "| pruned+KD | t50 | 0.5x (= 1.5 ms) | 0.8600 | 1.400 | 1.000 | - | 1.50 M | 25.00 M | 105 |" in text
    assert all(line.count("|") == 11 for line in lines)


def test_pareto_front_keeps_non_dominated_points() -> None:
    points = [(3.0, 92.0), (1.7, 88.0), (1.4, 86.0), (1.2, 80.0), (1.0, 87.0), (2.0, 85.0)]
    assert pareto_front(points) == [4, 1, 0]
    assert pareto_front([]) == []


def test_pareto_plot_writes_png_atomically(tmp_path: Path, rows: list[ResultRow]) -> None:
    path = pareto_plot(rows, tmp_path / "p.png", {"t50": 1.5, "t35": 1.05}, title="test")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary file left behind


def test_pareto_plot_without_measured_rows(tmp_path: Path) -> None:
    row = ResultRow(method="m", arch="a", engine="e")
    assert pareto_plot([row], tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC


def test_write_report(tmp_path: Path, rows: list[ResultRow]) -> None:
    path = write_report(tmp_path / "out", rows, "My report", {"Notes": "hello"}, budgets_ms={"t35": 1.05})
    text = path.read_text()
    assert path.name == "report.md" and text.startswith("# My report\n")
    assert "![accuracy vs latency](pareto.png)" in text and "## Notes\n\nhello" in text
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:8] == PNG_MAGIC


def test_shared_cost_keys_are_not_the_models_own(tmp_path) -> None:
    """One spelling (``shared:``); a format-1 card's ``house (shared by all targets)`` is read as ``shared:house``."""
    import json

    from bespoke.export import read_card
    from bespoke.report import is_shared_cost, own_cost

    assert is_shared_cost("shared:supernet_train") and not is_shared_cost("retrain")
    card = make_card().model_copy(update={"cost_cpu_s": {"search": 2.0, "shared:house": 50.0}})
    assert own_cost(card) == 2.0
    old = {**json.loads(card.model_dump_json()), "card_format": 1, "method": "m",
           "cost_cpu_s": {"search": 2.0, "house (shared by all targets)": 50.0}}
    (tmp_path / "card.json").write_text(json.dumps(old))
    assert own_cost(read_card(tmp_path)) == 2.0 and read_card(tmp_path).cost_cpu_s["shared:house"] == 50.0
