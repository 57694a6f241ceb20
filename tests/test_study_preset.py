"""The TOFA study as a bench preset: ``bespoke bench --preset tofa-study``. The preset validates; its smoke run
takes every stage (TOFA, its labelled-only ablation, extraction + fine-tune, the sweep) on tiny data, delivers
cards with a typed delivery section, and a rerun skips every finished stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bespoke.baselines.extract import ENGINE, extract_and_finetune, untrained_supernet_job
from bespoke.bench import load_preset, run_bench
from bespoke.bench.preset import BenchPreset
from bespoke.errors import BespokeError
from bespoke.export import Delivery, read_card
from bespoke.train import FinetuneConfig
from tests.conftest import needs_fashion

STAGES = ("tofa", "tofa-labelled-only", "extract-finetune", "tofa-sweep")


def test_study_preset_validates_full_and_smoke() -> None:
    full, smoke = load_preset("tofa-study"), load_preset("tofa-study", smoke=True)
    for preset in (full, smoke):
        assert tuple(preset.engines) == STAGES
        assert preset.stage_settings("tofa-labelled-only")["train"]["semi_supervised"] is False
        # the ablation is tofa's recipe but for the labelled-only switch
        ablation = preset.stage_settings("tofa-labelled-only")
        assert {k: v for k, v in ablation["train"].items() if k != "semi_supervised"} == preset.tofa["train"]
        assert ablation["select"] == preset.tofa["select"] == preset.extract_finetune["select"]
        assert preset.engine_teacher("extract-finetune") == preset.engine_teacher("tofa-sweep") == "labelled"
    assert [str(t.budget) for t in full.targets] == ["0.7x", "0.5x", "0.35x"]
    assert full.tofa["train"]["steps"] == 300 and full.extract_config().epochs == 10
    factors = full.tofa_sweep.factors()
    assert len(factors) == 20 and (max(factors), min(factors)) == (0.9, 0.35)
    assert smoke.extract_config().epochs == 1 and smoke.data.train_images < 1000
    assert load_preset("fashion-mnist").engines == ["bespoke", "tofa", "bespoke-label-scarce", "extract-finetune"]


@pytest.mark.parametrize(("changes", "match"), [
    ({"engines": ["tofa", "tofa-labeled-only"]}, "tofa-labeled-only"),
    ({"engines": ["tofa", "tofa"]}, "twice"),
    ({"extract_finetune": {"finetune": {"epochz": 3}}}, "epochz"),
    ({"extract_finetune": {"steps": 3}}, "unknown key"),
    ({"tofa_labelled_only": {"teacher": "some"}}, "teacher"),
    ({"tofa_sweep": {"targets": 3, "range": [0.9, 0.3]}}, "low <= high"),
])
def test_study_sections_refuse_typos(changes: dict, match: str) -> None:
    doc = {**load_preset("tofa-study").model_dump(mode="json"), **changes}
    with pytest.raises(ValueError, match=match):
        BenchPreset.model_validate(doc)


def test_extract_refuses_a_trained_supernet_job(tmp_path: Path) -> None:
    job = untrained_supernet_job(tmp_path / "teacher", tmp_path / "supernet", data="fashion-mnist", labels=0.1,
                                 resolution=32)
    assert job.train.steps == 0 and job.train.semi_supervised is False
    trained = job.model_copy(update={"train": job.train.model_copy(update={"steps": 5})})
    with pytest.raises(BespokeError, match="untrained supernet"):
        extract_and_finetune(trained, [], None, FinetuneConfig(), tmp_path / "out")  # type: ignore[arg-type]


@pytest.mark.integration
@needs_fashion
def test_study_smoke_runs_every_stage_and_resumes(tmp_path: Path) -> None:
    first = run_bench("tofa-study", tmp_path, smoke=True, log=lambda _: None)
    for stage in STAGES:
        assert first.engines[stage]["status"] == "done", (stage, first.engines[stage])
    assert first.engines["bespoke"]["status"] == "not run"
    engines = tmp_path / "engines"
    # (b) is tofa's supernet trained on the labelled share only; (c)'s supernet is untrained
    assert json.loads((engines / "tofa-labelled-only/supernet/supernet.json").read_text()
                      )["job"]["train"]["semi_supervised"] is False
    untrained = json.loads((engines / "extract-finetune/supernet/supernet.json").read_text())
    assert untrained["job"]["train"]["steps"] == 0 and untrained["history"] == []

    extracted = sorted((engines / "extract-finetune/models").iterdir())
    assert extracted
    for directory in extracted:
        card = read_card(directory)
        assert card.engine == ENGINE and card.method.startswith("extract + fine-tune")
        assert isinstance(card.delivery, Delivery) and card.delivery.meets_budget is True
        assert card.delivery.budget == "0.8x" and card.delivery.readings and card.delivery.predicted
        assert card.cost_cpu_s["finetune"] > 0 and card.cost_cpu_s["shared:cost_table"] > 0
        assert card.accuracy is not None and card.provenance["selected"]

    doc = json.loads((tmp_path / "results.json").read_text())
    methods = {m["method"] for m in doc["models"]}
    assert {"teacher mobilenet_v2 (25% labels)", "tofa supernet (25% labels)",
            "tofa supernet, labelled only (25% labels)", "extract + fine-tune (25% labels)",
            "tofa supernet (25% labels), sweep"} <= methods
    costs = {c["method"]: c for c in doc["costs"]}
    for stage in STAGES:
        assert set(costs[stage]["cost_cpu_s"]) == {"1", "5", "20"}
        assert costs[stage]["preparation_from"] == ["teacher-labelled", stage]
    assert costs["tofa-sweep"]["targets_measured"] == 2
    assert "## Cost of K targets" in (tmp_path / "results.md").read_text()

    again = run_bench("tofa-study", tmp_path, smoke=True, log=lambda _: None)
    assert {r.name: r.status for r in again.records if r.role == "one-off"} == {
        "teacher": "skipped", "teacher-labelled": "skipped", **dict.fromkeys(STAGES, "skipped")}
    before = {r.path: r.to_dict() for r in first.rows}
    assert {r.path: r.to_dict() for r in again.rows} == before  # nothing re-measured
