"""Property tests of the parsers users feed: ``--config`` YAML (``read_yaml`` + ``resolve``) and budgets in targets.

Whatever the input, a parser returns a valid value or raises ``BespokeError`` (one line for the CLI), never anything
else; and ``resolve`` keeps its precedence rule: command line (when given) > YAML > default. Budget *strings* are
covered in tests/test_targets.py (round trip, garbage); here budgets go through targets files and resolution.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from bespoke.cli.config import read_yaml, resolve
from bespoke.errors import BespokeError
from bespoke.pipeline import FinetuneJob
from bespoke.targets import Budget, load_targets

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = 2
    batch_size: int = 8


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_size: int = 1
    name: str = "x"
    train: Inner = Field(default_factory=Inner)


NESTED = {"epochs": "train", "batch_size": "train"}
OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "image_size": st.integers(-10**6, 10**6),
    "name": st.text(alphabet="abcdefghij-_ .:#", min_size=1, max_size=8),
    "epochs": st.integers(0, 1000),
    "batch_size": st.integers(1, 4096),
}


class Ctx:
    """Stands in for click's context: which options were typed on the command line."""

    def __init__(self, explicit: set[str]) -> None:
        self.explicit = explicit

    def get_parameter_source(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name="COMMANDLINE" if name in self.explicit else "DEFAULT")


def _write(tmp: Path, text: str | bytes) -> Path:
    path = tmp / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=12))


@FAST
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
                       st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=6))
def test_read_yaml_round_trips_any_mapping(tmp_path, mapping: dict) -> None:
    assert read_yaml(_write(tmp_path, yaml.safe_dump(mapping))) == mapping


@FAST
@given(st.one_of(st.binary(max_size=200), st.text(alphabet=":-[]{}!&*#|>'\" \n\tab1.", max_size=80)))
def test_read_yaml_gives_a_mapping_or_one_error(tmp_path, content: str | bytes) -> None:
    try:
        data = read_yaml(_write(tmp_path, content))
    except BespokeError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(data, dict) and all(isinstance(k, str) for k in data)


@FAST
@given(st.data())
def test_resolve_precedence_command_line_then_yaml_then_default(tmp_path, data) -> None:
    cli = {name: data.draw(strategy, label=f"cli {name}") for name, strategy in OPTIONS.items()}
    explicit = data.draw(st.sets(st.sampled_from(sorted(OPTIONS))), label="typed on the command line")
    in_yaml = {name: data.draw(OPTIONS[name], label=f"yaml {name}")
               for name in data.draw(st.sets(st.sampled_from(sorted(OPTIONS))), label="set in YAML")}
    doc: dict[str, Any] = {}
    for name, value in in_yaml.items():
        key = name.replace("_", "-") if data.draw(st.booleans(), label=f"dashed {name}") else name
        if name in NESTED and data.draw(st.booleans(), label=f"nested {name}"):
            doc.setdefault(NESTED[name], {})[name] = value
        else:
            doc[key] = value
    job = resolve(Job, Ctx(explicit), _write(tmp_path, yaml.safe_dump(doc)), cli, nested=NESTED)
    got = {"image_size": job.image_size, "name": job.name, "epochs": job.train.epochs,
           "batch_size": job.train.batch_size}
    for name in OPTIONS:
        want = cli[name] if name in explicit else in_yaml.get(name, cli[name])
        assert got[name] == want, name


yaml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=6)
FINETUNE_KEYS: list[Any] = ["model", "data", "resolution", "epochs", "train", "batch_size", "batch-size", "lr", "out",
                            "seed", "weights", "pretrained", "train_limit", "bogus", 1, None, True]


@FAST
@given(st.dictionaries(st.sampled_from(FINETUNE_KEYS), yaml_values, max_size=5))
def test_resolve_of_the_finetune_job_validates_or_fails_in_one_line(tmp_path, doc: dict) -> None:
    cli = {"model": "efficientnet_lite0", "epochs": 2, "batch_size": 64, "seed": 0}
    nested = {"epochs": "train", "batch_size": "train", "seed": "train"}
    try:
        job = resolve(FinetuneJob, Ctx(set()), _write(tmp_path, yaml.safe_dump(doc, sort_keys=False)), cli,
                      nested=nested)
    except BespokeError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(job, FinetuneJob) and job.train.epochs >= 1


RUNTIMES = ["onnxruntime", "torch", "macs", "params", "memory"]
budget_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**9), st.booleans(), st.none(),
    st.builds(lambda n, s: f"{n:g}{s}", st.floats(1e-4, 1e4), st.sampled_from(["x", "ms", "us", "M", "k", "MB", "",
                                                                               " x", "G", "KiB", "s", "xx"])),
    st.text(max_size=8), st.lists(st.integers(), max_size=2))


@FAST
@given(runtime=st.sampled_from(RUNTIMES), budget=budget_values,
       reference=st.floats(1e-3, 1e9, allow_nan=False))
def test_budgets_in_a_targets_file_load_and_resolve_or_fail_in_one_line(tmp_path, runtime: str, budget: Any,
                                                                         reference: float) -> None:
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"targets": [{"name": "t", "runtime": runtime,
                                                                  "budget": budget}]}))
    try:
        (target,) = load_targets(tmp_path / "t.yaml")
    except BespokeError as exc:
        assert "\n" not in str(exc)
        return
    if target.budget is None:
        assert budget is None
        return
    value = target.resolve_budget(reference)
    assert value is not None and math.isfinite(value) and value > 0
    if target.budget.is_relative:
        assert value == pytest.approx(target.budget.amount * reference, rel=1e-12)
    else:
        assert value == target.budget.amount
    assert Budget.parse(str(target.budget)) == target.budget  # what a card records reads back the same
