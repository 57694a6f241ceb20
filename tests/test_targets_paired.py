"""Paired timing: a model timed in alternation with a reference lands on the reference's scale."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from bespoke.errors import BespokeError
from bespoke.targets import Target, measure_paired, time_alternating, write_onnx


def _net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("paired")
    small = write_onnx(_net(4), (1, 3, 32, 32), root / "small.onnx")
    big = write_onnx(_net(48), (1, 3, 32, 32), root / "big.onnx")
    return small, big


TARGET = Target(name="t", runtime="onnxruntime", threads=1, batch=1, warmup=3, repeats=40)


def test_alternating_visits_each_model_the_asked_number_of_runs(files) -> None:
    small, big = files
    samples = time_alternating({"a": small, "b": big.read_bytes()}, TARGET, block=7)  # 5 blocks of 7, one of 5
    assert len(samples["a"]) == len(samples["b"]) == 40
    assert time_alternating({}, TARGET) == {}
    with pytest.raises(BespokeError, match="block"):
        time_alternating({"a": small}, TARGET, block=0)


def test_paired_value_is_the_ratio_times_the_reference_value(files) -> None:
    small, big = files
    m = measure_paired(small, big, TARGET, reference_value=100.0)
    d = m.details
    assert m.unit == "ms" and m.n == 40
    assert m.value == pytest.approx(d["ratio"] * 100.0, rel=1e-3)
    # details are rounded to 4 decimals (0.1 us): allow that much besides the relative error
    assert d["raw_median_ms"] == pytest.approx(d["ratio_of_medians"] * d["reference_now_ms"], rel=1e-3, abs=1e-4)
    assert d["turns"] == 4  # 40 runs in turns of 10; the ratio is the median of the 4 turn ratios
    assert m.value < 100.0, "the small net is faster than the big one"
    same = measure_paired(big, big, TARGET, reference_value=7.0)
    assert same.value == pytest.approx(7.0, rel=0.5)  # the same file against itself: ratio about 1


def test_turn_ratios_pair_each_turn_with_the_reference_turn_after_it() -> None:
    from bespoke.targets.paired import turn_ratios

    model = [2.0] * 10 + [9.0] * 10 + [2.0] * 5  # a burst of load during the second turn, a short last turn
    reference = [4.0] * 10 + [4.0] * 10 + [4.0] * 5
    assert turn_ratios(model, reference, 10) == [0.5, 2.25, 0.5]


def test_paired_timing_rejects_what_it_cannot_pair(files, tmp_path) -> None:
    small, big = files
    with pytest.raises(BespokeError, match="onnxruntime target"):
        measure_paired(small, big, TARGET.model_copy(update={"runtime": "macs"}), reference_value=1.0)
    with pytest.raises(BespokeError, match="not found"):
        measure_paired(tmp_path / "missing.onnx", big, TARGET, reference_value=1.0)
    with pytest.raises(BespokeError, match="positive"):
        measure_paired(small, big, TARGET, reference_value=0.0)
