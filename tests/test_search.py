"""bespoke.search: annealing (seeded, within budget, infeasible budgets), incremental accuracy, latency tables,
house build resume, diverging alternatives, and an end-to-end tiny run producing a model directory."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

import bespoke.house.build as build_module
from bespoke.cost import CostTable
from bespoke.errors import BespokeError
from bespoke.export import load_model_dir, read_card
from bespoke.house import HouseCosts, build_house
from bespoke.quantize import PTQSearch, QATConfig
from bespoke.search import (
    AnnealConfig,
    Candidate,
    Problem,
    anneal,
    check_feasible,
    search_and_deliver,
)
from bespoke.search.annealing import greedy_initial
from bespoke.search.estimator import AccuracyEstimator
from bespoke.targets import targets_from_dicts
from bespoke.train import FinetuneConfig
from tests.test_house_helpers import R, house_kwargs, one_thread, splits

#: one quantization setting, without the speed rule (a tiny graph is not faster in INT8)
ONE_PTQ = PTQSearch(formats=("QOperator",), weight_types=("uint8",), methods=("MinMax",), reduce_range=(False,),
                    min_speedup=0, max_excluded=0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def synthetic_problem(n_segments: int = 12, n_candidates: int = 40, seed: int = 0) -> tuple[Problem, dict]:
    rng = random.Random(seed)
    costs = [rng.uniform(0.5, 2.0) for _ in range(n_segments)]
    cands, drops = [], {}
    for i in range(n_candidates):
        start = rng.randrange(n_segments - 1)
        end = min(n_segments - 1, start + rng.randint(1, 3))
        cost = sum(costs[start:end]) * rng.uniform(0.2, 0.9)
        drops[f"c{i}"] = rng.uniform(0.0, 0.05)
        cands.append(Candidate(f"c{i}", start, end, cost, 0.9 - drops[f"c{i}"]))
    return Problem(costs, cands, overhead=0.3), drops


def accuracy_of(drops: dict):
    return lambda sol: 0.9 - sum(drops[a] for a in sol) - 0.01 * len(sol) ** 1.5 / 10


def test_anneal_is_deterministic_and_respects_the_budget():
    problem, drops = synthetic_problem()
    teacher_cost = problem.cost([])
    budget = 0.6 * teacher_cost
    cfg = AnnealConfig(iterations=300, seed=3)
    a = anneal(problem, budget, accuracy_of(drops), cfg, teacher_accuracy=0.9)
    b = anneal(problem, budget, accuracy_of(drops), cfg, teacher_accuracy=0.9)
    assert a.solution == b.solution and a.history == b.history
    assert a.cost <= budget and problem.cost(a.solution) == pytest.approx(a.cost)
    for x in a.solution:  # no overlaps
        assert not any(problem.overlaps(x, y) for y in a.solution if y != x)
    greedy = greedy_initial(problem, budget, 0.9)
    assert problem.cost(greedy) <= budget
    assert a.accuracy >= accuracy_of(drops)(greedy) - 1e-9, "annealing never returns worse than its start"


def test_infeasible_budget_names_the_smallest_reachable_value():
    problem, _ = synthetic_problem()
    lowest, cheapest = problem.cheapest()
    assert problem.cost(cheapest) == pytest.approx(lowest)
    # brute force agrees on a small instance
    small, _ = synthetic_problem(n_segments=6, n_candidates=8, seed=1)
    ids = sorted(small.by_id)
    best = min(small.cost(s) for s in _all_solutions(small, ids))
    assert small.cheapest()[0] == pytest.approx(best)
    with pytest.raises(BespokeError, match=f"smallest reachable value is {lowest:.4g}"):
        check_feasible(problem, lowest * 0.99, unit="ms")
    with pytest.raises(BespokeError, match="smallest reachable"):
        anneal(problem, lowest * 0.5, lambda s: 0.5, AnnealConfig(iterations=5), teacher_accuracy=0.9)


def _all_solutions(problem, ids, chosen=()):
    yield frozenset(chosen)
    for i, a in enumerate(ids):
        if not any(problem.overlaps(a, b) for b in chosen):
            yield from _all_solutions(problem, ids[i + 1:], (*chosen, a))


def test_knapsack_start_is_feasible_and_near_optimal_under_the_additive_model():
    from bespoke.search.annealing import _drop, knapsack_initial

    problem, _ = synthetic_problem(n_segments=7, n_candidates=10, seed=4)
    budget = 0.7 * problem.cost([])
    start = knapsack_initial(problem, budget, 0.9, grid=2000)
    assert start is not None and problem.cost(start) <= budget

    def total(sol):
        return sum(_drop(problem.by_id[a], 0.9) for a in sol)

    feasible = [s for s in _all_solutions(problem, sorted(problem.by_id)) if problem.cost(s) <= budget]
    assert total(start) <= min(total(s) for s in feasible) + 0.02
    assert knapsack_initial(problem, problem.overhead * 0.5, 0.9) is None


def house_costs(tmp_path, teacher: float, segments: list[float], alternatives: dict[str, float],
                aggregate: str = "sum") -> HouseCosts:
    """A house's view of a hand-made shared cost table (teacher as the reference point)."""
    keys = [f"seg{i}" for i in range(len(segments))]
    table = CostTable(settings={}, unit="ms" if aggregate == "sum" else "bytes", aggregate=aggregate,
                      reference=teacher, parts={**dict(zip(keys, segments, strict=True)), **alternatives})
    table.set_reference("teacher", keys)
    return HouseCosts(table, keys, {a: a for a in alternatives}, tmp_path)


def test_latency_table_prediction(tmp_path):
    table = house_costs(tmp_path, 10.0, [2.0, 3.0, 4.0], {"a": 1.0})
    assert table.table.line == (1.0, pytest.approx(1.0))
    assert table.predict({}) == pytest.approx(10.0)
    assert table.predict({"a": (0, 2)}) == pytest.approx(1.0 + 4.0 + 1.0)
    peak = house_costs(tmp_path, 5.0, [2.0, 5.0], {"a": 1.0}, aggregate="max")
    assert peak.predict({"a": (1, 2)}) == pytest.approx(2.0)


def test_calibrated_whole_model_line_through_teacher_and_students(tmp_path):
    table = house_costs(tmp_path, 12.0, [3.0, 3.0, 2.0], {"a": 0.5, "b": 1.0})
    assert table.table.line == (1.0, pytest.approx(4.0))  # teacher: parts 8 + overhead 4
    table.add_calibration({"a": (0, 2)}, measured=3.75)  # parts 0.5 + 2.0 = 2.5: on the line 1.5 x parts
    table.add_calibration({"b": (2, 3)}, measured=10.5)  # parts 7.0: on the line too
    table.add_calibration({"a": (0, 1)}, measured=8.25)  # parts 0.5 + 3.0 + 2.0 = 5.5: on the line too
    table.add_calibration({"a": (0, 2), "b": (2, 3)}, measured=9.0)  # parts 1.5: one odd point
    slope, intercept = table.table.line
    assert slope == pytest.approx(1.5) and intercept == pytest.approx(0.0)  # Theil-Sen: the odd point is ignored
    assert table.predict({}) == pytest.approx(12.0) and table.predict({"a": (0, 2)}) == pytest.approx(3.75)
    problem = Problem(table.segments, [Candidate("a", 0, 2, 0.5, 0.8, 5), Candidate("b", 2, 3, 1.0, 0.8, 10)],
                      4.0, whole=table.table.whole)
    assert problem.cost(["a"]) == pytest.approx(table.predict({"a": (0, 2)}))
    lowest, cheapest = problem.cheapest()
    assert lowest == pytest.approx(problem.cost(cheapest)) and cheapest == {"a", "b"}
    assert problem.parts_room(6.0) == pytest.approx(4.0)  # 1.5 x 4 = 6
    assert Problem([1.0], [], 0.5).parts_room(3.0) == pytest.approx(2.5)


def test_incremental_estimator_matches_full_evaluation():
    from bespoke.graph import segment_model
    from tests.test_house_helpers import teacher

    model, _ = teacher()
    seg = segment_model(model, (3, R, R))
    blocks = [i for i in range(1, len(seg) - 1) if seg.shapes[i] == seg.shapes[i + 1]]
    torch.manual_seed(0)
    mods = {f"m{i}": nn.Conv2d(seg.shapes[i][0], seg.shapes[i][0], 1).eval() for i in blocks}
    spans = {f"m{i}": (i, i + 1) for i in blocks}
    images, labels = torch.randn(20, 3, R, R), torch.randint(0, 4, (20,))
    est = AccuracyEstimator(seg, spans, lambda a: mods[a], images, labels, chunk=8)
    assert est.teacher.agreement == 1.0 and est.teacher.kl == pytest.approx(0.0, abs=1e-6)
    ids = sorted(mods)
    for sol in [ids[:1], ids[1:3], ids[:2], ids[-1:], []]:
        got = est.evaluate(sol)
        est.commit(sol)
        x = images
        with torch.no_grad():
            for i, part in enumerate(seg.segments):
                x = mods[f"m{i}"](x) if f"m{i}" in sol else part(x)
        assert got.accuracy == (x.argmax(1) == labels).float().mean().item()
    assert est.segments_run < len(seg) * est.evaluations, "later candidates reuse the cached prefix"


def test_house_resumes_without_retraining_finished_alternatives(tmp_path, monkeypatch):
    calls = []
    real = build_module.distill_group

    def interrupted(seg, jobs, *args, **kwargs):
        calls.append([j.id for j in jobs])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(seg, jobs, *args, **kwargs)

    monkeypatch.setattr(build_module, "distill_group", interrupted)
    kwargs = house_kwargs(out=tmp_path / "house", distill=build_module.DistillConfig(group_size=4))
    with pytest.raises(KeyboardInterrupt):
        build_house(**kwargs)
    index = json.loads((tmp_path / "house" / "index.json").read_text())
    done = {e["id"]: e for e in index["entries"] if e["status"] == "done"}
    assert sorted(done) == sorted(calls[0]) and len(done) == 4
    stamps = {a: (tmp_path / "house" / e["file"]).stat().st_mtime_ns for a, e in done.items()}
    calls.clear()
    house = build_house(**kwargs)
    assert calls == [[e.id for e in house.entries() if e.id not in done]], "only the unfinished group trains"
    assert house.index.counts() == {"done": 8}
    for a in done:
        assert (tmp_path / "house" / house.index.get(a).file).stat().st_mtime_ns == stamps[a]
    with pytest.raises(BespokeError, match="planned with size"):
        build_house(**{**kwargs, "size": 9})


def test_diverging_alternative_is_dropped_and_logged(tmp_path, monkeypatch):
    real = build_module.build_alternative

    class Explode(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) * float("inf")

    def sometimes_nan(recipe, sources):
        module = real(recipe, sources)
        return Explode(module) if recipe.id == "a0001" else module

    monkeypatch.setattr(build_module, "build_alternative", sometimes_nan)
    house = build_house(**house_kwargs(out=tmp_path / "h", size=4))
    entry = house.index.get("a0001")
    assert entry.status == "diverged" and "step 0" in entry.error and entry.file is None
    assert "a0001" not in {e.id for e in house.entries("done")} and len(house.entries("done")) == 3
    saved = json.loads((tmp_path / "h" / "index.json").read_text())
    assert [e["status"] for e in saved["entries"]].count("diverged") == 1


def test_end_to_end_tiny_run_writes_model_directories(tmp_path):
    # The ort1 budget is loose on purpose: this checks the latency path, and a tiny model timed on a busy machine
    # (parts summed vs. the whole teacher timed 3 times) is too noisy for a tight one.
    targets = targets_from_dicts([
        {"name": "macs", "runtime": "macs", "budget": "0.97x"},
        {"name": "ort1", "runtime": "onnxruntime", "threads": 1, "budget": "20x", "warmup": 1, "repeats": 3},
        {"name": "ort1-int8", "runtime": "onnxruntime", "precision": "int8", "budget": "20x", "warmup": 1,
         "repeats": 3},
    ])
    data = splits()
    house = build_house(**house_kwargs(out=tmp_path / "house", data=data, targets=targets))
    assert house.index.counts() == {"done": 8}
    assert house.index.memory["batch_activation_bytes"] > 0 and house.index.memory["max_rss_mb"] > 0
    assert list((tmp_path / "house" / "latency").glob("*.json"))
    cards = search_and_deliver(house, targets, out=tmp_path / "out", data=data, eval_images=32,
                               anneal_config=AnnealConfig(iterations=15),
                               retrain=FinetuneConfig(epochs=1, batch_size=32, kd_weight=0.5), ptq=ONE_PTQ,
                               agreement_threshold=0.0, qat=QATConfig(calibration_batches=1))
    assert [c.target for c in cards] == ["macs", "ort1", "ort1-int8"]
    macs = read_card(tmp_path / "out" / "macs")
    assert macs.engine == "bespoke" and macs.budget == "0.97x" and macs.accuracy is not None
    d = macs.delivery
    assert d is not None and d.measured <= d.budget_resolved and d.meets_budget and d.unit == "MACs"
    assert d.predicted == pytest.approx(d.measured, rel=1e-6), "MACs add up exactly"
    ort = read_card(tmp_path / "out" / "ort1")
    assert ort.latency_ms["ort1"] > 0 and ort.latency_pred_ms > 0 and ort.budget_resolved > 0
    assert ort.delivery.reference > 0 and len(ort.delivery.readings) == 1 and ort.delivery.attempts >= 1
    assert set(ort.cost_cpu_s) >= {"search", "retrain"}
    model, _card = load_model_dir(tmp_path / "out" / "ort1")
    assert (tmp_path / "out" / "ort1" / "model.onnx").is_file()
    with torch.no_grad():
        assert model(torch.randn(2, 3, R, R)).shape == (2, 4)
    # int8: searched on a table of quantized parts, delivered as the INT8 graph of an fp32 twin kept beside it
    int8 = read_card(tmp_path / "out" / "ort1-int8")
    assert int8.precision == "int8" and int8.quantization is not None and int8.delivery.measured > 0
    assert int8.quantization.fp32_twin == str((tmp_path / "out" / ".work" / "ort1-int8" / "fp32").resolve())
    assert int8.quantization.method == "qat-static"  # its student was retrained under fake quantization
    assert read_card(int8.quantization.fp32_twin).precision == "fp32"
    # its student was retrained under fake quantization (own checkpoint stage), the fp32 ones without
    assert (tmp_path / "out" / ".work" / "ort1-int8" / "checkpoints" / "retrain-qat.pt").is_file()
    assert not (tmp_path / "out" / ".work" / "ort1" / "checkpoints" / "retrain-qat.pt").exists()
    assert not any("parametrizations" in k for k in load_model_dir(int8.quantization.fp32_twin)[0].state_dict())
    tables = [json.loads(p.read_text()) for p in (tmp_path / "house" / "latency").glob("*.json")]
    assert {t["settings"]["precision"] for t in tables} == {"fp32", "int8"}
    again = search_and_deliver(house, targets, out=tmp_path / "out", data=data)
    assert [c.created for c in again] == [c.created for c in cards], "delivered targets are not redone"


def test_cli_commands_are_thin_and_documented():
    import typer
    from typer.testing import CliRunner

    from bespoke.cli.block import house_app, search_command

    app = typer.Typer()
    app.add_typer(house_app, name="house")
    app.command("search")(search_command)
    runner = CliRunner()
    for args in (["house", "build", "--help"], ["search", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert "--distill-steps" in runner.invoke(app, ["house", "build", "--help"]).output
