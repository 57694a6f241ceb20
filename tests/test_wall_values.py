"""The bad-input wall, values: numbers and names are checked where they enter, before anything runs or is written.

Target settings (threads, batch, warmup, repeats: whole numbers in bounds, no bools), target names (they become
folder names), budgets (finite, not subnormal, relative ones in [0.001x, 100x]), seeds (0..2**32-1 on every
command and in every config), the board's profiler settings, and a timm model at an input size it cannot take.
Each case follows tests/test_bad_inputs.py: exit code 2, exactly one ``error: `` line naming the problem, no
traceback, nothing half-written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from bespoke.errors import BespokeError
from bespoke.house import build_house
from bespoke.targets import Budget, Target, load_targets
from bespoke.targets.budget import RELATIVE_RANGE
from bespoke.targets.spec import MAX_BATCH, MAX_THREADS
from bespoke.utils.seed import MAX_SEED
from bespoke.zoo import create_model
from tests.test_bad_inputs import noisy_png, one_thread, refused_with_one_line
from tests.test_cli import run_cli
from tests.test_reliability_kill import teacher_dir

__all__ = ["one_thread"]  # the module-scoped fixture, re-exported so that every test here runs on one thread

ARCH = "timm:mobilenetv3_small_050"
LONG = "a" * 300


@dataclass
class Inputs:
    """A model directory and a small image folder shared by all cases (built once per module)."""

    root: Path
    model: Path
    data: Path
    config: Path

    def card(self) -> bytes:
        return (self.model / "card.json").read_bytes()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, one_thread) -> Inputs:
    root = tmp_path_factory.mktemp("values")
    for split, n in (("train", 3), ("test", 2)):
        for ci, cls in enumerate("bgr"):
            for i in range(n):
                noisy_png(root / "data" / split / cls / f"{i}.png", 20, seed=10 * ci + i)
    (root / "job.yaml").write_text("pretrained: false\n")
    return Inputs(root, teacher_dir(root / "model", ARCH, resolution=16), root / "data", root / "job.yaml")


Case = Callable[[Inputs, Path], tuple[list[str], Path, tuple[str, ...]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def _profile(w: Inputs, tmp: Path, target: str) -> tuple[list[str], Path]:
    """``bespoke profile`` of the shared model on one target (``target``: its YAML flow mapping's inside)."""
    (tmp / "t.yaml").write_text(f"targets:\n  - {{{target}}}\n")
    return ["profile", str(w.model), "--targets", str(tmp / "t.yaml")], tmp / "never"


def _finetune(w: Inputs, tmp: Path, *args: str) -> tuple[list[str], Path]:
    out = tmp / "out"
    return (["finetune", "--model", ARCH, "--resolution", "16", "--epochs", "1", "--batch-size", "4",
             "--config", str(w.config), "--data", str(w.data), "--out", str(out), *args], out / "card.json")


# ------------------------------------------------------------------------------------------ target settings
@case
def target_threads_too_many(w, tmp):
    return (*_profile(w, tmp, "name: t, runtime: onnxruntime, threads: 10000"),
            ("key 'threads'", "less than or equal to 256", "got 10000"))


@case
def target_threads_bool(w, tmp):
    return *_profile(w, tmp, "name: t, runtime: onnxruntime, threads: true"), ("key 'threads'", "got True")


@case
def target_threads_float(w, tmp):
    return *_profile(w, tmp, "name: t, runtime: onnxruntime, threads: 2.5"), ("key 'threads'", "valid integer")


@case
def target_batch_too_big(w, tmp):
    return (*_profile(w, tmp, "name: t, runtime: onnxruntime, batch: 4096"),
            ("key 'batch'", "less than or equal to 256", "got 4096"))


@case
def target_repeats_zero(w, tmp):
    return *_profile(w, tmp, "name: t, runtime: torch, repeats: 0"), ("key 'repeats'", "greater than or equal to 1")


@case
def target_warmup_absurd(w, tmp):
    return (*_profile(w, tmp, "name: t, runtime: torch, warmup: 10000000"),
            ("key 'warmup'", "less than or equal to 100000"))


# --------------------------------------------------------------------------------------------- target names
@case
def target_name_too_long(w, tmp):
    return (*_profile(w, tmp, f"name: {LONG}, runtime: params"),
            ("key 'name'", "(300 characters) must be 1-64 letters", "folder name"))


@case
def target_name_too_long_in_demo(w, tmp):
    (tmp / "t.yaml").write_text(f"targets:\n  - {{name: {LONG}, runtime: params, budget: 0.5x}}\n")
    return (["demo", "--targets", str(tmp / "t.yaml"), "--out", str(tmp / "out")], tmp / "out",
            ("(300 characters) must be 1-64 letters",))


@case
def target_name_hidden(w, tmp):
    return *_profile(w, tmp, "name: .cpu, runtime: params"), ("key 'name'", "'.cpu'", "not starting with '.'")


@case
def donor_name_too_long_in_preset(w, tmp):
    preset = yaml.safe_load((Path(__file__).parents[1] / "src/bespoke/presets/demo.yaml").read_text())
    preset["donors"] = [{"model": "timm:" + LONG}]
    (tmp / "p.yaml").write_text(yaml.safe_dump(preset))
    return (["bench", "--preset", str(tmp / "p.yaml"), "--out", str(tmp / "out")], tmp / "out" / "results.json",
            ("donors.0.model", "(305 characters) is not a zoo model name"))


# -------------------------------------------------------------------------------------------------- budgets
@case
def budget_subnormal_relative(w, tmp):
    return (*_profile(w, tmp, "name: t, runtime: params, budget: 1e-320x"),
            ("relative budget '1e-320x' must lie between 0.001x and 100x",))


@case
def budget_relative_absurd(w, tmp):
    return *_profile(w, tmp, "name: t, runtime: params, budget: 5000x"), ("'5000x' must lie between",)


@case
def budget_subnormal_absolute(w, tmp):
    return *_profile(w, tmp, "name: t, runtime: torch, budget: 1e-320ms"), ("'1e-320ms' is too small",)


# ---------------------------------------------------------------------------------------------------- seeds
@case
def seed_overflows_finetune(w, tmp):
    return (*_finetune(w, tmp, "--seed", "1000000000000000"),
            ("invalid option train.seed", "less than or equal to 4294967295", "got 1000000000000000"))


@case
def seed_negative_finetune(w, tmp):
    return *_finetune(w, tmp, "--seed", "-1"), ("invalid option train.seed", "greater than or equal to 0")


@case
def seed_bool_in_config(w, tmp):
    (tmp / "c.yaml").write_text("pretrained: false\nseed: true\n")
    argv, marker = _finetune(w, tmp)
    argv[argv.index(str(w.config))] = str(tmp / "c.yaml")
    return argv, marker, ("invalid option train.seed", "valid integer")


@case
def seed_overflows_house_build(w, tmp):
    return (["house", "build", "--teacher", str(w.model), "--data", str(w.data), "--out", str(tmp / "house"),
             "--seed", str(2**40)], tmp / "house", ("invalid option house.seed", "4294967295"))


@case
def seed_overflows_search(w, tmp):
    (tmp / "t.yaml").write_text("targets:\n  - {name: t, runtime: params, budget: 0.5x}\n")
    return (["search", str(tmp), "--targets", str(tmp / "t.yaml"), "--out", str(tmp / "out"), "--seed",
             str(2**40)], tmp / "out", ("invalid option search.anneal.seed", "4294967295"))


@case
def seed_overflows_supernet_train(w, tmp):
    return (["supernet", "train", "--teacher", str(w.model), "--data", str(w.data), "--out", str(tmp / "sn"),
             "--seed", str(2**40)], tmp / "sn", ("invalid option train.seed", "4294967295"))


@case
def seed_overflows_supernet_select(w, tmp):
    (tmp / "t.yaml").write_text("targets:\n  - {name: t, runtime: params, budget: 0.5x}\n")
    return (["supernet", "select", str(tmp), "--targets", str(tmp / "t.yaml"), "--out", str(tmp / "out"),
             "--seed", str(2**40)], tmp / "out", ("invalid option seed", "4294967295"))


@case
def seed_overflows_demo(w, tmp):
    return (["demo", "--out", str(tmp / "out"), "--seed", str(2**40)], tmp / "out",
            ("invalid option seed", "4294967295"))


@case
def seed_overflows_in_preset(w, tmp):
    preset = yaml.safe_load((Path(__file__).parents[1] / "src/bespoke/presets/demo.yaml").read_text())
    preset["data"]["seed"] = 10**15
    (tmp / "p.yaml").write_text(yaml.safe_dump(preset))
    return (["bench", "--preset", str(tmp / "p.yaml"), "--out", str(tmp / "out")], tmp / "out" / "results.json",
            ("data.seed", "less than or equal to 4294967295"))


@case
def measure_threads_too_many_in_preset(w, tmp):
    preset = yaml.safe_load((Path(__file__).parents[1] / "src/bespoke/presets/demo.yaml").read_text())
    preset["measure"] = {"threads": [1, 10000]}
    (tmp / "p.yaml").write_text(yaml.safe_dump(preset))
    return (["bench", "--preset", str(tmp / "p.yaml"), "--out", str(tmp / "out")], tmp / "out" / "results.json",
            ("measure.threads.1", "less than or equal to 256"))


# ------------------------------------------------------------------------------- values typer cannot parse
@case
def option_value_not_an_integer(w, tmp):
    return (["profile-device", str(w.model), "--out", str(tmp / "parts"), "--threads", "true"], tmp / "parts",
            ("Invalid value for '--threads'", "valid integer", "see `bespoke profile-device --help`"))


@case
def unknown_option(w, tmp):
    argv, marker = _finetune(w, tmp)
    return [*argv, "--learning-rate", "1"], marker, ("No such option: --learning-rate", "bespoke finetune --help")


# -------------------------------------------------------------------------------------------- profile-device
@case
def profile_device_negative_threads_zero_repeats(w, tmp):
    return (["profile-device", str(w.model), "--out", str(tmp / "parts"), "--threads", "-5", "--repeats", "0"],
            tmp / "parts", ("device profiling", "key 'threads'", "(got -5)", "key 'repeats'", "(got 0)"))


@case
def profile_device_negative_warmup(w, tmp):
    return (["profile-device", str(w.model), "--out", str(tmp / "parts"), "--warmup", "-1"], tmp / "parts",
            ("device profiling", "key 'warmup'", "greater than or equal to 0"))


@case
def profile_device_threads_too_many(w, tmp):
    return (["profile-device", str(w.model), "--out", str(tmp / "parts"), "--threads", "10000"], tmp / "parts",
            ("key 'threads'", "less than or equal to 256"))


# ------------------------------------------------------------------------------------------ input sizes
@case
def vit_at_a_resolution_it_cannot_take(w, tmp):
    argv, marker = _finetune(w, tmp)
    argv[argv.index(ARCH)] = "timm:vit_tiny_patch16_224"
    argv[argv.index("16")] = "64"
    return argv, marker, ("timm:vit_tiny_patch16_224 does not accept 64 px input",
                          "doesn't match model (224)", "use its native resolution: --resolution 224")


@case
def tiny_vit_at_a_size_its_patches_do_not_divide(w, tmp):
    argv, marker = _finetune(w, tmp)
    argv[argv.index(ARCH)] = "timm:test_vit"
    argv[argv.index("16")] = "24"
    return argv, marker, ("timm:test_vit does not accept 24 px input", "divisible by patch size (16)",
                          "--resolution 160")


@pytest.mark.parametrize("name", list(CASES))
def test_bad_value_gives_one_clear_error_and_writes_nothing(name, inputs, tmp_path, capsys, record_property):
    argv, marker, needles = CASES[name](inputs, tmp_path)
    card = inputs.card()
    record_property("stderr", refused_with_one_line(argv, needles, capsys))
    assert not marker.exists(), f"{marker} was written"
    assert [p for p in tmp_path.rglob("*.tmp")] == [], "a temporary file was left behind"
    assert inputs.card() == card, "the model directory's card was changed"


# ------------------------------------------------------------------------------------- the bounds themselves
def test_values_at_the_bounds_are_accepted(tmp_path: Path) -> None:
    """The limits are inclusive and the usual values still load: nothing a real target uses is refused."""
    low, high = RELATIVE_RANGE
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"targets": [
        {"name": "a" * 64, "runtime": "onnxruntime", "threads": MAX_THREADS, "batch": MAX_BATCH, "warmup": 0,
         "repeats": 1, "budget": f"{low:g}x"},
        {"name": "cpu1_b-2.0", "runtime": "params", "budget": f"{high:g}x"},
        {"name": "tiny", "runtime": "onnxruntime", "budget": "1e-300ms"},
    ]}))
    wide, usual, tiny = load_targets(tmp_path / "t.yaml")
    assert (wide.threads, wide.batch, wide.warmup, wide.repeats) == (MAX_THREADS, MAX_BATCH, 0, 1)
    assert wide.resolve_budget(10.0) == pytest.approx(0.01) and usual.resolve_budget(3.0) == pytest.approx(300.0)
    assert tiny.resolve_budget(None) == 1e-300
    assert Target(name="t", runtime="torch", threads=MAX_THREADS).threads == MAX_THREADS


@pytest.mark.parametrize("text", ["1e-320x", "0.0009x", "100.5x", "1e-320ms", "1e-310", "5e-324k"])
def test_budget_parse_refuses_subnormal_and_absurd_amounts(text: str) -> None:
    with pytest.raises(BespokeError, match=r"must lie between|too small"):
        Budget.parse(text)


def test_budget_resolve_refuses_an_overflowing_result() -> None:
    with pytest.raises(BespokeError, match="not a finite number"):
        Budget.parse("100x").resolve(1e307, "ms")


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 10**15, True])
def test_build_house_refuses_a_seed_out_of_range_before_writing(tmp_path: Path, seed: int) -> None:
    """The bench passes its preset's ``bespoke.seed`` straight to build_house: it checks the seed first."""
    with pytest.raises(BespokeError, match=r"seed .* is out of range") as info:
        build_house("efficientnet_lite0", data=str(tmp_path / "none"), out=tmp_path / "house", seed=seed)
    assert "0 to 4294967295" in str(info.value)
    assert not (tmp_path / "house").exists()


def test_largest_seed_trains(inputs: Inputs, tmp_path: Path, capsys) -> None:
    """2**32 - 1 is a valid seed end to end: every seed derived from it still fits the generators."""
    argv, marker = _finetune(inputs, tmp_path, "--seed", str(MAX_SEED))
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert marker.is_file()



@pytest.mark.parametrize(("name", "bad", "good"), [("timm:test_vit", 24, 32), ("torchvision:vit_b_16", 64, 224)])
def test_create_model_checks_the_input_size_of_other_libraries_models(name: str, bad: int, good: int) -> None:
    """The zoo runs one forward at the asked resolution: a size the model cannot take fails at construction."""
    with pytest.raises(BespokeError, match=f"{name} does not accept {bad} px input") as info:
        create_model(name, pretrained=False, num_classes=3, resolution=bad)
    assert "--resolution" in str(info.value.hint)
    model = create_model(name, pretrained=False, num_classes=3, resolution=good)
    assert model.training, "the probe leaves a fresh model in training mode, as its builder made it"
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, good, good)).shape == (2, 3)


def test_the_input_probe_leaves_the_seeded_initialisation_alone() -> None:
    """Same seed, same weights: the probe's forward draws no random numbers."""
    a = create_model("timm:test_vit", pretrained=False, num_classes=3, resolution=32, seed=5)
    b = create_model("timm:test_vit", pretrained=False, num_classes=3, resolution=32, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
