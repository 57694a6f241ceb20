"""bespoke.cost: the one cost table and calibrated predictor of both engines, and part measurement through the
runtime registry (tiny models, counting runtimes and tiny onnxruntime graphs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from torch import nn

from bespoke.cost import (
    CostTable,
    cache_key,
    grow_table,
    leave_one_out,
    load_table,
    part_signature,
    spread_by_cost,
    table_path,
    theil_sen,
)
from bespoke.targets import Measurer, get_runtime, measure_parts, targets_from_dicts

FAST = {"warmup": 1, "repeats": 5}


def _target(runtime: str, **extra: object):
    return targets_from_dicts([{"name": f"t-{runtime}", "runtime": runtime, **FAST, **extra}])[0]


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)).eval()


class Counting:
    """Part builders that count how often each part was built (a part is built only to be measured)."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def parts(self, names: list[str]) -> dict:
        out = {}
        for i, name in enumerate(names):
            shape = (1, 4, 8 + 2 * i, 8 + 2 * i)
            out[part_signature(name, shape)] = (lambda name=name: self._build(name), shape)
        return out

    def _build(self, name: str) -> nn.Module:
        self.built.append(name)
        return nn.Conv2d(4, 4, 3, padding=1)


def test_table_round_trips_and_refuses_unknown_keys(tmp_path) -> None:
    table = CostTable(settings={"runtime": "macs", "threads": 1, "batch": 1}, unit="MACs",
                      parts={"a@1x4": 2.0, "b@1x4": 3.0}, reference=6.0)
    table.set_reference("ref", ["a@1x4", "b@1x4"])
    table.add_point("small", ["a@1x4"], 3.0)
    again = CostTable.model_validate(json.loads(table.model_dump_json()))
    assert again == table and again.line == pytest.approx((1.0, 1.0))
    with pytest.raises(ValidationError, match="extra"):
        CostTable.model_validate({**table.model_dump(mode="json"), "scale": 1.0})


def test_cache_key_ignores_name_and_budget_and_differs_for_threads() -> None:
    a, b, c = targets_from_dicts([
        {"name": "fast", "runtime": "onnxruntime", "threads": 1, "budget": "0.5x"},
        {"name": "slow", "runtime": "onnxruntime", "threads": 1, "budget": "2.0ms", "description": "other"},
        {"name": "fast2", "runtime": "onnxruntime", "threads": 2, "budget": "0.5x"},
    ])
    assert cache_key(a) == cache_key(b) != cache_key(c)
    assert cache_key(a).startswith("onnxruntime-t1-b1-") and cache_key(c).startswith("onnxruntime-t2-b1-")


def test_theil_sen_ignores_one_outlier_and_leave_one_out_finds_it() -> None:
    line = [(x, 2.0 * x + 1.0) for x in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    points = [*line, (3.5, 30.0)]
    slope, intercept = theil_sen(points)
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(1.0)
    loo = leave_one_out(points)
    assert len(loo.per_point) == len(points)
    assert loo.per_point[:-1] == pytest.approx([0.0] * len(line), abs=1e-9)
    assert loo.per_point[-1] == pytest.approx((2.0 * 3.5 + 1.0 - 30.0) / 30.0)
    assert loo.max_abs == pytest.approx(abs(loo.per_point[-1]))
    assert leave_one_out(points[:2]).max_abs is None and theil_sen([(2.0, 5.0)]) == (1.0, 3.0)


def test_table_line_and_its_error_are_written_into_the_json(tmp_path) -> None:
    table = CostTable(settings={}, unit="ms", parts={f"p{i}": float(i) for i in range(1, 6)}, reference=18.5)
    table.set_reference("ref", ["p5", "p4", "p2"])  # parts 11, measured 1.5 x 11 + 2
    for key, parts, measured in (("a", ["p1"], 1.5 * 1 + 2.0), ("b", ["p3"], 1.5 * 3 + 2.0),
                                 ("c", ["p4"], 1.5 * 4 + 2.0), ("d", ["p1", "p5"], 1.5 * 6 + 2.0)):
        table.add_point(key, parts, measured)
    assert table.line == pytest.approx((1.5, 2.0))
    assert table.predict(["p2"]) == pytest.approx(5.0)
    assert np.allclose(table.whole(np.array([1.0, 2.0])), [3.5, 5.0])  # vectorised
    saved = json.loads(table.model_dump_json())
    assert saved["loo"]["max_abs"] == pytest.approx(0.0, abs=1e-9) and len(saved["loo"]["per_point"]) == 5
    assert "leave-one-out" in table.error_line()


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch", "macs", "params", "memory"])
def test_every_runtime_measures_parts_against_a_reference(runtime: str) -> None:
    measurer = get_runtime(runtime)
    assert isinstance(measurer, Measurer) and measurer.measures_whole
    counting = Counting()
    readings = measure_parts(counting.parts(["x", "y"]), _target(runtime), reference=_net(), resolution=8)
    assert sorted(counting.built) == ["x", "y"] and len(readings.values) == 2
    assert all(v > 0 for v in readings.values.values()) and readings.reference and readings.reference > 0
    assert readings.call_overhead >= 0.0 and (readings.call_overhead > 0) == (runtime in ("onnxruntime", "torch"))


def test_the_table_grows_by_the_parts_it_lacks_only(tmp_path) -> None:
    target = _target("macs")
    counting = Counting()
    first = grow_table(tmp_path, target, counting.parts(["a", "b"]), reference=_net(), resolution=8,
                       reference_key="ref", reference_parts=[])
    assert sorted(counting.built) == ["a", "b"] and table_path(tmp_path, target).is_file()
    counting.built.clear()
    grown = grow_table(tmp_path, target, counting.parts(["a", "b", "c"]), reference=_net(), resolution=8,
                       reference_key="ref", reference_parts=[])
    assert counting.built == ["c"]
    assert {k: grown.parts[k] for k in first.parts} == first.parts and len(grown.parts) == 3
    assert load_table(tmp_path, target) == grown
    assert load_table(tmp_path, _target("macs", threads=2)) is None  # another setting: another table


def test_spread_by_cost_covers_the_range_from_the_cheapest() -> None:
    raw = [5.0, 1.0, 9.0, 2.0, 2.1, 7.0, 3.0, 8.9]
    picked = spread_by_cost(raw, 4)
    assert picked[0] == 1 and picked[-1] == 2 and len(set(picked)) == 4
    assert sorted(spread_by_cost(raw, 20)) == list(range(len(raw))) and spread_by_cost(raw, 0) == []


def test_the_supernet_builds_its_table_through_the_shared_type(tmp_path) -> None:
    from bespoke.supernet import SubnetCosts, build_cost_table, build_supernet
    from bespoke.supernet.genome import GenomeLayout
    from bespoke.supernet.tiny import tiny_efficientnet

    net = build_supernet(tiny_efficientnet(), 32)
    costs = build_cost_table(net.spec, net.space, _target("macs"), tmp_path, calibration_subnets=3)
    assert isinstance(costs, SubnetCosts) and isinstance(costs.table, CostTable)
    assert costs.table.calibration[0].source == "reference" and len(costs.table.calibration) == 4
    assert CostTable.model_validate_json(table_path(tmp_path, _target("macs")).read_text()) == costs.table
    cfgs = [net.space.sample(np.random.default_rng(s)) for s in range(6)]
    vectorised = costs.genome_cost(net.space)(GenomeLayout(net.space).encode_many(cfgs))
    assert np.allclose(vectorised, costs.predict(cfgs))
    assert costs.predict([net.space.largest()])[0] == pytest.approx(costs.reference)


def test_the_house_builds_its_table_through_the_shared_type(tmp_path) -> None:
    from bespoke.house import HouseCosts, build_house, build_latency_table
    from tests.test_house_helpers import house_kwargs, one_thread

    with one_thread():
        house = build_house(out=tmp_path / "house", **house_kwargs(size=3, distill_steps=1))
        costs = build_latency_table(house, _target("params"))
    assert isinstance(costs, HouseCosts) and isinstance(costs.table, CostTable)
    teacher_params = sum(p.numel() for p in house.teacher_model().parameters())
    assert costs.teacher == teacher_params and costs.predict({}) == pytest.approx(teacher_params)
    assert set(costs.alternatives) == {e.id for e in house.entries("done")}
    assert load_table(house.latency_dir(), _target("params")) == costs.table
