"""``benchmarks/tofa_study.py --smoke``: every step of the TOFA study on tiny data, then a resumed run that redoes
nothing. The teacher is the tiny timm EfficientNet (a model directory), so the whole study takes seconds."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from bespoke.export import ModelCard, save_model_dir
from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet
from bespoke.targets.measure import torch_threads
from bespoke.train import cpu_seconds
from tests.conftest import load_benchmark_script, needs_fashion

METHODS = ("tofa", "labelled_only", "extract_finetune")

pytestmark = [pytest.mark.integration, needs_fashion]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _tiny_teacher(path: Path) -> Path:
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(10, 32), engine="finetune", num_classes=10,
                     resolution=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), accuracy=0.1,
                     cost_cpu_s={"finetune": 1.0})
    save_model_dir(path, tiny_efficientnet(num_classes=10, resolution=32), card)
    return path


def test_tofa_study_smoke_writes_every_section_and_resumes(tmp_path: Path) -> None:
    study = load_benchmark_script("tofa_study")
    teacher = _tiny_teacher(tmp_path / "teacher")
    argv = ["--smoke", "--out", str(tmp_path / "run"), "--results", str(tmp_path / "results"),
            "--teacher", str(teacher), "--space-expands", "3", "6", "--train-images", "90", "--test-images", "60",
            "--sweep-targets", "3"]
    start, cpu0 = time.perf_counter(), cpu_seconds()
    with torch_threads(1):
        for method in ("labelled_only", "tofa"):  # trained first, one method per call, then the rest resumes
            assert study.main([*argv, "--train-only", method], log=lambda _: None) == {}
        assert not (tmp_path / "results").exists()
        trained = json.loads((tmp_path / "run" / "ledger.json").read_text())
        assert {"tofa:train", "labelled_only:train"} <= trained.keys() and "tofa:select" not in trained
        doc = study.main(argv, log=lambda _: None)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    on_disk = json.loads((tmp_path / "results" / "tofa_study.json").read_text())
    assert on_disk["methods"].keys() == doc["methods"].keys() == set(METHODS)

    for key in ("command", "machine", "settings", "data", "teacher", "targets", "reference_ms", "cost_table",
                "methods", "sweep", "comparison", "same_subnet_gain", "selection_time", "steps", "checks",
                "cost_at_study_targets"):
        assert key in on_disk, key
    assert on_disk["data"]["resolution"] == 32 and on_disk["data"]["test"] == 60
    assert _number(on_disk["reference_ms"]) and on_disk["reference_ms"] > 0
    budgets = [t["budget_ms"] for t in on_disk["targets"]]
    assert len(budgets) == 3 and all(_number(b) and b > 0 for b in budgets)

    for method in METHODS:
        info = on_disk["methods"][method]
        assert info["supernet"]["unchanged_by_selection"] is True
        assert _number(info["predictor"]["kendall_tau"]) or info["predictor"]["kendall_tau"] is None  # constant
        assert _number(info["predictor"]["rmse"])
        rows = [r for r in info["models"] if r["delivered"]]
        assert rows, f"{method}: no target delivered"
        for row in rows:
            for field in ("accuracy", "latency_ms", "budget_ms", "cpu_s", "search_ms", "params", "macs"):
                assert _number(row[field]), (method, field, row[field])
            assert isinstance(row["meets_budget"], bool)
        cost = info["cost"]
        assert set(cost["total_cpu_s"]) == {"1", "5", "20"}
        assert all(_number(v) for v in cost["total_cpu_s"].values())
        assert _number(cost["preparation_cpu_s"]["supernet_train"])
    same = on_disk["same_subnet_gain"]  # both predictors measured the same sampled subnets on the same images
    assert same["subnets"] == 8 and same["min_points"] <= same["mean_points"] <= same["max_points"]
    assert on_disk["methods"]["labelled_only"]["supernet"]["semi_supervised"] is False
    assert on_disk["methods"]["extract_finetune"]["supernet"]["steps"] == 0
    for row in on_disk["methods"]["extract_finetune"]["models"]:
        if row["delivered"]:
            assert set(row["cost_cpu_s"]) == {"select", "finetune", "export"}
    tofa_cost = on_disk["methods"]["tofa"]["cost"]
    assert tofa_cost["extrapolated"] == {"1": False, "5": True, "20": True}  # 3 sweep targets were selected
    assert on_disk["sweep"]["delivered"] >= 1 and _number(on_disk["selection_time"]["search_ms_max"])
    assert all(isinstance(v, bool | int) or v is None or _number(v) for v in on_disk["checks"].values())
    c_total = on_disk["methods"]["extract_finetune"]["cost"]["total_cpu_s"]["20"]
    assert on_disk["checks"]["cheaper_than_extract_finetune_at_k20"] is (tofa_cost["total_cpu_s"]["20"] < c_total)
    statuses = {name: s["status"] for name, s in on_disk["steps"].items()}
    assert on_disk["steps"]["tofa:train"] == trained["tofa:train"]  # the figures of the --train-only call
    assert statuses.pop("teacher") == "found"  # given with --teacher: not run by the study
    assert set(statuses.values()) == {"done"}

    md = (tmp_path / "results" / "tofa_study.md").read_text()
    for heading in ("## Delivered models", "## Semi-supervised gain", "## Cost of K targets",
                    "## Accuracy predictor and selection time", "## Done when", "## Steps"):
        assert heading in md
    assert cpu < 300, f"smoke study took {cpu:.0f} CPU-s"  # a runaway guard, not a speed claim
    assert elapsed < 180, f"smoke study took {elapsed:.0f} s"  # a runaway guard that tolerates a busy machine

    with torch_threads(1):
        again = study.main(argv, log=lambda _: None)  # resumed: every step found on disk
    assert again["steps"] == doc["steps"]
    assert again["methods"]["tofa"]["models"] == doc["methods"]["tofa"]["models"]
    with pytest.raises(study.BespokeError, match="other settings"):
        study.main([*argv, "--steps", "3"], log=lambda _: None)

    # --tofa-supernet: a supernet trained elsewhere with (a)'s recipe is adopted as (a); another recipe is refused
    second = study.open_study(study.parse_args([*argv, "--out", str(tmp_path / "run2")]), lambda _: None)
    trained = tmp_path / "run" / "tofa" / "supernet"
    job = study.supernet_job(second, second.dir("tofa") / "supernet", semi_supervised=True)
    study.adopt_supernet(trained, job)
    adopted = Path(job.out)
    assert study.weights_digest(adopted) == study.weights_digest(trained)
    assert study.read_meta(adopted).cost_cpu_s == study.read_meta(trained).cost_cpu_s
    assert not (adopted / "checkpoints").exists()
    with pytest.raises(study.BespokeError, match="another recipe"):
        study.adopt_supernet(trained, study.supernet_job(second, tmp_path / "x", semi_supervised=False))


def test_ledger_keeps_the_steps_another_process_recorded(tmp_path: Path) -> None:
    study = load_benchmark_script("tofa_study")
    path = tmp_path / "ledger.json"
    first, second = study.Ledger(path, lambda _: None), study.Ledger(path, lambda _: None)  # both opened empty
    first.run("tofa:train", False, lambda: None)
    second.run("labelled_only:train", False, lambda: None)
    assert set(json.loads(path.read_text())) == {"tofa:train", "labelled_only:train"}


def test_benchmark_teacher_is_reused_only_for_its_own_labelled_share(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another seed (or label fraction) draws another labelled share: the benchmark's teacher, which knows the
    labels of its own share, would leak them into the study's unlabelled images, so the study trains its own."""
    study = load_benchmark_script("tofa_study")
    teacher = tmp_path / "teacher-labelled"
    monkeypatch.setattr(study, "ROOT", tmp_path)
    monkeypatch.setattr(study, "BENCH_TEACHER", teacher)

    def fits(*flags: str) -> bool:
        args = study.parse_args(["--out", str(tmp_path / "run"), *flags])
        return study.bench_teacher_fits(args, study.study_source(args))

    assert not fits()  # no teacher there
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(10, 64), engine="finetune", num_classes=10,
                     resolution=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), accuracy=0.1,
                     data={"dataset": "fashion-mnist", "train": 1200, "val": 1200, "test": 10000,
                           "labels": "10% of training labels"},
                     provenance={"recipe": {"seed": 0}})
    save_model_dir(teacher, tiny_efficientnet(num_classes=10, resolution=64), card)
    assert fits()
    for other in (["--seed", "1"], ["--label-fraction", "0.2"], ["--train-images", "6000"], ["--resolution", "32"]):
        assert not fits(*other), other
    seed1 = study.open_study(study.parse_args(["--out", str(tmp_path / "run"), "--seed", "1"]), log=lambda _: None)
    assert seed1.teacher == tmp_path / "run" / "teacher"
