"""One delivery core (issue 19): one teacher loader for both engines, the supernet's report through
bespoke.report, the pruned baseline through the shared deliver-and-retry loop."""

from __future__ import annotations

import pytest
import torch

from bespoke.export import ModelCard, TeacherInfo, load_teacher, save_model_dir
from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(3, 32), engine="finetune", num_classes=3,
                     classes=["a", "b", "c"], resolution=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4),
                     accuracy=0.5)
    torch.manual_seed(0)
    save_model_dir(path, tiny_efficientnet(), card)
    return path


def test_both_engines_store_the_same_teacher_info_from_the_same_model_dir(teacher_dir, tmp_path) -> None:
    from bespoke.house import House, build_time_sources
    from bespoke.house.sources import TEACHER
    from bespoke.supernet.store import SupernetMeta

    model, info = load_teacher(teacher_dir)
    assert info == TeacherInfo(source=str(teacher_dir), arch="tiny", arch_config=tiny_arch_config(3, 32),
                               resolution=32, num_classes=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4),
                               accuracy=0.5, classes=["a", "b", "c"])
    sources = build_time_sources(model, info.arch_config, [], 32, pretrained_donors=False)
    house = House.create(tmp_path / "house", model, info, dict(sources.configs), sources.segmentation(TEACHER), [],
                         pretrained_donors=False, settings={"seed": 0}, data={"spec": None})
    supernet = SupernetMeta(teacher=info, classes=info.classes, spec={}, space={}, data={}, job={})
    assert House.open(house.root).meta.teacher == info
    assert SupernetMeta.model_validate_json(supernet.model_dump_json()).teacher == info


def test_an_old_supernet_json_teacher_still_reads() -> None:
    from bespoke.supernet.store import SupernetMeta

    old = {"source": "zoo:mobilenet_v2", "arch": "mobilenet_v2", "resolution": 64, "num_classes": 10,
           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "accuracy": None}
    meta = SupernetMeta.model_validate({"teacher": old, "classes": [], "spec": {}, "space": {}, "data": {}, "job": {}})
    assert meta.teacher.arch_config == {} and meta.teacher.classes == []


def test_one_rule_set_for_classes_and_resolution(teacher_dir) -> None:
    from bespoke.errors import BespokeError

    with pytest.raises(BespokeError, match="has 3 classes, the data 5"):
        load_teacher(teacher_dir, num_classes=5)
    with pytest.raises(BespokeError, match="cannot be rebuilt at resolution 48"):
        load_teacher(teacher_dir, resolution=48)
    with pytest.raises(BespokeError, match="resolution must be given"):
        load_teacher("mobilenet_v2")
    module, _ = load_teacher(teacher_dir)
    with pytest.raises(BespokeError, match="arch_config"):
        load_teacher(module)
    _, info = load_teacher(module, arch_config=tiny_arch_config(3, 32))
    assert (info.resolution, info.num_classes, info.mean) == (32, 3, (0.5, 0.5, 0.5))


def test_the_supernet_report_is_written_by_bespoke_report(teacher_dir, tmp_path, monkeypatch) -> None:
    import shutil

    from bespoke import report
    from bespoke.delivery import write_delivery
    from bespoke.supernet import report as supernet_report
    from bespoke.supernet.store import SupernetMeta

    model_dir = tmp_path / "models" / "fast"
    shutil.copytree(teacher_dir, model_dir)
    write_delivery(model_dir, ("fast", "2ms", "ms"), budget=2.0, readings=[1.5, 1.7], predicted=1.6, reference=3.0)
    _, info = load_teacher(teacher_dir)
    meta = SupernetMeta(teacher=info, classes=info.classes, spec={}, space={}, data={"spec": "synthetic"},
                        job={"train": {"steps": 3}})
    config = {"resolution": 32, "stages": [[{"kernel": 3, "expand": 4.0}], [{"kernel": 5, "expand": 6.0}] * 2]}
    choice = {"target": "fast", "budget": "2ms", "budget_resolved": 2.0, "unit": "ms", "predicted_cost": 1.6,
              "measured_cost": 1.6, "meets_budget": True, "accuracy": 0.5, "predicted_accuracy": 0.45,
              "config": config, "search_ms": 3.0, "attempts": 1, "model_dir": str(model_dir)}
    calls = []
    monkeypatch.setattr(supernet_report, "write_report",
                        lambda *a, **k: calls.append(a) or report.write_report(*a, **k))
    path = supernet_report.write_selection_report(tmp_path, [choice], predictor={"kendall_tau": 0.8, "n_train": 20},
                                                  meta=meta, failed={"hopeless": "no subnet under 0.1 ms"})
    text = path.read_text()
    assert len(calls) == 1 and (tmp_path / report.PLOT_NAME).is_file()
    assert text.startswith("# TOFA supernet selection")
    assert "## Accuracy predictor" in text and "Kendall tau **0.8**" in text
    assert "## Per-target choice" in text and "| hopeless | infeasible: no subnet under 0.1 ms |" in text
    results = text.split("## Results")[1].split("##")[0]
    assert "| tofa | fast | 2ms (= 2 ms) | 0.5000 | 1.600 |" in results  # measured median on its own target


def test_pruned_baseline_delivers_met_targets_and_refuses_a_hopeless_one_in_one_line(tmp_path) -> None:
    from bespoke.baselines import BudgetInfo, PruneSettings, Teacher, prune_and_distill
    from bespoke.errors import BespokeError
    from bespoke.export import read_card
    from bespoke.targets import measure, targets_from_dicts
    from bespoke.train import FinetuneConfig
    from tests.test_baselines import BASE, RES, small_net, tiny_data

    model = small_net()
    target = targets_from_dicts([{"name": "macs-half", "runtime": "macs", "budget": "0.5x"}])[0]
    reference = measure(model, target, RES).value
    teacher = Teacher(model=model, arch_config=BASE, arch="small", mean=(0.5,) * 3, std=(0.5,) * 3, value=reference)
    cfg = FinetuneConfig(epochs=1, batch_size=16, kd_weight=0.5, device="cpu")
    settings = PruneSettings(iterations=4, round_to=None)

    def measure_macs(m: torch.nn.Module) -> float:
        return measure(m, target, RES).value

    met = BudgetInfo(target="macs-half", text="0.5x", value=target.resolve_budget(reference), unit=target.unit)
    card = prune_and_distill(teacher, tiny_data(), cfg, tmp_path / "half", measure=measure_macs, budget=met,
                             search=settings)
    assert read_card(tmp_path / "half") == card
    d = card.delivery
    assert (d.target, d.budget, d.unit, d.reference) == ("macs-half", "0.5x", "MACs", reference)
    assert d.meets_budget and d.measured <= met.value and d.attempts == len(card.provenance["picks"]) >= 1
    hopeless = BudgetInfo(target="macs-tiny", text="0.0001x", value=1e-4 * reference, unit="MACs")
    with pytest.raises(BespokeError) as exc:
        prune_and_distill(teacher, tiny_data(), cfg, tmp_path / "tiny", measure=measure_macs, budget=hopeless,
                          search=settings)
    assert "cannot reach the budget" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "tiny").exists()


def test_the_block_engine_report_table_of_deliveries_comes_from_bespoke_report(teacher_dir, tmp_path) -> None:
    import shutil

    from bespoke.delivery import write_delivery
    from bespoke.export import read_card
    from bespoke.report import delivery_table

    shutil.copytree(teacher_dir, tmp_path / "m")
    card = write_delivery(tmp_path / "m", ("ort1", "0.5x", "ms"), budget=2.0, readings=[2.5], predicted=2.0)
    table = delivery_table([card, read_card(teacher_dir)])
    assert table.splitlines()[2] == "| ort1 | 2 ms | 2 | 2.5 | -20.0% | False |"
    assert len(table.splitlines()) == 3  # a card without a delivery section has no row

