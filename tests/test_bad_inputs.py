"""The bad-input wall: what a user can get wrong, fed to the real CLI entry point (``bespoke.cli.main.main``).

Every case must end with exit code 2 and exactly one ``error: ...`` line on stderr: no traceback, and no Python
warning either (a real process would print it on stderr, so warnings that Python shows by default count as lines).
Nothing half-written may stay behind: no completion marker (``card.json``, ``supernet.json``, ``house.json``) and no
temporary file anywhere in the case's folder, and a pickle that tries to run code must not have run.

More cases live next to the code they exercise: tests/test_cli.py (missing or empty data, unknown model, classes
differing between train and test, a non-image file in a class folder, wrong weight keys, truncated safetensors,
bad YAML, unknown config key, unknown target runtime for ``profile``, missing targets file).
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bespoke.data.datasets import decode_image
from bespoke.data.idx import FASHION_MNIST_ENV
from bespoke.distill import DistillConfig
from bespoke.house import build_house
from tests.test_cli import run_cli
from tests.test_data_sources import make_cifar10, make_idx_dir, write_idx
from tests.test_reliability_kill import teacher_dir

ARCH = "timm:mobilenetv3_small_050"
SHOWN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # i.e. hidden


class Evil:
    """Unpickling this writes ``PWNED`` next to the file: the proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple:
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


@dataclass
class World:
    """Inputs shared by all cases (built once per module)."""

    root: Path
    data: Path
    config: Path
    teacher: Path
    teacher5: Path
    vit: Path
    mv2: Path
    mv2_5: Path
    house: Path

    def finetune(self, tmp: Path, *args: str) -> tuple[list[str], Path]:
        out = tmp / "out"
        return (["finetune", "--model", ARCH, "--resolution", "16", "--epochs", "1", "--batch-size", "4",
                 "--config", str(self.config), "--out", str(out), *args], out / "card.json")

    def copy_data(self, tmp: Path, *, own_val: bool = False) -> Path:
        """A private copy of the data; ``own_val``: with a val/ split, so every train image is trained on."""
        data = tmp / "data"
        shutil.copytree(self.data, data)
        if own_val:
            shutil.copytree(self.data / "test", data / "val")
        return data

    def targets(self, tmp: Path, text: str) -> tuple[list[str], Path]:
        (tmp / "targets.yaml").write_text("targets:\n" + text)
        return (["search", str(self.house), "--targets", str(tmp / "targets.yaml"), "--out", str(tmp / "out"),
                 "--iterations", "5", "--eval-images", "8", "--epochs", "1"], tmp / "out" / "t" / "card.json")


def noisy_png(path: Path, size: int = 32, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convs on a shared 2-core machine run far faster on one thread than two (no spin-waiting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread) -> World:
    root = tmp_path_factory.mktemp("world")
    data = root / "data"
    for split, n in (("train", 4), ("test", 2)):
        for ci, cls in enumerate("bgr"):
            for i in range(n):
                noisy_png(data / split / cls / f"{i}.png", 24, seed=10 * ci + i)
    (root / "job.yaml").write_text("pretrained: false\n")
    teacher = teacher_dir(root / "teacher", ARCH)
    house = root / "house"
    build_house(str(teacher), donors=[], data=str(data), out=house, size=2, max_span=2, distill_steps=1,
                kinds=["skip"], distill=DistillConfig(batch_size=4, group_size=2, val_images=6, device="cpu"))
    return World(root, data, root / "job.yaml", teacher, teacher_dir(root / "teacher5", ARCH, num_classes=5),
                 teacher_dir(root / "vit", "timm:test_vit"), teacher_dir(root / "mv2", "timm:mobilenetv2_035"),
                 teacher_dir(root / "mv2_5", "timm:mobilenetv2_035", num_classes=5), house)


Case = Callable[[World, Path, pytest.MonkeyPatch], tuple[list[str], Path, tuple[str, ...]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


# ---------------------------------------------------------------------------------------------------- data
@case
def corrupt_image(w, tmp, mp):
    data = w.copy_data(tmp, own_val=True)
    (data / "train" / "g" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    return (*w.finetune(tmp, "--data", str(data)), ("cannot read image", "g/1.png"))


@case
def truncated_image(w, tmp, mp):
    data = w.copy_data(tmp, own_val=True)
    path = data / "train" / "b" / "2.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return (*w.finetune(tmp, "--data", str(data)), ("cannot read image", "b/2.png", "truncated"))


@case
def float_image_out_of_range(w, tmp, mp):
    data = w.copy_data(tmp, own_val=True)
    Image.fromarray(np.linspace(0, 4000, 64, dtype=np.float32).reshape(8, 8)).save(data / "train" / "r" / "9.tiff")
    return (*w.finetune(tmp, "--data", str(data)), ("9.tiff", "pixel values 0..4000"))


@case
def file_beside_class_folders(w, tmp, mp):
    data = w.copy_data(tmp)
    (data / "train" / "labels.csv").write_text("a,1\n")
    return (*w.finetune(tmp, "--data", str(data)), ("labels.csv", "only class folders belong"))


@case
def empty_class_folder(w, tmp, mp):
    data = w.copy_data(tmp)
    for split in ("train", "test"):
        (data / split / "y").mkdir()
    return (*w.finetune(tmp, "--data", str(data)), ("class folder", "holds no images"))


@case
def val_classes_differ(w, tmp, mp):
    data = w.copy_data(tmp, own_val=True)
    (data / "val" / "r").rename(data / "val" / "z")
    return (*w.finetune(tmp, "--data", str(data)), ("val differ from train/", "missing r", "extra z"))


@case
def data_is_a_file(w, tmp, mp):
    (tmp / "data.zip").write_bytes(b"PK\x03\x04")
    return (*w.finetune(tmp, "--data", str(tmp / "data.zip")), ("is a file, expected a directory",))


@case
def fashion_mnist_labels_out_of_range(w, tmp, mp):
    root = make_idx_dir(tmp / "fm", n_train=30, n_test=10)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(30) % 12)
    mp.setenv(FASHION_MNIST_ENV, str(root))
    return (*w.finetune(tmp, "--data", "fashion-mnist"), ("labels go up to 11", "expected 0..9"))


@case
def fashion_mnist_truncated(w, tmp, mp):
    root = make_idx_dir(tmp / "fm", n_train=30, n_test=10)
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    mp.setenv(FASHION_MNIST_ENV, str(root))
    return (*w.finetune(tmp, "--data", "fashion-mnist"), ("cannot decompress IDX file", "t10k-images"))


@case
def cifar_labels_out_of_range(w, tmp, mp):
    root = make_cifar10(tmp / "cifar", per_batch=10, labels_offset=3)
    return (*w.finetune(tmp, "--data", str(root)), ("labels range 3..12", "outside 0..9"))


@case
def cifar_pickle_runs_code(w, tmp, mp):
    root = make_cifar10(tmp / "cifar", per_batch=10)
    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(tmp / "PWNED"), b"labels": []}))
    return (*w.finetune(tmp, "--data", str(root)), ("data_batch_1", "is not allowed"))


# ------------------------------------------------------------------------------------------- models, weights
@case
def unknown_timm_architecture(w, tmp, mp):
    argv, marker = w.finetune(tmp, "--data", str(w.data))
    argv[argv.index(ARCH)] = "timm:resnet_9000"
    return argv, marker, ("timm has no architecture 'resnet_9000'",)


def _state(num_classes: int = 3) -> dict[str, torch.Tensor]:
    from bespoke.zoo import create_model

    return create_model(ARCH, pretrained=False, num_classes=num_classes, resolution=16).state_dict()


@case
def weights_with_wrong_shapes(w, tmp, mp):
    state = _state()
    state["conv_stem.weight"] = torch.zeros(5, 3, 3, 3)
    torch.save(state, tmp / "w.pth")
    return (*w.finetune(tmp, "--data", str(w.data), "--weights", str(tmp / "w.pth")),
            ("do not fit", "conv_stem.weight (5, 3, 3, 3)"))


@case
def weights_truncated(w, tmp, mp):
    torch.save(_state(), tmp / "w.pth")
    (tmp / "w.pth").write_bytes((tmp / "w.pth").read_bytes()[:5000])
    return (*w.finetune(tmp, "--data", str(w.data), "--weights", str(tmp / "w.pth")),
            ("not a readable torch weights file",))


@case
def weights_pickle_runs_code(w, tmp, mp):
    torch.save({"conv_stem.weight": torch.zeros(1), "x": Evil(tmp / "PWNED")}, tmp / "w.pth")
    return (*w.finetune(tmp, "--data", str(w.data), "--weights", str(tmp / "w.pth")),
            ("refused to load", "Unsupported global: GLOBAL exec"))


@case
def weights_plain_pickle_runs_code(w, tmp, mp):
    with open(tmp / "w.pth", "wb") as fh:
        pickle.dump({"conv_stem.weight": Evil(tmp / "PWNED")}, fh)
    return (*w.finetune(tmp, "--data", str(w.data), "--weights", str(tmp / "w.pth")), ("refused to load",))


@case
def weights_is_a_directory(w, tmp, mp):
    (tmp / "weights").mkdir()
    return (*w.finetune(tmp, "--data", str(w.data), "--weights", str(tmp / "weights")), ("is a directory",))


@case
def weights_hold_nan(w, tmp, mp):
    state = _state()
    state["classifier.weight"] = torch.full_like(state["classifier.weight"], float("nan"))
    torch.save(state, tmp / "w.pth")
    return (*w.finetune(tmp, "--data", str(w.data), "--weights", str(tmp / "w.pth")),
            ("finetune: loss became nan at step 0", "last good checkpoint"))


def _house(w: World, tmp: Path, teacher: Path) -> tuple[list[str], Path]:
    return (["house", "build", "--teacher", str(teacher), "--data", str(w.data), "--out", str(tmp / "house"),
             "--donors", "", "--kinds", "skip", "--size", "2", "--distill-steps", "1", "--device", "cpu"],
            tmp / "house" / "house.json")


def _supernet(w: World, tmp: Path, teacher: Path) -> tuple[list[str], Path]:
    return (["supernet", "train", "--teacher", str(teacher), "--data", str(w.data), "--out", str(tmp / "sn"),
             "--steps", "1", "--batch-size", "4", "--device", "cpu"], tmp / "sn" / "supernet.json")


@case
def untraceable_teacher(w, tmp, mp):
    return (*_house(w, tmp, w.vit), ("cannot trace VisionTransformer with torch.fx",))


@case
def house_teacher_of_other_classes(w, tmp, mp):
    return (*_house(w, tmp, w.teacher5), ("has 5 classes, data set 'data' has 3",))


@case
def teacher_card_corrupt(w, tmp, mp):
    teacher = tmp / "teacher"
    shutil.copytree(w.teacher, teacher)
    (teacher / "card.json").write_text('{"arch": "timm:')
    return (*_house(w, tmp, teacher), ("card.json is not a valid model card",))


@case
def supernet_unsupported_teacher(w, tmp, mp):
    return (*_supernet(w, tmp, w.vit), ("cannot build a supernet from VisionTransformer", "inverted-residual"))


@case
def supernet_teacher_of_other_classes(w, tmp, mp):
    return (*_supernet(w, tmp, w.mv2_5), ("has 5 classes, the data 3",))


@case
def select_without_supernet(w, tmp, mp):
    (tmp / "t.yaml").write_text("targets:\n  - {name: t, runtime: params, budget: 0.5x}\n")
    return (["supernet", "select", str(tmp), "--targets", str(tmp / "t.yaml"), "--out", str(tmp / "out")],
            tmp / "out" / "t" / "card.json", ("no trained supernet",))


@case
def search_without_house(w, tmp, mp):
    argv, marker = w.targets(tmp, "  - {name: t, runtime: macs, budget: 0.5x}\n")
    argv[1] = str(tmp)
    return argv, marker, ("is not a model house",)


# ------------------------------------------------------------------------------------------------- configs
def _finetune_with_config(w: World, tmp: Path, content: str | bytes) -> tuple[list[str], Path]:
    """A finetune command whose --config file holds ``content``."""
    config = tmp / "c.yaml"
    if isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    argv, marker = w.finetune(tmp, "--data", str(w.data))
    argv[argv.index(str(w.config))] = str(config)
    return argv, marker


@case
def config_not_a_mapping(w, tmp, mp):
    argv, marker = _finetune_with_config(w, tmp, "- epochs\n- 3\n")
    return argv, marker, ("must hold a mapping of option: value",)


@case
def config_wrong_type(w, tmp, mp):
    argv, marker = _finetune_with_config(w, tmp, "pretrained: false\nepochs: many\n")
    at = argv.index("--epochs")
    del argv[at:at + 2]  # not on the command line: the YAML value counts
    return argv, marker, ("invalid option train.epochs", "valid integer")


@case
def config_binary_file(w, tmp, mp):
    argv, marker = _finetune_with_config(w, tmp, b"\xff\xfe\x00\x81binary")
    return argv, marker, ("not a text file",)


@case
def config_numeric_option_name(w, tmp, mp):
    argv, marker = _finetune_with_config(w, tmp, "pretrained: false\n1: 2\n")
    return argv, marker, ("option names must be text, got 1",)


@case
def config_section_not_a_mapping(w, tmp, mp):
    argv, marker = _finetune_with_config(w, tmp, "pretrained: false\ntrain: 5\n")
    return argv, marker, ("option train must be a mapping",)


@case
def config_is_a_directory(w, tmp, mp):
    argv, marker = w.finetune(tmp, "--data", str(w.data))
    argv[argv.index(str(w.config))] = str(tmp)
    return argv, marker, ("cannot read config file",)


@case
def supernet_config_unknown_key(w, tmp, mp):
    (tmp / "c.yaml").write_text("train: {steps: 1}\nlabel: 0.5\n")
    argv, marker = _supernet(w, tmp, w.mv2)
    return [*argv, "--config", str(tmp / "c.yaml")], marker, ("invalid option label", "Extra inputs")


# ------------------------------------------------------------------------------------------------- targets
@case
def unknown_target_runtime(w, tmp, mp):
    return (*w.targets(tmp, "  - {name: t, runtime: tpu9000, budget: 0.5x}\n"), ("'runtime'", "tpu9000"))


@case
def unreadable_budget(w, tmp, mp):
    return (*w.targets(tmp, "  - {name: t, runtime: macs, budget: fast}\n"), ("cannot read budget 'fast'",))


@case
def budget_in_the_wrong_unit(w, tmp, mp):
    return (*w.targets(tmp, "  - {name: t, runtime: macs, budget: 2ms}\n"),
            ("budget '2ms' is a latency but the target is measured in MACs",))


@case
def infeasible_budget(w, tmp, mp):
    return (*w.targets(tmp, "  - {name: t, runtime: macs, budget: 0.01x}\n"),
            ("cannot be met: the smallest reachable value is",))


# -------------------------------------------------------------------------------------------- resume, disk
@case
def checkpoint_of_another_run(w, tmp, mp):
    ckpt = tmp / "out" / "checkpoints" / "finetune.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"total_steps": 999}, ckpt)
    return (*w.finetune(tmp, "--data", str(w.data)), ("belongs to a run with other settings",))


@case
def checkpoint_corrupt(w, tmp, mp):
    ckpt = tmp / "out" / "checkpoints" / "finetune.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 not a checkpoint")
    return (*w.finetune(tmp, "--data", str(w.data)), ("cannot read checkpoint", "delete it"))


@case
def out_is_a_file(w, tmp, mp):
    argv, _ = w.finetune(tmp, "--data", str(w.data))
    (tmp / "out").write_text("not a folder")
    return argv, tmp / "out" / "card.json", ("cannot write", "Not a directory")


def _disk_full_for(mp: pytest.MonkeyPatch, name: str) -> None:
    """Simulate a full disk: flushing any file whose name contains ``name`` fails with ENOSPC."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    mp.setattr(os, "fsync", fsync)


@case
def disk_full_writing_checkpoint(w, tmp, mp):
    _disk_full_for(mp, "finetune.pt")
    return (*w.finetune(tmp, "--data", str(w.data)), ("cannot write", "finetune.pt: No space left on device"))


@case
def disk_full_writing_model_card(w, tmp, mp):
    _disk_full_for(mp, "card.json")
    return (*w.finetune(tmp, "--data", str(w.data)), ("cannot write", "card.json: No space left on device"))


def stderr_lines(err: str, caught: list[warnings.WarningMessage]) -> list[str]:
    """What a user would see on stderr: our output plus the warnings Python prints by default."""
    shown = [f"{m.category.__name__}: {m.message}" for m in caught if not issubclass(m.category, SHOWN_BY_DEFAULT)]
    return [line for line in err.splitlines() if line.strip()] + shown


def refused_with_one_line(argv: list[str], needles: tuple[str, ...], capsys: pytest.CaptureFixture,
                          monkeypatch: pytest.MonkeyPatch | None = None) -> str:
    """Run the CLI on a bad input: exit code 2 and exactly one ``error:`` line holding every needle (warnings Python
    shows by default count as lines); ``monkeypatch`` is undone right after the run. Returns the line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(argv, capsys)
    if monkeypatch is not None:
        monkeypatch.undo()
    return one_error_line(code, err, caught, *needles)


def one_error_line(code: int, err: str, caught: list[warnings.WarningMessage], *needles: str) -> str:
    """Exit code 2 and exactly one ``error:`` line (shown warnings count as lines) holding every needle."""
    lines = stderr_lines(err, caught)
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), "\n".join(lines)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_error_and_no_half_written_output(name, world, tmp_path, capsys, monkeypatch,
                                                                    record_property):
    argv, marker, needles = CASES[name](world, tmp_path, monkeypatch)
    line = refused_with_one_line(argv, needles, capsys, monkeypatch)
    record_property("stderr", line)  # `pytest --junitxml` lists what each case prints
    assert not marker.exists(), f"{marker} was written"
    assert [p for p in tmp_path.rglob("*.tmp")] == [], "a temporary file was left behind"
    assert not (tmp_path / "PWNED").exists(), "a pickle ran code"


def test_mixed_image_sizes_and_modes_train_fine(world, tmp_path, capsys) -> None:
    """Not an error: every PIL mode becomes sensible 8-bit RGB (16-bit and float images scaled, not clipped)."""
    data = world.copy_data(tmp_path, own_val=True)
    ramp16 = np.tile(np.linspace(0, 65535, 16, dtype=np.uint16), (12, 1))
    odd = {"a.png": Image.fromarray(ramp16), "b.tiff": Image.fromarray((ramp16 / 65535).astype(np.float32)),
           "c.png": Image.new("LA", (9, 30), (90, 128)), "d.png": Image.new("1", (31, 7), 1),
           "e.jpg": Image.new("CMYK", (20, 20), (10, 200, 30, 0)), "f.png": Image.new("P", (13, 13), 7),
           "g.png": Image.new("RGBA", (40, 18), (1, 2, 3, 0)), "h.jpg": Image.new("L", (64, 48), 200)}
    for i, (file, image) in enumerate(odd.items()):
        image.save(data / "train" / "bgr"[i % 3] / file)
    wide = decode_image(data / "train" / "b" / "a.png", 16)
    assert wide.dtype == torch.uint8 and wide.shape[0] == 3
    assert wide[0, 0, 0] == 0 and wide[0, 0, -1] == 255 and 100 < wide.float().mean() < 155, "16-bit not clipped"
    assert torch.equal(decode_image(data / "train" / "g" / "b.tiff", 16), wide), "float [0, 1] scaled like 16-bit"
    argv, marker = world.finetune(tmp_path, "--data", str(data))
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert marker.is_file()


def test_the_package_has_no_unsafe_loader() -> None:
    """Weights load only via safetensors or ``torch.load(weights_only=True)``; no pickle/yaml/numpy loader that can
    run code exists anywhere in src/ (CIFAR's array-only unpickler subclasses ``pickle.Unpickler`` instead)."""
    import ast

    unsafe = []
    package = Path(__file__).resolve().parents[1] / "src" / "bespoke"
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)):
                continue
            call = f"{node.func.value.id}.{node.func.attr}"
            keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            if (call == "torch.load" and keywords.get("weights_only") is not True) \
                    or call in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load") \
                    or (call == "np.load" and keywords.get("allow_pickle") is True):
                unsafe.append(f"{path.relative_to(package)}:{node.lineno} {call}")
    assert unsafe == []
