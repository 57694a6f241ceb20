"""bespoke.targets: budgets and target specs (YAML loading, loud errors)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bespoke.errors import BespokeError
from bespoke.targets import RUNTIME_NAMES, Budget, Target, load_targets, targets_from_dicts
from bespoke.targets.budget import RELATIVE_RANGE

REPO = Path(__file__).resolve().parents[1]

EXAMPLE_YAML = """\
targets:
  - name: cpu1-half          # also the output sub-directory name
    runtime: onnxruntime     # onnxruntime | torch | table | macs | params
    threads: 1
    batch: 1
    budget: 0.5x             # or 2.0ms, or 20M for macs/params
"""

TABLE_CSV = (
    "key,median_ms,p10_ms,p90_ms,n\n"
    "1x3x16x16_0123456789abcdef,0.5,0.4,0.7,50\n"
    "__overhead__,0.01,0.01,0.02,50\n"
)


# ---------------------------------------------------------------------------------------------------------
# Budget
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "amount"),
    [
        ("0.5x", "relative", 0.5),
        ("0.35X", "relative", 0.35),
        ("2.0ms", "time", 2.0),
        ("1.5 ms", "time", 1.5),
        ("800us", "time", 0.8),
        ("800µs", "time", 0.8),
        ("1s", "time", 1000.0),
        ("20M", "count", 20e6),
        ("1.5G", "count", 1.5e9),
        ("300k", "count", 300e3),
        ("12", "plain", 12.0),
        ("1e6", "plain", 1e6),
        ("4MB", "bytes", 4e6),
        ("512KiB", "bytes", 512 * 1024.0),
    ],
)
def test_budget_parse_examples(text: str, kind: str, amount: float) -> None:
    budget = Budget.parse(text)
    assert budget.kind == kind
    assert math.isclose(budget.amount, amount, rel_tol=1e-12)
    assert str(budget) == text
    assert budget.is_relative == (kind == "relative")
    assert Budget.parse(str(budget)) == budget


def test_budget_parse_numbers_from_yaml_and_whitespace() -> None:
    assert Budget.parse(20).amount == 20.0 and str(Budget.parse(20)) == "20"
    assert Budget.parse(2.5).kind == "plain"
    assert str(Budget.parse("  0.5x ")) == "0.5x"


@pytest.mark.parametrize(
    "bad",
    ["", " ", "abc", "x", "ms", "-1ms", "0x", "0", "0.0ms", "1.5mm", "2 m s", "nan", "inf", "1e999", "1.2.3",
     "20 MMACs", "5%", "0.5xx", None, True, [], {"a": 1}, float("nan"), float("inf"), -3],
)
def test_budget_garbage_raises_bespoke_error(bad: object) -> None:
    with pytest.raises(BespokeError):
        Budget.parse(bad)


_SUFFIXES = {"x": 1.0, "ms": 1.0, "us": 1e-3, "s": 1e3, "k": 1e3, "M": 1e6, "G": 1e9, "": 1.0, "MB": 1e6,
             "KiB": 1024.0}


@settings(max_examples=300, deadline=None)
@given(
    number=st.floats(min_value=1e-6, max_value=1e12, allow_nan=False, allow_infinity=False),
    style=st.sampled_from(["repr", "fixed", "int", "exp"]),
    space=st.sampled_from(["", " "]),
    suffix=st.sampled_from(sorted(_SUFFIXES)),
)
def test_budget_valid_strings_round_trip(number: float, style: str, space: str, suffix: str) -> None:
    digits = {"repr": repr(number), "fixed": f"{number:.3f}", "int": str(max(1, int(number))),
              "exp": f"{number:.4e}"}[style]
    if float(digits) <= 0:
        return
    text = f"{digits}{space}{suffix}" if suffix else digits
    if suffix == "x" and not RELATIVE_RANGE[0] <= float(digits) <= RELATIVE_RANGE[1]:
        with pytest.raises(BespokeError, match="must lie between"):
            Budget.parse(text)
        return
    budget = Budget.parse(text)
    assert str(budget) == text
    assert Budget.parse(str(budget)) == budget
    assert math.isclose(budget.amount, float(digits) * _SUFFIXES[suffix], rel_tol=1e-9)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789.eE+-xmsuMGkKBi µ\t"), st.floats(), st.integers()))
def test_budget_garbage_never_raises_anything_else(text: object) -> None:
    try:
        budget = Budget.parse(text)
    except BespokeError:
        return
    assert math.isfinite(budget.amount) and budget.amount > 0
    assert Budget.parse(str(budget)) == budget


def test_budget_resolve() -> None:
    assert Budget.parse("0.5x").resolve(8.0, "ms") == 4.0
    assert Budget.parse("2.0ms").resolve(None, "ms") == 2.0
    assert Budget.parse("800us").resolve(123.0, "ms") == pytest.approx(0.8)
    assert Budget.parse("20M").resolve(None, "MACs") == 20e6
    assert Budget.parse("1.5G").resolve(None, "params") == 1.5e9
    assert Budget.parse("4MB").resolve(None, "bytes") == 4e6
    assert Budget.parse("20M").resolve(None, "bytes") == 20e6
    assert Budget.parse("12").resolve(None, "ms") == 12.0
    assert Budget.parse("0.25x").resolve(1e6, "params") == 250e3


@pytest.mark.parametrize(
    ("text", "reference", "unit"),
    [
        ("0.5x", None, "ms"),  # relative needs a reference
        ("0.5x", 0.0, "ms"),
        ("0.5x", float("nan"), "ms"),
        ("2.0ms", None, "MACs"),  # time budget on a count target
        ("800us", None, "params"),
        ("20M", None, "ms"),  # count budget on a latency target
        ("4MB", None, "params"),
        ("4MB", None, "ms"),
        ("2.0ms", None, "bytes"),
        ("1", None, "furlongs"),
    ],
)
def test_budget_resolve_errors(text: str, reference: float | None, unit: str) -> None:
    with pytest.raises(BespokeError):
        Budget.parse(text).resolve(reference, unit)


# ---------------------------------------------------------------------------------------------------------
# Target
# ---------------------------------------------------------------------------------------------------------


def test_target_defaults_and_units() -> None:
    target = Target(name="a", runtime="onnxruntime")
    settings_ = (target.threads, target.batch, target.opt_level, target.warmup, target.repeats)
    assert settings_ == (1, 1, "all", 10, 50)
    assert target.budget is None and target.table is None and target.description == ""
    assert target.resolve_budget(None) is None
    units = {"onnxruntime": "ms", "torch": "ms", "macs": "MACs", "params": "params", "memory": "bytes"}
    for runtime, unit in units.items():
        assert Target(name="t", runtime=runtime).unit == unit
    assert set(RUNTIME_NAMES) == {*units, "table"}


def test_target_table_unit_and_relative_path(tmp_path: Path) -> None:
    (tmp_path / "lat.csv").write_text(TABLE_CSV)
    yaml_text = "targets:\n  - {name: board, runtime: table, table: lat.csv, budget: 5ms}\n"
    (tmp_path / "t.yaml").write_text(yaml_text)
    (target,) = load_targets(tmp_path / "t.yaml")
    assert target.unit == "ms"
    assert target.table == tmp_path / "lat.csv"
    assert target.resolve_budget(None) == 5.0


def test_target_budget_from_string_and_json_round_trip() -> None:
    target = Target(name="cpu", runtime="onnxruntime", budget="0.5x", threads=2)
    assert isinstance(target.budget, Budget) and target.budget.is_relative
    assert target.resolve_budget(10.0) == 5.0
    dumped = target.model_dump(mode="json")
    assert dumped["budget"] == "0.5x"
    assert Target.model_validate(dumped) == target
    assert Target.model_validate_json(target.model_dump_json()) == target
    assert Target.model_json_schema()["properties"]["budget"]


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "a", "runtime": "onnxruntime", "threadz": 2},  # typo
        {"name": "a/b", "runtime": "onnxruntime"},  # not a directory name
        {"name": "..", "runtime": "onnxruntime"},
        {"name": "", "runtime": "onnxruntime"},
        {"name": "a", "runtime": "tflite"},
        {"name": "a", "runtime": "onnxruntime", "threads": 0},
        {"name": "a", "runtime": "onnxruntime", "repeats": 0},
        {"name": "a", "runtime": "onnxruntime", "opt_level": "max"},
        {"name": "a", "runtime": "table"},  # needs a table
        {"name": "a", "runtime": "onnxruntime", "table": "lat.csv"},  # table only for runtime table
        {"name": "a", "runtime": "macs", "budget": "2ms"},  # infeasible unit
        {"name": "a", "runtime": "onnxruntime", "budget": "20M"},
        {"name": "a", "runtime": "onnxruntime", "budget": "fast"},
    ],
)
def test_target_rejects(fields: dict) -> None:
    with pytest.raises(ValidationError):
        Target(**fields)


def test_target_is_immutable() -> None:
    target = Target(name="a", runtime="torch")
    with pytest.raises(ValidationError):
        target.threads = 4  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------
# YAML loading
# ---------------------------------------------------------------------------------------------------------


def test_load_targets_brief_example(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(EXAMPLE_YAML)
    (target,) = load_targets(path)
    assert target.name == "cpu1-half"
    assert target.runtime == "onnxruntime"
    assert (target.threads, target.batch) == (1, 1)
    assert target.budget == Budget.parse("0.5x")
    assert target.unit == "ms"


def test_repo_default_targets_load() -> None:
    targets = load_targets(REPO / "configs" / "targets.yaml")
    assert [t.name for t in targets] == ["ort1-0.7x", "ort1-0.5x", "ort1-0.35x"]
    assert [str(t.budget) for t in targets] == ["0.7x", "0.5x", "0.35x"]
    assert all(t.runtime == "onnxruntime" and t.threads == 1 and t.batch == 1 for t in targets)


def _load_error(tmp_path: Path, text: str | bytes) -> BespokeError:
    path = tmp_path / "targets.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(BespokeError) as info:
        load_targets(path)
    assert str(path) in info.value.message
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("targets:\n  - name: a\n    runtime: [onnxruntime\n", "invalid YAML at line"),
        ("targets:\n  - {name: a, runtime: tflite}\n", "'runtime'"),
        ("targets:\n  - {name: a, runtime: onnxruntime, threadz: 2}\n", "unknown key 'threadz'"),
        ("targets:\n  - {name: a, runtime: onnxruntime}\n  - {name: a, runtime: torch}\n", "duplicate"),
        ("targets:\n  - {name: Cpu, runtime: onnxruntime}\n  - {name: cpu, runtime: torch}\n", "duplicate"),
        ("targets:\n  - {name: b, runtime: table, table: missing.csv}\n", "table file not found"),
        ("targets:\n  - {name: m, runtime: macs, budget: 2.0ms}\n", "measured in MACs"),
        ("targets:\n  - {name: m, runtime: onnxruntime, budget: 20M}\n", "measured in ms"),
        ("targets:\n  - {name: m, runtime: onnxruntime, budget: lots}\n", "cannot read budget"),
        ("targets:\n  - {runtime: onnxruntime}\n", "missing key 'name'"),
        ("targets:\n  - {name: 'a b', runtime: onnxruntime}\n", "key 'name'"),
        ("targets:\n  - just-a-string\n", "expected a mapping"),
        ("targets: []\n", "no targets"),
        ("targets:\n", "no targets"),
        ("- {name: a, runtime: onnxruntime}\n", "top-level 'targets:'"),
        ("", "top-level 'targets:'"),
        ("targets: []\nextra: 1\n", "unknown top-level key"),
        ("targets: {name: a}\n", "must be a list"),
        (b"\xff\xfe\x00bad", "cannot read targets file"),
    ],
)
def test_load_targets_errors(tmp_path: Path, text: str | bytes, expected: str) -> None:
    error = _load_error(tmp_path, text)
    assert expected in error.message


def test_load_targets_error_names_the_target(tmp_path: Path) -> None:
    text = (
        "targets:\n  - {name: ok, runtime: torch}\n"
        "  - {name: cpu1-half, runtime: onnxruntime, threadz: 2}\n"
    )
    error = _load_error(tmp_path, text)
    assert "target 'cpu1-half' (#2)" in error.message
    assert error.hint is not None and "threads" in error.hint


def test_load_targets_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BespokeError, match="cannot read targets file"):
        load_targets(tmp_path / "nope.yaml")


def test_targets_from_dicts(tmp_path: Path) -> None:
    (tmp_path / "lat.csv").write_text(TABLE_CSV)
    targets = targets_from_dicts(
        [
            {"name": "p", "runtime": "params", "budget": "1.5M"},
            {"name": "b", "runtime": "table", "table": "lat.csv"},
        ],
        base_dir=tmp_path,
    )
    assert targets[0].resolve_budget(None) == 1.5e6
    assert targets[1].table == tmp_path / "lat.csv"
    with pytest.raises(BespokeError, match="unknown key 'bugdet'"):
        targets_from_dicts([{"name": "p", "runtime": "params", "bugdet": "1M"}])


def test_load_targets_rejects_a_broken_table(tmp_path: Path) -> None:
    (tmp_path / "lat.csv").write_text("key,median\nx,1\n")
    (tmp_path / "t.yaml").write_text("targets:\n  - {name: b, runtime: table, table: lat.csv}\n")
    with pytest.raises(BespokeError, match="missing column"):
        load_targets(tmp_path / "t.yaml")
