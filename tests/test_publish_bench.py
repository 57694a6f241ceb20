"""``benchmarks/publish_bench.py``: a finished run's files land under ``results/<preset>/`` and its table in the
README block; smoke and unfinished runs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_benchmark_script

MD = """# bespoke benchmark: p

## Results

| method | top-1 |
|---|---|
| teacher | 0.9 |

![accuracy vs latency](pareto.png)

## Targets and budgets

| target |
|---|

## Cost of K targets

| method | K=1 |
|---|---|
| tofa | 10 |
"""




def _run(path: Path, *, smoke: bool = False, status: str = "done") -> Path:
    path.mkdir()
    doc = {"preset": "p", "smoke": smoke, "created": "2026-12-02T01:00:00+00:00",
           "machine": {"cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1", "onnxruntime": "1.31.1"},
           "stages": [{"name": "teacher", "status": status}]}
    (path / "results.json").write_text(json.dumps(doc))
    (path / "results.md").write_text(MD)
    for name in ("pareto.png", "stages.json", "preset.json"):
        (path / name).write_bytes(b"x")
    return path


def test_publish_copies_files_and_replaces_only_the_block(tmp_path: Path) -> None:
    pub = load_benchmark_script("publish_bench")
    readme = tmp_path / "README.md"
    readme.write_text("# t\nbefore\n<!-- bench:p:start -->\nold table\n<!-- bench:p:end -->\nafter\n")
    dest = pub.publish(_run(tmp_path / "run"), tmp_path / "benchmarks" / "results", readme)
    assert sorted(f.name for f in dest.iterdir()) == sorted(pub.FILES)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# t\nbefore\n") and text.endswith("after\n")
    assert "| teacher | 0.9 |" in text and "| tofa | 10 |" in text and "Targets and budgets" not in text
    assert "](benchmarks/results/p/pareto.png)" in text and "AMD EPYC (2 cores" in text
    pub.publish(tmp_path / "run", tmp_path / "benchmarks" / "results", readme)  # idempotent
    assert readme.read_text() == text
    assert "--remeasure" not in text  # one reading per model: nothing to say


def test_the_readme_line_says_how_many_readings_the_latencies_are_the_median_of(tmp_path: Path) -> None:
    pub = load_benchmark_script("publish_bench")
    model = tmp_path / "model"
    model.mkdir()
    (model / "card.json").write_text(json.dumps({"latency": {"ort-cpu-1t": {"readings": [2.0, 2.2, 2.1]}}}))
    doc = json.loads((_run(tmp_path / "run") / "results.json").read_text())
    assert pub.readings({**doc, "models": [{"path": str(model)}, {"path": str(tmp_path / "gone")}]}) == (3, 3)
    block = pub.readme_block({**doc, "models": [{"path": str(model)}]}, MD, "benchmarks/results/p")
    assert "then `--remeasure` 2 time(s): each model's latency is the median of its 3 readings," in block
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    (rebuilt / "card.json").write_text(json.dumps({"latency": {"ort-cpu-1t": {"readings": [2.0]}}}))
    both = {**doc, "models": [{"path": str(model)}, {"path": str(rebuilt)}]}
    assert pub.readings(both) == (1, 3)
    assert "median of its 1 to 3 (models rebuilt" in pub.readme_block(both, MD, "benchmarks/results/p")


def test_publish_refuses_smoke_unfinished_and_missing_markers(tmp_path: Path) -> None:
    pub = load_benchmark_script("publish_bench")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:p:start -->\n<!-- bench:p:end -->\n")
    with pytest.raises(pub.BespokeError, match="smoke"):
        pub.publish(_run(tmp_path / "smoke", smoke=True), tmp_path / "r", readme)
    with pytest.raises(pub.BespokeError, match="not finished"):
        pub.publish(_run(tmp_path / "half", status="pending"), tmp_path / "r", readme)
    with pytest.raises(pub.BespokeError, match="missing"):
        pub.publish(tmp_path, tmp_path / "r", readme)
    readme.write_text("no markers\n")
    with pytest.raises(pub.BespokeError, match="marker"):
        pub.publish(_run(tmp_path / "ok"), tmp_path / "r", readme)
    assert pub.main([str(tmp_path / "smoke"), "--results", str(tmp_path / "r"), "--readme", str(readme)]) == 2
