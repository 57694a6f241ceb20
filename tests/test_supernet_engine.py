"""Supernet training (sandwich + semi-supervised loss, resume, divergence) and selection (predictor, cost tables,
evolution, extraction) on a tiny timm EfficientNet and a tiny synthetic data set."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bespoke.cost import CostTable
from bespoke.delivery import next_limit
from bespoke.errors import BespokeError, DivergenceError
from bespoke.export import ModelCard, load_model_dir, read_card, save_model_dir
from bespoke.supernet import (
    ResizedSource,
    SelectConfig,
    SubnetCosts,
    SupernetJob,
    SupernetTrainConfig,
    build_supernet,
    evolve,
    fit_predictor,
    kendall_tau,
    load_supernet,
    select_subnets,
    train_supernet,
)
from bespoke.supernet import select as select_module
from bespoke.supernet.efficiency import enumerate_parts
from bespoke.supernet.evolution import InfeasibleBudget
from bespoke.supernet.genome import GenomeLayout
from bespoke.supernet.losses import largest_loss, subnet_loss
from bespoke.supernet.predictor import ArchEncoder, collect_samples
from bespoke.supernet.tiny import tiny_arch_config, tiny_efficientnet, tiny_splits
from bespoke.targets import targets_from_dicts
from bespoke.targets.measure import torch_threads
from bespoke.zoo import load_state_dict


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest single-threaded (and do not fight other jobs for the cores)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    card = ModelCard(arch="tiny", arch_config=tiny_arch_config(3, 32), engine="finetune", num_classes=3,
                     resolution=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    save_model_dir(path, tiny_efficientnet(), card)
    return path


@pytest.fixture(scope="module")
def data():
    return ResizedSource(tiny_splits(32))


def _job(teacher_dir, out, **train) -> SupernetJob:
    base = {"steps": 12, "batch_size": 8, "n_random": 1, "lr": 3e-3, "threshold": 0.6, "eval_images": 60,
            "checkpoint_every": 4}
    return SupernetJob(teacher=str(teacher_dir), data="tiny", labels=0.25, out=out,
                       train=SupernetTrainConfig(**{**base, **train}))


@pytest.fixture(scope="module")
def trained(teacher_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("supernet")
    result = train_supernet(_job(teacher_dir, out), data=data)
    return out, result


def test_training_reduces_the_loss_and_records_cost(trained) -> None:
    out, result = trained
    sup = [h["sup"] for h in result.history]
    assert np.mean(sup[:3]) > np.mean(sup[-3:])
    assert all({"kd", "pl", "self", "mask"} <= h.keys() for h in result.history)
    assert result.eval["largest_accuracy"] > 0.6  # chance is 1/3
    meta = json.loads((out / "supernet.json").read_text())
    assert meta["cost_cpu_s"]["supernet_train"] > 0
    assert meta["data"]["labelled"] == 24 and meta["data"]["unlabelled"] == 72
    net, _ = load_supernet(out)  # rebuilt from JSON + safetensors alone
    assert net.space.resolutions == (24, 28, 32)


def test_resume_after_interruption_equals_uninterrupted_run(teacher_dir, data, tmp_path) -> None:
    train = {"steps": 6, "checkpoint_every": 2, "eval_images": 0}
    straight = train_supernet(_job(teacher_dir, tmp_path / "a", **train), data=data)

    def interrupt(step: int, stats: dict, net) -> None:
        if step == 3:
            raise KeyboardInterrupt

    job = _job(teacher_dir, tmp_path / "b", **train)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(job, data=data, callback=interrupt)
    assert not (tmp_path / "b" / "supernet.json").exists()
    resumed = train_supernet(job, data=data)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a = load_state_dict(tmp_path / "a" / "supernet.safetensors")
    b = load_state_dict(tmp_path / "b" / "supernet.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(BespokeError, match="other settings"):
        train_supernet(_job(teacher_dir, tmp_path / "b", **{**train, "lr": 1e-3}), data=data)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(teacher_dir, data, tmp_path) -> None:
    job = _job(teacher_dir, tmp_path, steps=6, checkpoint_every=2, eval_images=0)

    def poison(step: int, stats: dict, net) -> None:
        if step == 2:  # after the step-2 checkpoint: the next step must detect it and stop
            net.head.classifier.bias.data.fill_(float("nan"))

    with pytest.raises(DivergenceError) as info:
        train_supernet(job, data=data, callback=poison)
    assert info.value.step == 2
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_labelled_only_ablation_ignores_unlabelled_images(teacher_dir, data, tmp_path) -> None:
    result = train_supernet(_job(teacher_dir, tmp_path, steps=2, semi_supervised=False, eval_images=0), data=data)
    assert all("mask" not in h and "kd" in h for h in result.history)
    assert json.loads((tmp_path / "supernet.json").read_text())["data"]["unlabelled"] == 0


def test_smaller_subnets_learn_true_labels_of_labelled_images_and_confident_pseudo_labels_of_the_rest() -> None:
    """The largest subnet is wrong and unsure on the labelled images: their true labels still reach the smaller
    subnets (``subnet_labels``), while an unlabelled image counts only where the largest subnet is confident."""
    labels = torch.tensor([2, 0])
    weak = torch.tensor([[2.0, 0.0, 1.9], [0.0, 0.1, 0.0], [0.0, 9.0, 0.0], [0.1, 0.0, 0.0]])  # 2 labelled, 2 not
    logits = torch.cat([weak, torch.zeros(2, 3)])  # + the unlabelled strong views
    cfg = SupernetTrainConfig(threshold=0.8)
    _, targets, _ = largest_loss(logits, labels, 2, cfg)
    hard, mask = targets.hard_labels(cfg.threshold)
    assert hard.tolist()[:3] == [2, 0, 1] and mask.tolist() == [1.0, 1.0, 1.0, 0.0]
    perfect = torch.nn.functional.one_hot(hard, 3).float() * 20
    assert subnet_loss(perfect, targets, cfg)[1]["pl"] < 1e-6
    _, old, _ = largest_loss(logits, labels, 2, SupernetTrainConfig(threshold=0.8, subnet_labels=False))
    assert old.hard_labels(0.8)[1].tolist() == [0.0, 0.0, 1.0, 0.0]  # pseudo-labels only, as before


def test_next_limit_bisects_between_a_pick_that_met_the_budget_and_one_that_missed() -> None:
    # no bracket yet: the secant step scales the predicted cost by aim / measured
    assert next_limit(10.0, 8.0, 16.0, 9.0, None, math.inf) == pytest.approx(4.5)
    assert next_limit(10.0, 8.0, 4.0, 9.0, None, math.inf) == pytest.approx(18.0)
    # inside a bracket the secant step is kept; one that leaves it falls back to the midpoint
    assert next_limit(12.0, 11.0, 9.5, 9.0, 10.0, 14.0) == pytest.approx(11.0 * 9.0 / 9.5)
    assert next_limit(12.0, 11.0, 5.0, 9.0, 10.0, 14.0) == pytest.approx(12.0)


def test_a_floor_predicted_just_over_the_budget_is_measured_not_refused() -> None:
    from bespoke.delivery import BudgetBracket, RetryPolicy

    policy = RetryPolicy(margin=0.03)
    assert BudgetBracket(policy, 10.0, floor=5.0).limit == pytest.approx(9.7)
    assert BudgetBracket(policy, 10.0, floor=9.9).limit == pytest.approx(9.9)
    # the reference run's 0.35x target: smallest subnet predicted 0.8 % over the budget -> its limit is the floor
    assert BudgetBracket(policy, 0.5563, floor=0.5606).limit == pytest.approx(0.5606)
    assert BudgetBracket(policy, 10.0, floor=11.5, floor_error=0.15).limit == pytest.approx(11.5)
    assert BudgetBracket(policy, 10.0, floor=11.5).limit == pytest.approx(10.0)  # far over: the search refuses


def test_subnet_evaluator_runs_in_channels_last_with_the_plain_layout_answer(data) -> None:
    from bespoke.supernet.calibrate import accuracy, recalibrate_bn
    from bespoke.supernet.evaluator import SubnetEvaluator

    net = build_supernet(tiny_efficientnet(3, 32), 32)
    cfg = net.space.sample(np.random.default_rng(3))
    evaluator = SubnetEvaluator(data, (0.5,) * 3, (0.25,) * 3, split="test", limit=None, calib_images=48)
    sub, acc = evaluator(net, cfg)
    assert all(p.is_contiguous() for p in sub.parameters())  # plain layout again: ready for export and safetensors
    net.set_active_subnet(cfg)
    plain = recalibrate_bn(net.get_active_subnet(), evaluator.calibration_images(cfg.resolution))
    for a, b in zip(sub.state_dict().values(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # same BN statistics from the NHWC pass
    images, labels = evaluator._eval[cfg.resolution]
    assert abs(acc - accuracy(plain, images, labels)) <= 1 / labels.numel()  # at most one argmax tie flips


def test_kendall_tau() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_predictor_learns_a_ranking() -> None:
    net = build_supernet(tiny_efficientnet(), 32)
    rng = np.random.default_rng(0)
    cfgs = [net.space.sample(rng) for _ in range(150)]
    enc = ArchEncoder(net.space).encode(cfgs).numpy()
    weights = np.random.default_rng(1).normal(size=enc.shape[1])
    acc = 0.8 + 0.02 * (enc @ weights) + np.random.default_rng(2).normal(scale=0.002, size=len(cfgs))
    fit = fit_predictor(net.space, list(zip(cfgs, acc.tolist(), strict=True)), seed=0)
    assert fit.metrics["kendall_tau"] > 0.6
    assert fit.metrics["n_test"] == 30
    genomes = GenomeLayout(net.space).encode_many(cfgs[:5])
    assert np.allclose(fit.predict(cfgs[:5]), fit.predict_genomes(genomes))


def test_sample_collection_resumes_and_counts_the_cost_of_every_attempt(tmp_path: Path) -> None:
    net = build_supernet(tiny_efficientnet(), 32)
    cfgs = [net.space.sample(np.random.default_rng(s)) for s in range(6)]
    cache = tmp_path / "samples.json"
    calls: list[str] = []

    def measure(cfg) -> float:
        calls.append(cfg.key())
        if len(calls) == 5:
            raise KeyboardInterrupt
        sum(i * i for i in range(1_000_000))  # some CPU time to count (tens of ms)
        return 0.5

    with pytest.raises(KeyboardInterrupt):
        collect_samples(cfgs, measure, cache)
    first = json.loads(cache.read_text())
    assert len(first) == 4 and all(row["cpu_s"] > 0 for row in first)
    samples, carried = collect_samples(cfgs, measure, cache)
    assert [c.key() for c, _ in samples] == [c.key() for c in cfgs]
    assert len(calls) == 7  # only the two missing ones measured again
    assert carried == pytest.approx(sum(row["cpu_s"] for row in first))


def _synthetic_table(net, tmp_path) -> SubnetCosts:
    """Random positive part costs, larger for wider/bigger parts (a stand-in for a measured latency table)."""
    layout = enumerate_parts(net.spec, net.space, 1)
    rng = np.random.default_rng(0)
    values = {key: float(np.prod(shape) * 1e-4 * rng.uniform(0.8, 1.2)) for key, (_, shape) in layout.parts.items()}
    table = CostTable(settings={}, unit="ms", parts=values, call_overhead=0.01)
    return SubnetCosts(table, layout, list(net.space.stage_lengths), tmp_path, "synthetic")


def test_evolution_respects_the_budget_and_fails_loudly_when_infeasible(tmp_path) -> None:
    net = build_supernet(tiny_efficientnet(), 32)
    table = _synthetic_table(net, tmp_path)
    cost = table.genome_cost(net.space)
    cfgs = [net.space.sample(np.random.default_rng(s)) for s in range(10)]
    assert np.allclose(cost(GenomeLayout(net.space).encode_many(cfgs)), table.predict(cfgs))
    largest = table.predict([net.space.largest()])[0]
    floor = table.predict([net.space.smallest()])[0]
    encoder = ArchEncoder(net.space)

    def bigger_is_better(genomes: np.ndarray) -> np.ndarray:
        return encoder.encode_genomes(genomes).sum(1).numpy() + genomes[:, 0]

    for frac in (0.5, 0.8):
        budget = floor + frac * (largest - floor)
        res = evolve(net.space, fitness=bigger_is_better, cost=cost, budget=budget, population=24, generations=8)
        assert table.predict([res.best])[0] <= budget
        assert res.cost <= budget and res.cost > floor
    with pytest.raises(InfeasibleBudget, match="smallest subnet costs") as info:
        evolve(net.space, fitness=bigger_is_better, cost=cost, budget=floor * 0.9, unit="ms")
    assert info.value.floor == pytest.approx(floor)


def test_select_delivers_verified_model_dirs_per_target(trained, data, tmp_path) -> None:
    supernet, _ = trained
    targets = targets_from_dicts([
        {"name": "ort", "runtime": "onnxruntime", "budget": "0.95x", "repeats": 5, "warmup": 1},
        {"name": "params-half", "runtime": "params", "budget": "0.5x"},
        {"name": "macs-07", "runtime": "macs", "budget": "0.7x"},
    ])
    cfg = SelectConfig(predictor_samples=12, predictor_val_images=30, calib_images=32, population=16,
                       generations=5, calibration_subnets=3)
    result = select_subnets(supernet, targets, tmp_path / "out", config=cfg, data=data)
    assert [c.target for c in result.choices] == ["ort", "params-half", "macs-07"]
    assert "kendall_tau" in result.predictor
    for choice in result.choices:
        model, card = load_model_dir(choice.model_dir)
        assert card.engine == "tofa" and card.arch_config["builder"] == "tofa-subnet"
        assert card.target == choice.target and card.budget_resolved == choice.budget_resolved
        assert card.onnx_max_abs_diff is not None and card.onnx_max_abs_diff < 1e-4
        assert card.resolution == choice.config["resolution"]
        assert card.cost_cpu_s["shared:supernet_train"] > 0 and "select" in card.cost_cpu_s
        assert choice.search_ms < 1000
        x = torch.randn(1, 3, card.resolution, card.resolution)
        with torch.no_grad():
            assert model(x).shape == (1, 3)
    exact = {c.target: c for c in result.choices if c.unit != "ms"}
    assert all(c.meets_budget and c.measured_cost <= c.budget_resolved for c in exact.values())
    assert load_model_dir(result.choices[0].model_dir)[1].latency_ms["ort"] > 0
    assert (tmp_path / "out" / "report.md").read_text().startswith("# TOFA")
    stamps = {c.target: (Path(c.model_dir) / "model.onnx").stat().st_mtime_ns for c in result.choices}
    again = select_subnets(supernet, targets, tmp_path / "out", config=cfg, data=data)  # a rerun resumes
    assert again.choices == result.choices
    assert stamps == {c.target: (Path(c.model_dir) / "model.onnx").stat().st_mtime_ns for c in again.choices}
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 1000

    # a new target later: predictor and tables are cached, no training; an impossible one fails loudly
    more = targets_from_dicts([{"name": "params-04", "runtime": "params", "budget": "0.4x"},
                               {"name": "params-tiny", "runtime": "params", "budget": "0.01x"}])
    with pytest.raises(BespokeError, match=r"params-tiny.*smallest subnet"):
        select_subnets(supernet, more, tmp_path / "out2", config=cfg, data=data)
    assert (tmp_path / "out2" / "params-04" / "card.json").is_file()


def _int8_selection(**overrides: Any) -> tuple[list, SelectConfig]:
    """One int8 target at a loose budget (this checks the int8 path, not a speed-up: tiny graphs are not faster
    quantized) and a small selection with one PTQ candidate."""
    from bespoke.quantize import PTQSearch

    targets = targets_from_dicts([{"name": "ort-int8", "runtime": "onnxruntime", "precision": "int8",
                                   "budget": "5x", "repeats": 5, "warmup": 1}])
    one = PTQSearch(formats=("QOperator",), weight_types=("uint8",), methods=("MinMax",), reduce_range=(False,),
                    min_speedup=0, max_excluded=0)
    return targets, SelectConfig(predictor_samples=12, predictor_val_images=30, calib_images=32, population=16,
                                 generations=5, calibration_subnets=3, ptq=one, int8_agreement=0.0, **overrides)


def test_an_int8_target_gets_the_int8_graph_of_a_subnet_searched_on_quantized_parts(trained, data, tmp_path
                                                                                     ) -> None:
    supernet, _ = trained
    targets, cfg = _int8_selection()
    result = select_subnets(supernet, targets, tmp_path / "out", config=cfg, data=data)
    (choice,) = result.choices
    card = read_card(choice.model_dir)
    assert Path(choice.model_dir) == tmp_path / "out" / "ort-int8"
    assert card.precision == "int8" and card.quantization is not None and card.engine == "tofa"
    assert card.quantization.fp32_twin == str((tmp_path / "out" / ".fp32" / "ort-int8").resolve())
    assert card.delivery.measured == pytest.approx(choice.measured_cost, rel=1e-3) and choice.meets_budget
    tables = [json.loads(p.read_text()) for p in (supernet / "latency").glob("*.json")]
    assert "int8" in {t["settings"]["precision"] for t in tables}
    again = select_subnets(supernet, targets, tmp_path / "out", config=cfg, data=data)  # a rerun resumes
    assert again.choices[0].model_dir == choice.model_dir and again.choices[0].config == choice.config


def test_an_int8_target_with_qat_quantizes_the_subnet_fine_tuned_under_fake_quantization(trained, data, tmp_path
                                                                                         ) -> None:
    supernet, _ = trained
    targets, cfg = _int8_selection(qat_epochs=1)
    (choice,) = select_subnets(supernet, targets, tmp_path / "out", config=cfg, data=data).choices
    card = read_card(choice.model_dir)
    qat_dir = tmp_path / "out" / ".fp32" / "ort-int8-qat"
    assert card.precision == "int8" and card.quantization.method == "qat-static"
    assert card.quantization.fp32_twin == str(qat_dir.resolve())
    qat = read_card(qat_dir).provenance["qat"]
    assert qat["recipe"]["kd_weight"] == 1.0  # label-free: distilled from the fp32 subnet only
    assert qat["source"] == str((tmp_path / "out" / ".fp32" / "ort-int8").resolve())


def test_a_missed_budget_is_searched_again_and_a_hopeless_one_delivers_nothing(trained, data, tmp_path,
                                                                                 monkeypatch) -> None:
    """A target that runs every subnet slower than the cost table predicts: the first pick misses, the next
    search aims lower by the measured miss (down to the smallest subnet, even when the table calls that one over
    budget); when every try misses, no model is left behind."""
    supernet, _ = trained
    real = select_module._measure_after_export
    slowdown = {"factor": 3.0}

    def slower_device(*args, **kwargs):
        measured = real(*args, **kwargs)
        return measured.model_copy(update={"value": measured.value * slowdown["factor"]})

    monkeypatch.setattr(select_module, "_measure_after_export", slower_device)
    test_evaluations = []
    real_accuracy = select_module.SubnetEvaluator.accuracy

    def counted_accuracy(self, model, resolution):
        if self.split == "test":
            test_evaluations.append(resolution)
        return real_accuracy(self, model, resolution)

    monkeypatch.setattr(select_module.SubnetEvaluator, "accuracy", counted_accuracy)
    cfg = SelectConfig(predictor_samples=12, predictor_val_images=30, calib_images=32, population=16,
                       generations=5, calibration_subnets=3, budget_retries=4)
    targets = targets_from_dicts([{"name": "macs-09", "runtime": "macs", "budget": "0.9x"}])
    choice = select_subnets(supernet, targets, tmp_path / "out", config=cfg, data=data).choices[0]
    assert choice.attempts > 1 and choice.meets_budget and choice.measured_cost <= choice.budget_resolved
    assert len(test_evaluations) == 1  # only the delivered attempt is evaluated on the test split
    assert choice.wall_s > 0 and json.loads((Path(choice.model_dir) / "card.json").read_text())["accuracy"] is not None

    # a device faster than the table: the first pick leaves half the budget unused, the next searches aim higher
    # (with a predictor that prefers bigger subnets, as a trained one does; this tiny one saturates at 1.0)
    slowdown["factor"] = 0.5
    real_evolve = select_module.evolve
    monkeypatch.setattr(select_module, "evolve", lambda space, *, fitness, cost, **kw: real_evolve(
        space, fitness=cost, cost=cost, **kw))
    roomy = targets_from_dicts([{"name": "macs-05", "runtime": "macs", "budget": "0.5x"}])
    fast = select_subnets(supernet, roomy, tmp_path / "out3", config=cfg, data=data).choices[0]
    picks = json.loads((Path(fast.model_dir) / "card.json").read_text())["provenance"]["picks"]
    assert fast.attempts == len(picks) > 1 and fast.measured_cost <= fast.budget_resolved
    assert picks[0]["measured"] < cfg.budget_fill * fast.budget_resolved
    assert fast.measured_cost == max(p["measured"] for p in picks if p["measured"] <= fast.budget_resolved)

    # a device on which every subnet but the smallest runs far slower than the table says: the search keeps
    # finding under-priced subnets down to the table's floor, then the smallest subnet itself is tried
    monkeypatch.setattr(select_module, "evolve", real_evolve)
    smallest = load_supernet(supernet)[0].space.smallest().to_dict()

    def only_the_smallest_fits(ctx, sub, model_dir, target, *args, **kwargs):
        measured = real(ctx, sub, model_dir, target, *args, **kwargs)
        fits = read_card(model_dir).provenance["subnet"] == smallest
        return measured.model_copy(update={"value": measured.value if fits else 1e12})

    monkeypatch.setattr(select_module, "_measure_after_export", only_the_smallest_fits)
    tight = targets_from_dicts([{"name": "macs-08", "runtime": "macs", "budget": "0.8x"}])
    last = select_subnets(supernet, tight, tmp_path / "out4", config=cfg, data=data).choices[0]
    assert last.config == smallest and last.attempts > 1 and last.measured_cost <= last.budget_resolved

    monkeypatch.setattr(select_module, "_measure_after_export", slower_device)
    slowdown["factor"] = 100.0
    hopeless = targets_from_dicts([{"name": "macs-095", "runtime": "macs", "budget": "0.95x"}])
    with pytest.raises(BespokeError, match=r"macs-095: budget .* missed after export"):
        select_subnets(supernet, hopeless, tmp_path / "out2", config=cfg, data=data)
    assert not (tmp_path / "out2" / "macs-095").exists()
    assert "macs-095" in json.loads((tmp_path / "out2" / "selection.json").read_text())["infeasible"]


def test_a_retry_aimed_under_the_floor_delivers_the_best_pick_and_a_failing_one_leaves_nothing(
        trained, data, tmp_path, monkeypatch) -> None:
    """Picks recalibrate the cost table, so a retry can aim under its new floor: that retry is the smallest
    subnet (measured if new) and the best pick within budget is delivered; a search that raises anything else
    leaves no model directory for the bench to count as delivered."""
    supernet, _ = trained
    real_search, real_measure = select_module._search, select_module._measure_after_export
    calls: list[float] = []
    failure: dict[str, Exception] = {}

    def search(ctx, table, limit, unit):
        calls.append(limit)
        if len(calls) > 1:
            raise failure.get("exc") or InfeasibleBudget(limit, 2 * limit, unit)
        return real_search(ctx, table, limit, unit)

    def faster_device(*args, **kwargs):  # the first pick leaves half the budget unused: the loop searches again
        measured = real_measure(*args, **kwargs)
        return measured.model_copy(update={"value": measured.value * 0.5})

    monkeypatch.setattr(select_module, "_search", search)
    monkeypatch.setattr(select_module, "_measure_after_export", faster_device)
    cfg = SelectConfig(predictor_samples=12, predictor_val_images=30, calib_images=32, population=16,
                       generations=5, calibration_subnets=3, budget_retries=4)
    roomy = targets_from_dicts([{"name": "macs-05", "runtime": "macs", "budget": "0.5x"}])
    choice = select_subnets(supernet, roomy, tmp_path / "out", config=cfg, data=data).choices[0]
    assert len(calls) >= 2 and choice.meets_budget and choice.attempts >= 1  # retries went under the floor
    assert read_card(choice.model_dir).delivery is not None

    calls.clear()
    failure["exc"] = RuntimeError("search crashed")
    with pytest.raises(RuntimeError, match="search crashed"):
        select_subnets(supernet, roomy, tmp_path / "out2", config=cfg, data=data)
    assert not (tmp_path / "out2" / "macs-05").exists()
