"""The label-scarce path: a semi-supervised teacher, donors distilled from it on every image, the block engine in
label-scarce mode; preset checks and cost accounting (a stage built on a stage built on another)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from bespoke.baselines import TrainData, distilled_from, self_trained_teacher
from bespoke.bench import engine_stages, run_bench
from bespoke.bench.costs import method_costs
from bespoke.bench.preset import load_preset
from bespoke.bench.stages import StageRecord
from bespoke.errors import BespokeError
from bespoke.export import CARD, ModelCard, load_model_dir, read_card, save_model_dir
from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet, tiny_splits
from bespoke.train import UNLABELLED, FinetuneConfig, SemiSupervisedConfig, labelled_and_unlabelled

FASHION = Path(os.environ.get("BESPOKE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def test_hidden_labels_read_as_unlabelled_without_decoding() -> None:
    from bespoke.data import dataset_labels

    labelled = TensorDataset(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2]))
    unlabelled = TensorDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([1, 1]))
    both = labelled_and_unlabelled(labelled, unlabelled)
    assert dataset_labels(both).tolist() == [0, 1, 2, UNLABELLED, UNLABELLED]
    assert both[4][1] == UNLABELLED and both[0][1] == 0


def test_costs_count_what_a_stage_builds_on_transitively() -> None:
    records = [StageRecord("teacher-labelled", "t", "one-off", "done", cpu_s=10.0),
               StageRecord("teacher-semi", "semi", "one-off", "done", cpu_s=20.0, uses=["teacher-labelled"]),
               StageRecord("donor-x-labelled", "d", "one-off", "done", cpu_s=3.0),
               StageRecord("donor-x-kd", "kd", "one-off", "done", cpu_s=5.0,
                           uses=["teacher-semi", "donor-x-labelled"])]
    kd = {c.method: c for c in method_costs(records)}["kd"]
    assert kd.preparation_cpu_s == 38.0
    assert kd.preparation_from == ["teacher-semi", "donor-x-labelled", "teacher-labelled", "donor-x-kd"]


def test_preset_teacher_kinds() -> None:
    preset = load_preset("fashion-mnist")
    assert preset.engine_teacher("bespoke-label-scarce") == "semi" and preset.wants_semi_teacher()
    doc = preset.model_dump(mode="json")
    doc["semi_teacher"]["enabled"] = False
    with pytest.raises(ValueError, match=r"semi_teacher\.enabled is false"):
        type(preset).model_validate(doc)
    doc["semi_teacher"]["enabled"], doc["tofa"] = True, {"teacher": "noisy"}
    with pytest.raises(ValueError, match="'all', 'labelled', 'semi'"):
        type(preset).model_validate(doc)
    # the label-scarce block engine takes bespoke:'s settings, not its teacher
    doc["tofa"], doc["bespoke"] = {}, {"teacher": "all", "house": {"size": 7}}
    merged = type(preset).model_validate(doc).stage_settings("bespoke-label-scarce")
    assert merged == {"house": {"size": 7}}
    assert not load_preset("tofa-study").wants_semi_teacher() and not load_preset("demo").wants_semi_teacher()


def _tiny_model_dir(tmp_path: Path, name: str, seed: int) -> Path:
    model = tiny_efficientnet(3, 32, seed=seed)
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(3, 32), engine="finetune", num_classes=3,
                     classes=["r", "g", "b"], resolution=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    save_model_dir(tmp_path / name, model, card)
    return tmp_path / name


def test_self_trained_teacher_and_distilled_student(tmp_path: Path) -> None:
    splits = tiny_splits(n_train=48, n_test=24)
    labelled, unlabelled = Subset(splits.train, range(12)), Subset(splits.train, range(12, 48))
    data = TrainData(train=labelled, test=splits.test, classes=splits.classes, resolution=32,
                     info={"labels": "12 of 48"})
    cfg = FinetuneConfig(epochs=1, batch_size=8, eval_batch_size=16, device="cpu")
    semi = SemiSupervisedConfig(rounds=1, epochs=1, augment="flip")
    start = _tiny_model_dir(tmp_path, "start", 0)
    card = self_trained_teacher(start, labelled, unlabelled, data, cfg, semi, tmp_path / "semi", method="semi t")
    assert card.method == "semi t" and card.accuracy is not None and card.cost_cpu_s["semi_supervised"] > 0
    assert card.provenance["semi_supervised"]["rounds_run"][0]["accuracy"] is None  # round 0 was given
    assert (tmp_path / "semi" / CARD).is_file() and not card.latency_ms
    student = _tiny_model_dir(tmp_path, "student", 1)
    before = load_model_dir(student)[0].state_dict()
    kd = distilled_from(student, tmp_path / "semi", labelled, unlabelled, data, cfg, semi, tmp_path / "kd",
                        method="kd s")
    assert kd.engine == "baseline-donor-kd" and set(kd.cost_cpu_s) >= {"teacher_targets", "distill", "export"}
    assert kd.provenance["teacher"] == str(tmp_path / "semi")
    after = load_model_dir(tmp_path / "kd")[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert read_card(tmp_path / "kd").method == "kd s"


def test_the_semi_teacher_must_exist_to_be_asked_for(tmp_path: Path) -> None:
    from bespoke.bench.context import BenchContext

    preset = load_preset("fashion-mnist", smoke=True)
    ctx = BenchContext(preset=preset, out=tmp_path, smoke=True, splits=None, labelled=[], unlabelled=[],  # type: ignore[arg-type]
                       targets=list(preset.targets))
    with pytest.raises(BespokeError, match="'semi' teacher was not trained"):
        ctx.teacher("semi")
    with pytest.raises(ValueError, match="teacher kind"):
        ctx.teacher("noisy")


@pytest.mark.integration
@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not installed")
def test_label_scarce_stages_through_the_bench(tmp_path: Path) -> None:
    """Smoke preset, one donor: the semi-supervised teacher (built on the labelled-share one), the donor distilled
    from it, and the block engine in label-scarce mode (its house distilled from that teacher, students retrained
    on every image with the labelled share's labels only)."""
    base = load_preset("fashion-mnist", smoke=True)
    smaller = {**base.bespoke, "house": {**base.bespoke["house"], "size": 8}, "search": {"anneal": {"iterations": 20}}}
    preset = base.model_copy(update={"pruned": base.pruned.model_copy(update={"enabled": False}), "bespoke": smaller})
    stage = "bespoke-label-scarce"
    run_bench(preset, tmp_path, smoke=True, engines={stage: engine_stages()[stage]}, log=print)
    doc = json.loads((tmp_path / "results.json").read_text())
    stages = {s["name"]: s for s in doc["stages"]}
    for name in ("teacher-semi", "donor-mobilenet_v2-kd"):
        assert stages[name]["status"] == "done", stages[name]["message"]
    assert stages["teacher-semi"]["uses"] == ["teacher-labelled"]
    semi = read_card(tmp_path / "models" / "teacher-semi")
    assert semi.data["labelled"] + semi.data["unlabelled"] == semi.data["train"] == 120
    costs = {c["method"]: c for c in doc["costs"]}
    kd_cost = next(c for m, c in costs.items() if m.startswith("mobilenet_v2 + KD"))
    assert {"teacher-semi", "teacher-labelled", "donor-mobilenet_v2-labelled"} <= set(kd_cost["preparation_from"])
    status = doc["engines"][stage]
    if status["status"] == "failed":  # the tiny house may not reach 0.5x on a busy machine
        assert "budget" in status["message"], status["message"]
        return
    assert status["status"] == "done", status
    assert set(costs[stage]["preparation_from"]) >= {"teacher-semi", "teacher-labelled"}
    house = json.loads((tmp_path / "engines" / stage / "house" / "house.json").read_text())
    assert "teacher-semi" in json.dumps(house)
    rows = [m for m in doc["models"] if m["method"].startswith("bespoke block engine, label-scarce")]
    assert rows and all(r["accuracy"] is not None for r in rows)


def test_teacher_soft_targets_replace_or_join_the_largest_subnets() -> None:
    from bespoke.supernet.config import SupernetTrainConfig
    from bespoke.supernet.losses import largest_loss, mixed_logits

    labels = torch.tensor([0])
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])  # labelled weak | unl weak | strong
    teacher = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 4.0]])
    _, own, stats = largest_loss(logits, labels, 1, SupernetTrainConfig())
    assert torch.equal(own.logits, logits[:2]) and "teacher_kd" not in stats
    _, t, stats = largest_loss(logits, labels, 1, SupernetTrainConfig(soft_targets="teacher"), teacher)
    assert torch.equal(t.logits, teacher) and stats["teacher_kd"] > 0
    assert t.hard_labels(0.8)[0].tolist() == [0, 2]  # the true label of the labelled image, the teacher's else
    _, both, _ = largest_loss(logits, labels, 1, SupernetTrainConfig(soft_targets="both"), teacher)
    mean = (logits[:2].softmax(-1) + teacher.softmax(-1)) / 2
    assert torch.allclose(both.logits.softmax(-1), mean, atol=1e-6)
    assert torch.allclose(mixed_logits(teacher, teacher).softmax(-1), teacher.softmax(-1), atol=1e-6)
    with pytest.raises(ValueError, match="needs the teacher's logits"):
        largest_loss(logits, labels, 1, SupernetTrainConfig(soft_targets="teacher"))


def test_supernet_trains_on_the_teachers_soft_targets(tmp_path: Path) -> None:
    from bespoke.supernet import SupernetJob, train_supernet
    from bespoke.supernet.config import SupernetTrainConfig
    from bespoke.supernet.data import ResizedSource

    teacher = _tiny_model_dir(tmp_path, "teacher", 0)
    train = SupernetTrainConfig(steps=3, batch_size=8, n_random=1, eval_images=0, checkpoint_every=3,
                                soft_targets="both")
    result = train_supernet(SupernetJob(teacher=str(teacher), data="tiny", labels=0.25, out=tmp_path / "sn",
                                        train=train), data=ResizedSource(tiny_splits(32)))
    assert all(h["teacher_kd"] >= 0 and "kd" in h and "mask" in h for h in result.history)
    meta = json.loads((tmp_path / "sn" / "supernet.json").read_text())
    assert meta["job"]["train"]["soft_targets"] == "both" and meta["cost_cpu_s"]["supernet_train"] > 0
