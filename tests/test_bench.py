"""bespoke.bench: preset validation, stage skip/resume, engine registry, cost of K targets, CLI function."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import yaml

from bespoke.bench import (
    StageLedger,
    StageRecord,
    deep_merge,
    list_presets,
    load_preset,
    method_costs,
    register_engine_stage,
    run_model_stage,
)
from bespoke.bench.costs import costs_markdown
from bespoke.bench.engines import engine_stages, missing_reason, run_engine_stage
from bespoke.bench.preset import preset_path
from bespoke.bench.run import _claim_out_dir
from bespoke.errors import BespokeError
from bespoke.export import Delivery, ModelCard, write_card


def card(cost: float = 10.0, target: str | None = None) -> ModelCard:
    return ModelCard(arch="a", arch_config={"builder": "zoo"}, engine="e", num_classes=2, resolution=8,
                     mean=(0.5,) * 3, std=(0.5,) * 3,
                     delivery=Delivery(target=target, unit="ms") if target else None,
                     cost_cpu_s={"train": cost, "shared:prep": 1000.0})


# ---------------------------------------------------------------- presets

def test_packaged_preset_validates_full_and_smoke() -> None:
    full = load_preset("fashion-mnist")
    smoke = load_preset("fashion-mnist", smoke=True)
    assert "fashion-mnist" in list_presets()
    assert full.teacher.model == "efficientnet_lite2"
    assert [d.model for d in full.donors] == ["efficientnet_lite0", "mobilenet_v2"]
    assert [str(t.budget) for t in full.targets] == ["0.7x", "0.5x", "0.35x"]
    assert all(t.runtime == "onnxruntime" and t.threads == 1 and t.batch == 1 for t in full.targets)
    cfg = full.train_config(full.donors[0])  # the plain recipe for every baseline
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.label_smoothing, cfg.augment) == (3, 64, 1e-3, 0.1, "flip")
    assert full.train_config(full.teacher).epochs == 5  # the teacher trains longer: it must be the best model
    assert full.data.resolution == 64 and full.data.train_images == 12_000 and full.data.test_images is None
    assert full.data.label_fraction == 0.1 and full.pruned_config().kd_weight > 0
    assert smoke.recipe.epochs == 1 and smoke.data.train_images < 1000 and smoke.data.test_images is not None
    assert smoke.recipe.lr == full.recipe.lr  # untouched keys survive the overlay


def test_data_section_gives_exact_train_and_val_counts() -> None:
    kwargs = load_preset("fashion-mnist").data.load_kwargs()
    pool, frac = kwargs["train_limit"], kwargs["val_fraction"]
    val = int(pool * frac + 0.5)  # how bespoke.data carves the validation split
    assert (pool - val, val) == (12_000, 1_200)


def write_preset(tmp_path: Path, **changes: object) -> Path:
    doc = yaml.safe_load(preset_path("fashion-mnist").read_text())
    doc = deep_merge(doc, dict(changes))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("changes, match", [
    ({"typo": 1}, "typo"),
    ({"recipe": {"epochz": 3}}, "epochz"),
    ({"teacher": {"model": "efficientnet_lite2", "train": {"lr_typo": 1}}}, "lr_typo"),
    ({"targets": []}, "targets"),
    ({"measure": {"threads": [1, 1]}}, "distinct"),
    ({"smoke": {"data": {"resolutoin": 32}}}, "resolutoin"),
    ({"tofa": {"trian": {}}}, "trian"),
    ({"bespoke": {"teacher": "best"}}, "teacher"),
])
def test_preset_errors_are_loud(tmp_path: Path, changes: dict, match: str) -> None:
    path = write_preset(tmp_path, **changes)
    with pytest.raises(BespokeError, match=match):
        load_preset(path, smoke=True)


def test_unknown_preset_name() -> None:
    with pytest.raises(BespokeError, match="unknown preset"):
        load_preset("no-such-preset")


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2], "k": 1}
    assert deep_merge(base, {"a": {"y": 3}, "l": [9]}) == {"a": {"x": 1, "y": 3}, "l": [9], "k": 1}
    assert base["a"] == {"x": 1, "y": 2}


# ---------------------------------------------------------------- stages: skip / resume

def test_model_stage_runs_once_then_is_skipped(tmp_path: Path) -> None:
    ledger = StageLedger(tmp_path / "stages.json")
    calls = []

    def make() -> ModelCard:
        calls.append(1)
        c = card(12.5)
        write_card(tmp_path / "m", c)
        return c

    first = run_model_stage(ledger, "s", tmp_path / "m", make, method="M", role="one-off", log=lambda _: None)
    assert first.status == "done" and first.cpu_s == 12.5 and calls == [1]
    second = run_model_stage(StageLedger(tmp_path / "stages.json"), "s", tmp_path / "m", make, method="M",
                             role="one-off", log=lambda _: None)
    assert second.status == "skipped" and second.cpu_s == 12.5 and calls == [1]
    assert second.wall_s == first.wall_s  # kept from the ledger of the run that did the work


def test_incomplete_model_dir_is_rerun_and_failures_are_recorded(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(b"half-written")  # no card.json: not complete
    ledger = StageLedger(tmp_path / "stages.json")

    def fail() -> ModelCard:
        raise BespokeError("budget unreachable")

    rec = run_model_stage(ledger, "s", tmp_path / "m", fail, method="M", role="per-target", log=lambda _: None)
    assert rec.status == "failed" and "budget unreachable" in rec.message
    assert StageLedger(tmp_path / "stages.json").get("s").status == "failed"


def test_engine_stage_cost_split_and_resume(tmp_path: Path) -> None:
    from bespoke.bench.context import BenchContext

    calls = []

    def engine(ctx: BenchContext) -> list[Path]:
        calls.append(1)
        dirs = []
        for t in ("t1", "t2"):
            write_card(tmp_path / t, card(5.0, target=t))
            dirs.append(tmp_path / t)
        return dirs

    ctx = BenchContext(preset=load_preset("fashion-mnist"), out=tmp_path, smoke=True, splits=None,  # type: ignore[arg-type]
                       labelled=None, unlabelled=None, targets=[], log=lambda _: None)  # type: ignore[arg-type]
    ledger = StageLedger(tmp_path / "stages.json")
    records = run_engine_stage(ledger, "eng", engine, ctx)
    assert [r.role for r in records] == ["one-off", "per-target", "per-target"]
    assert [r.cpu_s for r in records[1:]] == [5.0, 5.0]  # shared: entries are not per-target cost
    assert records[0].status == "done" and records[0].cpu_s >= 0
    again = run_engine_stage(StageLedger(tmp_path / "stages.json"), "eng", engine, ctx)
    assert calls == [1] and again[0].status == "skipped" and len(again) == 3

    def broken(ctx: BenchContext) -> list[Path]:
        raise RuntimeError("boom")

    failed = run_engine_stage(ledger, "broken", broken, ctx)
    assert failed[0].status == "failed" and "boom" in failed[0].message


def test_engine_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    import bespoke.bench.engines as engines

    monkeypatch.setattr(engines, "_ENGINE_STAGES", {})  # leave the real registry as it was

    def fn(ctx: object) -> list[Path]:
        return []

    register_engine_stage("test-engine", fn)
    register_engine_stage("test-engine", fn)  # the same function again is fine
    with pytest.raises(ValueError, match="twice"):
        register_engine_stage("test-engine", lambda ctx: [])
    assert engine_stages()["test-engine"] is fn
    assert "not run" in missing_reason("bespoke") or "no bench stage" in missing_reason("bespoke")


def test_out_dir_of_another_preset_is_refused(tmp_path: Path) -> None:
    full, smoke = load_preset("fashion-mnist"), load_preset("fashion-mnist", smoke=True)
    _claim_out_dir(tmp_path, full, False)
    _claim_out_dir(tmp_path, full, False)  # same settings: resume
    with pytest.raises(BespokeError, match="other settings"):
        _claim_out_dir(tmp_path, smoke, True)


def test_settings_added_since_a_run_started_do_not_block_its_resume(tmp_path: Path) -> None:
    full = load_preset("fashion-mnist")
    _claim_out_dir(tmp_path, full, False)
    snapshot = tmp_path / "preset.json"
    old = json.loads(snapshot.read_text())
    del old["preset"]["recipe"]["memory_format"], old["preset"]["targets"][0]["precision"]
    snapshot.write_text(json.dumps(old))
    lines: list[str] = []
    _claim_out_dir(tmp_path, full, False, lines.append)
    assert lines == ["[bench] settings added since this run started: preset.recipe.memory_format, "
                     "preset.targets[0].precision"]
    assert "memory_format" in json.loads(snapshot.read_text())["preset"]["recipe"]  # snapshot brought up to date
    old["preset"]["recipe"]["epochs"] += 1  # a changed setting still refuses
    snapshot.write_text(json.dumps(old))
    with pytest.raises(BespokeError, match="other settings"):
        _claim_out_dir(tmp_path, full, False)


# ---------------------------------------------------------------- costs

def test_cost_of_k_targets() -> None:
    records = [
        StageRecord(name="teacher", method="teacher", role="one-off", status="done", cpu_s=100.0),
        StageRecord(name="donor", method="donor", role="one-off", status="skipped", cpu_s=40.0),
        StageRecord(name="p1", method="pruned", role="per-target", status="done", cpu_s=10.0, uses=["teacher"]),
        StageRecord(name="p2", method="pruned", role="per-target", status="done", cpu_s=30.0, uses=["teacher"]),
        StageRecord(name="p3", method="pruned", role="per-target", status="failed", cpu_s=99.0, uses=["teacher"]),
        StageRecord(name="eng", method="eng", role="one-off", status="done", cpu_s=50.0, uses=["teacher"]),
        StageRecord(name="eng:t1", method="eng", role="per-target", status="done", cpu_s=2.0),
        StageRecord(name="gone", method="gone", role="one-off", status="failed", cpu_s=1.0),
    ]
    costs = {c.method: c for c in method_costs(records)}
    assert set(costs) == {"teacher", "donor", "pruned", "eng"}
    assert [costs["donor"].cost(k) for k in (1, 5, 20)] == [40.0, 40.0, 40.0]
    assert costs["pruned"].preparation_cpu_s == 100.0 and costs["pruned"].per_target_cpu_s == 20.0
    assert costs["pruned"].cost(5) == 200.0 and costs["pruned"].targets_measured == 2
    assert costs["eng"].cost(20) == 150.0 + 40.0 and costs["eng"].preparation_from == ["teacher", "eng"]
    assert costs["eng"].to_dict()["cost_cpu_s"] == {"1": 152.0, "5": 160.0, "20": 190.0}
    assert "cost(K) = preparation + K x per-target" in costs_markdown(list(costs.values()))


def test_redeliver_forgets_an_engines_deliveries_and_keeps_its_preparation(tmp_path: Path) -> None:
    from bespoke.bench.run import _check_engine_names, _forget_deliveries
    from bespoke.bench.stages import StageRecord

    out = tmp_path / "run"
    delivered, prepared, outside = out / "engines/tofa/models/t1", out / "engines/tofa/supernet", tmp_path / "x"
    for d in (delivered, prepared, outside):
        write_card(d, card(5.0))
    ledger = StageLedger(out / "stages.json")
    ledger.put(StageRecord(name="tofa", method="tofa", role="one-off", status="done",
                           dirs=[str(delivered), str(outside)]))
    ledger.put(StageRecord(name="bespoke", method="bespoke", role="one-off", status="done", dirs=[]))
    lines: list[str] = []
    _forget_deliveries(ledger, out, ["tofa"], lines.append)
    assert not delivered.exists() and prepared.exists() and outside.exists()  # nothing outside the run is deleted
    assert set(StageLedger(out / "stages.json").records) == {"bespoke"}
    assert "2 delivered model(s) deleted" in lines[0]
    with pytest.raises(BespokeError, match=r"unknown engine stage.*tofaa"):
        _check_engine_names(["tofaa"])


def test_bench_command_is_a_thin_typer_function() -> None:
    import typer
    from typer.testing import CliRunner

    from bespoke.cli.bench import bench_command

    assert list(inspect.signature(bench_command).parameters) == ["preset", "smoke", "out", "remeasure", "redeliver"]
    app = typer.Typer()
    app.command("bench")(bench_command)
    app.command("other")(lambda: None)  # two commands: "bench" is a sub-command, as in the real app
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "--smoke" in result.output and "--preset" in result.output
    assert "--remeasure" in result.output and "--redeliver" in result.output


def test_demo_preset_takes_the_flags_and_validates(tmp_path):
    from bespoke.bench.demo import DemoConfig, demo_preset, run_demo

    base = demo_preset(DemoConfig())
    assert base.name == "demo" and len(base.targets) == 3 and not base.donors and not base.pruned.enabled
    (tmp_path / "t.yaml").write_text("targets:\n  - {name: mine, runtime: onnxruntime, threads: 2, budget: 0.6x}\n")
    spec = demo_preset(DemoConfig(teacher="mobilenet_v2", train_images=500, epochs=2, labels=0.2, seed=3,
                                  targets=tmp_path / "t.yaml"))
    assert spec.teacher.model == "mobilenet_v2" and spec.recipe.epochs == 2 and spec.recipe.seed == 3
    assert spec.data.train_images == 500 and spec.data.label_fraction == 0.2 and spec.data.seed == 3
    assert [(t.name, t.threads, str(t.budget)) for t in spec.targets] == [("mine", 2, "0.6x")]
    assert demo_preset(DemoConfig(smoke=True)).data.resolution == 32
    with pytest.raises(BespokeError, match="unknown engine"):
        run_demo(DemoConfig(engines=["nope"], out=tmp_path / "o"))


def test_engine_prediction_is_put_on_the_bench_scale() -> None:
    from bespoke.bench.measuring import prediction_on_scale
    from bespoke.export import Delivery, ModelCard

    def card(**kw: object) -> ModelCard:
        delivery = Delivery(target="t", unit="ms", **kw) if kw else None  # type: ignore[arg-type]
        return ModelCard(arch="a", arch_config={}, engine="bespoke", num_classes=2, resolution=8,
                         mean=(0.5,) * 3, std=(0.5,) * 3, delivery=delivery)

    # the engine timed its teacher at 5.0 ms and predicts 2.5 ms (half of it); the bench's teacher took 4.0 ms
    scaled = card(predicted=2.5, reference=5.0)
    assert prediction_on_scale(scaled, 4.0) == pytest.approx(2.0)
    assert prediction_on_scale(card(predicted=2.5), 4.0) == 2.5  # no recorded scale: as predicted
    assert prediction_on_scale(card(), 4.0) is None
    assert prediction_on_scale(scaled, None) == 2.5


def test_finished_stage_is_measured_at_once_and_then_needs_no_model_file(tmp_path: Path, tiny_net, tiny_splits) -> None:
    """A stage's models are timed when it ends (the teacher best of 3, others paired with it); the cards keep
    the figures, so measuring again reads them back even when the ONNX file is gone."""
    from bespoke.bench import BenchContext
    from bespoke.bench.context import TEACHER
    from bespoke.bench.measuring import measure_record
    from bespoke.export import ONNX, read_card
    from bespoke.report import LATENCY_1T, LATENCY_2T
    from bespoke.targets import export_onnx_bytes

    def model_dir(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / ONNX).write_bytes(export_onnx_bytes(tiny_net.eval(), (1, 3, 16, 16), dynamic_batch=True))
        write_card(d, card().model_copy(update={"accuracy": 0.5, "resolution": 16}))
        return d

    teacher, other = model_dir("teacher"), model_dir("other")
    preset = load_preset("fashion-mnist", smoke=True)
    ctx = BenchContext(preset=preset, out=tmp_path, smoke=True, splits=tiny_splits, labelled=tiny_splits.train,
                       unlabelled=tiny_splits.train, targets=list(preset.targets), log=lambda _: None)
    failed = StageRecord(name="x", method="x", role="one-off", status="failed", dirs=[str(other)])
    assert measure_record(ctx, failed) is None  # no reference yet, and a failed stage is never measured
    ctx.teacher_dirs[TEACHER] = teacher
    assert measure_record(ctx, failed) is None and read_card(other).latency_ms == {}

    ref = measure_record(ctx, StageRecord(name=TEACHER, method="t", role="one-off", status="done",
                                          dirs=[str(teacher)]))
    assert ref is not None and set(ref.latency_ms) == {LATENCY_1T, LATENCY_2T}
    done = measure_record(ctx, StageRecord(name="x", method="x", role="one-off", status="done", dirs=[str(other)]))
    assert done is not None and set(done.latency_ms) == {LATENCY_1T, LATENCY_2T}
    assert "ratio" in done.latency[LATENCY_1T]["details"]  # timed alongside the reference

    ctx.remeasure = True  # e.g. after a change of the timing protocol: timed again, once per run
    stage = StageRecord(name="x", method="x", role="one-off", status="skipped", dirs=[str(other)])
    retimed = measure_record(ctx, stage)
    assert retimed is not None and retimed.latency != done.latency
    readings = retimed.latency[LATENCY_1T]["readings"]  # the new reading joins the first; the median is shown
    assert readings[0] == done.latency_ms[LATENCY_1T] and len(readings) == 2
    assert retimed.latency_ms[LATENCY_1T] == round(sum(readings) / 2, 4)
    assert measure_record(ctx, stage).latency == retimed.latency  # type: ignore[union-attr]
    assert measure_record(ctx, StageRecord(name=TEACHER, method="t", role="one-off", status="done",
                                           dirs=[str(teacher)])).latency == ref.latency  # type: ignore[union-attr]
    done = retimed

    (other / ONNX).unlink()
    again = measure_record(ctx, StageRecord(name="x", method="x", role="one-off", status="skipped",
                                            dirs=[str(other)]))
    assert again is not None and again.latency_ms == done.latency_ms
