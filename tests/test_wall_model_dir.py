"""The model-directory wall (issue 22): no command destroys a good model directory or delivers a broken model as
verified.

Every case runs the real CLI entry point on a private copy of a good model directory and must end with exit code 2
and exactly one ``error: ...`` line naming the problem, and leave every file under the case's folder byte-identical
(the earlier good directory intact, no new output, no temporary file). Dedicated tests below cover what a table
cannot: failures that are not user errors, weights and outputs that are not finite, resuming into a finetune's own
output, the memory a hostile card costs, and cards written before the format field existed.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import bespoke.export.model_dir as model_dir
import bespoke.export.onnx_export as onnx_export
from bespoke.errors import BespokeError
from bespoke.export import ModelCard, check_finite_weights, load_model_dir, read_card, save_model_dir
from bespoke.export.card import CARD_FORMAT
from tests.conftest import TinyNet
from tests.memory_probe import PEAK_LIMIT_BYTES, run_child
from tests.test_bad_inputs import ARCH, _disk_full_for, noisy_png, one_thread, refused_with_one_line
from tests.test_cli import run_cli
from tests.test_reliability_kill import teacher_dir

__all__ = ["one_thread"]  # the module-scoped one-thread fixture, re-exported so pytest uses it here

FILES = ("card.json", "card.md", "model.onnx", "model.safetensors")


@pytest.fixture(scope="module")
def good(tmp_path_factory, one_thread) -> Path:
    """A complete model directory as `bespoke export` leaves it (weights, verified ONNX, card)."""
    root = tmp_path_factory.mktemp("good")
    model, card = load_model_dir(teacher_dir(root / "teacher", ARCH))
    save_model_dir(root / "good", model, card)
    return root / "good"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three classes of noisy images (4 train, 2 test each)."""
    root = tmp_path_factory.mktemp("data")
    for split, n in (("train", 4), ("test", 2)):
        for ci, cls in enumerate("bgr"):
            for i in range(n):
                noisy_png(root / split / cls / f"{i}.png", 24, seed=10 * ci + i)
    (root / "job.yaml").write_text("pretrained: false\n")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def copy_good(good: Path, tmp: Path, **card_fields) -> Path:
    """A private copy of the good directory, its card.json edited (a field set to ``None`` is removed)."""
    directory = tmp / "model"
    shutil.copytree(good, directory)
    if card_fields:
        card = json.loads((directory / "card.json").read_text())
        for key, value in card_fields.items():
            if value is None:
                card.pop(key, None)
            elif isinstance(value, dict) and isinstance(card.get(key), dict):
                card[key] = {**card[key], **value}
            else:
                card[key] = value
        (directory / "card.json").write_text(json.dumps(card))
    return directory


def finetune_argv(data: Path, out: Path, *args: str) -> list[str]:
    return ["finetune", "--model", ARCH, "--data", str(data), "--resolution", "16", "--epochs", "1",
            "--batch-size", "4", "--config", str(data / "job.yaml"), "--out", str(out), *args]


def with_config(data: Path, tmp: Path, text: str, argv: list[str]) -> list[str]:
    (tmp / "c.yaml").write_text("pretrained: false\n" + text)
    argv[argv.index(str(data / "job.yaml"))] = str(tmp / "c.yaml")
    return argv


Case = Callable[[Path, Path, Path, pytest.MonkeyPatch], tuple[list[str], tuple[str, ...]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


# ------------------------------------------------------------------------------------- export over a good dir
def _tolerance(value: str) -> Case:
    def run(good, data, tmp, mp):
        return ["export", str(copy_good(good, tmp)), "--tolerance", value], \
            ("tolerance must be a finite number > 0", "--tolerance 1e-4")
    return run


for _name, _value in (("zero", "0"), ("nan", "nan"), ("negative", "-1e-3"), ("inf", "inf")):
    CASES[f"export_tolerance_{_name}"] = _tolerance(_value)


@case
def export_verification_fails(good, data, tmp, mp):
    mp.setattr(onnx_export, "onnx_max_abs_diff", lambda *a, **k: 1.0)
    return ["export", str(copy_good(good, tmp))], ("differs from PyTorch by 1", "> 0.0001")


@case
def export_output_not_finite(good, data, tmp, mp):
    mp.setattr(onnx_export, "onnx_max_abs_diff", lambda *a, **k: math.nan)
    return ["export", str(copy_good(good, tmp))], ("output holds NaN or inf",)


@case
def export_disk_full_writing_weights(good, data, tmp, mp):
    _disk_full_for(mp, "model.safetensors")
    return ["export", str(copy_good(good, tmp))], ("cannot write", "model.safetensors: No space left on device")


@case
def export_disk_full_writing_card(good, data, tmp, mp):
    _disk_full_for(mp, "card.json")
    return ["export", str(copy_good(good, tmp))], ("cannot write", "card.json: No space left on device")


@case
def export_weights_not_finite(good, data, tmp, mp):
    directory = copy_good(good, tmp)
    state = load_file(directory / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name][0] = float("inf")
    save_file(state, directory / "model.safetensors")
    return ["export", str(directory)], (f"weight {name} holds 1 NaN/inf value(s)", "nothing was written")


# ------------------------------------------------------------------------------------------- hostile cards
@case
def card_resolution_huge(good, data, tmp, mp):
    directory = copy_good(good, tmp, resolution=100000, arch_config={"resolution": 100000})
    return ["export", str(directory)], ("not a valid model card", "resolution", "100000", "4096")


@case
def card_num_classes_huge(good, data, tmp, mp):
    directory = copy_good(good, tmp, num_classes=1e9, arch_config={"num_classes": 1e9})
    return ["export", str(directory)], ("not a valid model card", "num_classes", "100000")


@case
def card_field_only_resolution_huge(good, data, tmp, mp):
    directory = copy_good(good, tmp, resolution=100000)
    return ["export", str(directory)], ("not a valid model card (resolution: Input should be less than or equal to "
                                        "4096)",)


@case
def card_field_only_num_classes_huge(good, data, tmp, mp):
    directory = copy_good(good, tmp, num_classes=1e9)
    return ["export", str(directory)], ("not a valid model card (num_classes:", "less than or equal to 100000")


@case
def card_recipe_only_resolution_huge(good, data, tmp, mp):
    directory = copy_good(good, tmp, arch_config={"resolution": 100000})
    (tmp / "t.yaml").write_text("targets:\n  - {name: p, runtime: params}\n")
    return ["profile", str(directory), "--targets", str(tmp / "t.yaml")], \
        ("not a valid model card", "arch_config", "resolution 100000 is outside 1..4096")


@case
def card_format_newer(good, data, tmp, mp):
    directory = copy_good(good, tmp, card_format=CARD_FORMAT + 1, resolution="changed meaning")
    return ["export", str(directory)], \
        (f"card format {CARD_FORMAT + 1} is newer than this bespoke ({CARD_FORMAT})", "upgrade bespoke")


@case
def card_format_older(good, data, tmp, mp):
    directory = copy_good(good, tmp, card_format=0)
    return ["export", str(directory)], ("card format 0 is older than any this bespoke reads",)


# ------------------------------------------------------------------------------------------ finetune recipe
def _finetune_option(option: str, value: str, *needles: str) -> Case:
    def run(good, data, tmp, mp):
        return finetune_argv(data, tmp / "out", option, value), needles
    return run


CASES["finetune_lr_inf"] = _finetune_option("--lr", "inf", "invalid option train.lr", "finite number")
CASES["finetune_lr_nan"] = _finetune_option("--lr", "nan", "invalid option train.lr", "finite number")
CASES["finetune_lr_too_large"] = _finetune_option("--lr", "5", "invalid option train.lr", "less than or equal to 1")


@case
def finetune_weight_decay_nan(good, data, tmp, mp):
    argv = with_config(data, tmp, "train: {weight_decay: .nan}\n", finetune_argv(data, tmp / "out"))
    return argv, ("invalid option train.weight_decay", "finite number")


@case
def finetune_kd_temperature_inf(good, data, tmp, mp):
    argv = with_config(data, tmp, "train: {kd_temperature: .inf}\n", finetune_argv(data, tmp / "out"))
    return argv, ("invalid option train.kd_temperature", "finite number")


@case
def finetune_val_fraction_nan(good, data, tmp, mp):
    argv = with_config(data, tmp, "val_fraction: .nan\n", finetune_argv(data, tmp / "out"))
    return argv, ("invalid option val_fraction", "finite number")


@case
def search_lr_inf(good, data, tmp, mp):
    return ["search", str(tmp / "house"), "--targets", str(tmp / "t.yaml"), "--out", str(tmp / "out"),
            "--lr", "inf"], ("invalid option retrain.lr", "finite number")


# ------------------------------------------------------------------------------ finetune into another output
@case
def finetune_into_supernet(good, data, tmp, mp):
    (tmp / "out").mkdir()
    (tmp / "out" / "supernet.json").write_text("{}")
    return finetune_argv(data, tmp / "out"), ("already holds a trained supernet (supernet.json)", "new folder")


@case
def finetune_into_interrupted_supernet(good, data, tmp, mp):
    (tmp / "out").mkdir()
    (tmp / "out" / "supernet.safetensors").write_bytes(b"weights")
    return finetune_argv(data, tmp / "out"), ("already holds a supernet (supernet.safetensors)",)


@case
def finetune_into_house(good, data, tmp, mp):
    (tmp / "out").mkdir()
    (tmp / "out" / "house.json").write_text("{}")
    return finetune_argv(data, tmp / "out"), ("already holds a model house (house.json)",)


@case
def finetune_into_model_of_another_engine(good, data, tmp, mp):
    directory = copy_good(good, tmp, engine="tofa")
    return finetune_argv(data, directory), ("already holds a model of engine 'tofa' (card.json)",)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_leaves_every_file_as_it_was(name, good, data, tmp_path, capsys, monkeypatch, record_property):
    argv, needles = CASES[name](good, data, tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    record_property("stderr", refused_with_one_line(argv, needles, capsys, monkeypatch))
    assert snapshot(tmp_path) == before, "a file was written, changed or removed"


# ------------------------------------------------------------------------------------------ dedicated tests
def test_a_good_directory_survives_a_failed_export_and_still_loads(good, tmp_path, monkeypatch):
    """Any failure during a re-export, not only a user error, leaves the directory byte-identical and readable."""
    directory = copy_good(good, tmp_path)
    before = snapshot(tmp_path)
    model, card = load_model_dir(directory)

    def broken(*args, **kwargs):
        raise RuntimeError("fvcore broke")

    monkeypatch.setattr(model_dir, "count_macs", broken)
    with pytest.raises(RuntimeError, match="fvcore broke"):
        save_model_dir(directory, model, card)
    monkeypatch.undo()
    for tolerance in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(BespokeError, match="tolerance must be a finite number > 0"):
            save_model_dir(directory, model, card, tolerance=tolerance)
    assert snapshot(tmp_path) == before
    reloaded, again = load_model_dir(directory)
    assert again == card
    x = torch.randn(1, 3, card.resolution, card.resolution)
    assert torch.equal(reloaded(x), model(x))


def test_a_successful_re_export_replaces_all_files_and_writes_the_format(good, tmp_path):
    directory = copy_good(good, tmp_path, card_format=None)
    model, card = load_model_dir(directory)
    assert card.card_format == CARD_FORMAT  # written before the field existed: format 1, read as the current one
    new = save_model_dir(directory, model, card.model_copy(update={"accuracy": 0.25}))
    assert json.loads((directory / "card.json").read_text())["card_format"] == CARD_FORMAT == new.card_format
    assert read_card(directory).accuracy == 0.25
    assert sorted(p.name for p in directory.iterdir()) == sorted(FILES)


def test_weights_holding_nan_are_never_written(tmp_path):
    net = TinyNet()
    with torch.no_grad():
        net.features[4].running_var[3] = float("nan")
    card = ModelCard(arch="tiny", arch_config={"builder": "zoo"}, engine="test", num_classes=3, resolution=16,
                     mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(BespokeError, match=r"weight features\.4\.running_var holds 1 NaN/inf value\(s\) of 8"):
        save_model_dir(tmp_path / "m", net, card)
    assert not (tmp_path / "m").exists()
    check_finite_weights(TinyNet().state_dict())  # finite weights pass


class LogHead(nn.Module):
    """Finite weights, but the log of a signed activation: NaN on about half of the random inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.fc(x.mean((2, 3))))


def test_a_nan_output_fails_verification(tmp_path):
    """``max`` over NaN differences used to drop them: a NaN model was delivered with ``onnx_max_abs_diff: 0.0``."""
    torch.manual_seed(0)
    model = LogHead()
    data = onnx_export.export_onnx_bytes(model, (1, 3, 8, 8), dynamic_batch=True)
    assert math.isnan(onnx_export.onnx_max_abs_diff(model, data, (1, 3, 8, 8)))
    card = ModelCard(arch="log", arch_config={"builder": "zoo"}, engine="test", num_classes=3, resolution=8,
                     mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(BespokeError, match="output holds NaN or inf"):
        save_model_dir(tmp_path / "m", model, card)
    assert not (tmp_path / "m").exists()


def test_finetune_resumes_into_its_own_output(data, tmp_path, capsys):
    """The --out check refuses other outputs only: a second run into a finished finetune directory still works."""
    argv = finetune_argv(data, tmp_path / "out")
    for _ in range(2):
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        assert "done" in out
    card = read_card(tmp_path / "out")
    assert card.engine == "finetune" and card.card_format == CARD_FORMAT
    assert card.provenance["recipe"]["lr"] == 1e-3


@pytest.mark.parametrize("fields", [{"resolution": 100000, "arch_config": {"resolution": 100000}},
                                    {"num_classes": 1e9, "arch_config": {"num_classes": 1e9}}],
                         ids=["resolution", "num_classes"])
def test_a_hostile_card_costs_no_memory(good, tmp_path, fields):
    """A card asking for a 120 GB input or a 5 TB classifier is refused on reading, at no memory cost."""
    directory = copy_good(good, tmp_path, **fields)
    run = run_child(["export", str(directory)], tmp_path)
    assert run.code == 2, run.stderr
    assert [line for line in run.stderr.splitlines() if line.strip()][-1].startswith("error: ")
    assert 0 < run.anon_peak_bytes < PEAK_LIMIT_BYTES, \
        f"peak allocated {run.anon_peak_bytes >> 20} MiB (RSS with library pages {run.peak_bytes >> 20} MiB)"


def test_cards_on_disk_without_a_format_still_load():
    """Cards written before ``card_format`` (the reference benchmark's block-engine, TOFA, pruned and teacher cards
    as carried on 2026-12-02, kept in tests/cards_format1/) read as format 1, moved into format 2 (the budget
    fields and the block engine's untyped extras become the typed delivery section)."""
    cards = sorted((Path(__file__).parent / "cards_format1").rglob("card.json"))
    assert cards
    for path in cards:
        old = json.loads(path.read_text())
        assert "card_format" not in old
        card = read_card(path.parent)
        assert card.card_format == CARD_FORMAT
        assert card.method == old.get("method") and card.target == old.get("target")
        if old.get("measured_value") is not None:
            assert card.delivery.measured == old["measured_value"] and card.delivery.meets_budget == old["meets_budget"]
