"""The shared delivery step's verdict rule (no timing: measurements are synthetic)."""

from __future__ import annotations

from bespoke.delivery import confirm_verdict
from bespoke.targets import Measurement


def _reading(value: float) -> Measurement:
    return Measurement.exact(value, unit="ms", runtime="onnxruntime")


def test_a_reading_that_agrees_with_the_search_is_the_only_one() -> None:
    again = iter([])
    assert [m.value for m in confirm_verdict(_reading(0.9), lambda: next(again), 1.0, True)] == [0.9]
    assert [m.value for m in confirm_verdict(_reading(1.2), lambda: next(again), 1.0, False)] == [1.2]
    assert [m.value for m in confirm_verdict(_reading(1.2), lambda: next(again), None, True)] == [1.2]


def test_a_reading_that_contradicts_the_search_is_confirmed_by_two_more() -> None:
    again = iter([_reading(0.95), _reading(0.97)])
    readings = confirm_verdict(_reading(1.03), lambda: next(again), 1.0, True)
    assert [m.value for m in readings] == [1.03, 0.95, 0.97]  # the median (0.97) meets the budget
    again = iter([_reading(1.04), _reading(0.99)])
    assert [m.value for m in confirm_verdict(_reading(1.05), lambda: next(again), 1.0, True, extra=2)][1:] == [
        1.04, 0.99]
