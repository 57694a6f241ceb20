"""The size wall: small hostile files must not exhaust memory or hang; every size is bounded before reading.

Each bomb runs the real CLI (``bespoke.cli.main.main``) in a child process under an address-space guard
(``tests/memory_probe.py``), and the memory it allocates (peak anonymous resident memory) must stay under
``PEAK_LIMIT_BYTES`` (1 GB). Every case must also end with exit code 2, exactly one ``error: ...`` line naming the
problem, nothing half-written, within seconds.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bespoke.errors import BespokeError
from bespoke.utils.yaml_io import MAX_YAML_VALUES, load_yaml_file, short_repr
from tests.memory_probe import PEAK_LIMIT_BYTES, run_child
from tests.test_data_sources import write_idx

ARCH = "timm:mobilenetv3_small_050"


# ---------------------------------------------------------------------------------------------------- inputs
def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" YAML: ``width ** levels`` strings from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 20) -> str:
    """The same with ``<<:`` merge keys: each level merges the one below four times (PyYAML copies the pairs)."""
    lines = ["m0: &m0 {k0: 1, k1: 2}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 4)}]}}")
    return "\n".join(lines) + "\n"


def zero_gzip(path: Path, head: bytes, zeros: int, chunk: int = 1 << 26) -> None:
    """``head`` + ``zeros`` zero bytes, gzipped small: one compressed chunk of zeros repeated as gzip members."""
    member = gzip.compress(bytes(chunk), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        for _ in range(zeros // chunk):
            f.write(member)


def idx_head(*shape: int) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)


def fashion_mnist(root: Path, n_train: int = 30, n_test: int = 10) -> Path:
    """Four small valid IDX files (8 x 8 images); cases overwrite one with a bomb."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 8, 8)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def png_header_bomb(path: Path, width: int, height: int) -> None:
    """A grayscale PNG of ``width x height`` zero pixels, deflated to a few hundred KB."""
    deflate = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def image_folder(root: Path) -> Path:
    for split in ("train", "test"):
        for ci, cls in enumerate("ab"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new("RGB", (12, 12), (60 * ci + i, 80, 120)).save(root / split / cls / f"{i}.png")
    return root


def finetune(tmp: Path, *args: str) -> tuple[list[str], Path]:
    if not (tmp / "job.yaml").exists():
        (tmp / "job.yaml").write_text("pretrained: false\n")
    out = tmp / "out"
    return (["finetune", "--model", ARCH, "--resolution", "16", "--epochs", "1", "--batch-size", "4",
             "--config", str(tmp / "job.yaml"), "--out", str(out), *args], out / "card.json")


# ---------------------------------------------------------------------------------------------------- cases
Case = Callable[[Path], tuple[list[str], Path, dict[str, str], tuple[str, ...]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


@case
def config_alias_bomb_in_a_section(tmp):
    (tmp / "job.yaml").write_text("pretrained: false\n" + alias_bomb() + "train: *l8\n")
    argv, marker = finetune(tmp, "--data", str(image_folder(tmp / "data")))
    return argv, marker, {}, ("job.yaml", "aliases expand to more than", "&anchor / *alias")


@case
def config_merge_key_bomb(tmp):
    (tmp / "job.yaml").write_text("pretrained: false\n" + merge_bomb() + "train: *m19\n")
    argv, marker = finetune(tmp, "--data", str(image_folder(tmp / "data")))
    return argv, marker, {}, ("job.yaml", "aliases expand to more than")


@case
def config_from_dev_zero(tmp):
    argv, marker = finetune(tmp, "--data", str(image_folder(tmp / "data")))
    argv[argv.index("--config") + 1] = "/dev/zero"
    return argv, marker, {}, ("/dev/zero", "larger than 1 MiB")


@case
def targets_file_of_50_mb(tmp):
    line = b"  - {name: t%07d, runtime: macs, budget: 0.5x}\n"
    with open(tmp / "targets.yaml", "wb") as f:
        f.write(b"targets:\n")
        f.writelines(line % i for i in range(50_000_000 // len(line % 0)))
    argv = ["profile", str(tmp / "model"), "--targets", str(tmp / "targets.yaml")]
    return argv, tmp / "model" / "card.json", {}, ("targets file", "larger than 1 MiB", "refused before parsing")


@case
def targets_over_the_count_limit(tmp):
    (tmp / "targets.yaml").write_text("targets:\n" + "".join(f"  - {{name: t{i}, runtime: macs}}\n"
                                                             for i in range(1001)))
    argv = ["profile", str(tmp / "model"), "--targets", str(tmp / "targets.yaml")]
    return argv, tmp / "model" / "card.json", {}, ("1001 targets", "more than the 1000 allowed")


@case
def targets_alias_bomb(tmp):
    (tmp / "targets.yaml").write_text(alias_bomb() + "targets: *l8\n")
    argv = ["profile", str(tmp / "model"), "--targets", str(tmp / "targets.yaml")]
    return argv, tmp / "model" / "card.json", {}, ("targets file", "aliases expand to more than")


@case
def preset_not_utf8(tmp):
    (tmp / "preset.yaml").write_bytes(b"name: x\n\xff\xfe\x00teacher: {model: a}\n")
    argv = ["bench", "--preset", str(tmp / "preset.yaml"), "--out", str(tmp / "out")]
    return argv, tmp / "out" / "results.json", {}, ("cannot read preset", "not a text file", "offset 8")


@case
def preset_alias_bomb(tmp):
    (tmp / "preset.yaml").write_text("name: x\n" + alias_bomb() + "teacher: {model: a}\ntargets: *l8\n")
    argv = ["bench", "--preset", str(tmp / "preset.yaml"), "--out", str(tmp / "out")]
    return argv, tmp / "out" / "results.json", {}, ("preset", "aliases expand to more than")


@case
def idx_gzip_bomb_behind_a_true_header(tmp):
    root = fashion_mnist(tmp / "fm", n_train=60000)
    zero_gzip(root / "train-images-idx3-ubyte.gz", idx_head(60000, 28, 28), 3 << 30)  # 3 MB -> 3 GiB
    assert (root / "train-images-idx3-ubyte.gz").stat().st_size < 10 << 20
    argv, marker = finetune(tmp, "--data", "fashion-mnist")
    return argv, marker, {"BESPOKE_FASHION_MNIST_DIR": str(root)}, (
        "train-images", "holds more than 47040016 bytes but its header (60000, 28, 28) says 47040016")


@case
def idx_header_declaring_gigabytes(tmp):
    root = fashion_mnist(tmp / "fm", n_train=60000)
    zero_gzip(root / "train-images-idx3-ubyte.gz", idx_head(60000, 1000, 1000), 1 << 30)
    argv, marker = finetune(tmp, "--data", "fashion-mnist")
    return argv, marker, {"BESPOKE_FASHION_MNIST_DIR": str(root)}, (
        "train-images", "declares shape (60000, 1000, 1000) (60000000000 bytes)", "at most 1000000 items, 64 MiB")


@case
def idx_labels_declaring_millions(tmp):
    root = fashion_mnist(tmp / "fm")
    zero_gzip(root / "train-labels-idx1-ubyte.gz", idx_head(50_000_000), 1 << 26)
    argv, marker = finetune(tmp, "--data", "fashion-mnist")
    return argv, marker, {"BESPOKE_FASHION_MNIST_DIR": str(root)}, (
        "train-labels", "declares shape (50000000,)", "at most 1000000 items")


@case
def idx_images_disagreeing_with_labels(tmp):
    root = fashion_mnist(tmp / "fm")
    zero_gzip(root / "t10k-images-idx3-ubyte.gz", idx_head(80000, 28, 28), 1 << 30)
    argv, marker = finetune(tmp, "--data", "fashion-mnist")
    return argv, marker, {"BESPOKE_FASHION_MNIST_DIR": str(root)}, (
        "t10k-images", "declares 80000 images but its labels file holds 10")


@case
def png_of_12000_x_12000_pixels(tmp):
    data = image_folder(tmp / "data")
    png_header_bomb(data / "train" / "a" / "huge.png", 12000, 12000)
    assert (data / "train" / "a" / "huge.png").stat().st_size < 1 << 20
    argv, marker = finetune(tmp, "--data", str(data))
    return argv, marker, {}, ("huge.png", "12000 x 12000 pixels", "16.8-megapixel limit")


@case
def png_beyond_pils_own_limit(tmp):
    data = image_folder(tmp / "data")
    png_header_bomb(data / "test" / "b" / "huge.png", 20000, 20000)
    argv, marker = finetune(tmp, "--data", str(data))
    return argv, marker, {}, ("huge.png", "declares more than 178 megapixels", "16.8-megapixel limit")


@pytest.mark.parametrize("name", list(CASES))
def test_small_hostile_input_is_refused_within_the_memory_limit(name, tmp_path, record_property) -> None:
    argv, marker, env, needles = CASES[name](tmp_path)
    run = run_child(argv, tmp_path, env)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    record_property("stderr", lines[0] if lines else "")
    record_property("peak_mb", run.peak_bytes >> 20)
    record_property("anon_peak_mb", run.anon_peak_bytes >> 20)
    assert run.code == 2, run.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), "\n".join(lines[-40:])
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert len(lines[0]) < 400, lines[0]
    assert 0 < run.anon_peak_bytes < PEAK_LIMIT_BYTES, \
        f"peak allocated {run.anon_peak_bytes >> 20} MiB (RSS with library pages {run.peak_bytes >> 20} MiB)"
    assert run.seconds < 60, f"took {run.seconds:.0f} s"
    assert not marker.exists(), f"{marker} was written"
    assert [p for p in tmp_path.rglob("*.tmp")] == [], "a temporary file was left behind"


def test_the_memory_probe_sees_what_a_command_allocates(tmp_path) -> None:
    """The wall's measurement is not blind: 400 MB allocated before the command shows in the anonymous peak, and a
    plain refused command stays far below it."""
    plain = run_child(["export", str(tmp_path / "missing")], tmp_path)
    heavy = run_child(["export", str(tmp_path / "missing")], tmp_path,
                      {"BESPOKE_PROBE_PRELUDE": "import numpy; _held = numpy.ones(400_000_000, dtype='u1')"})
    assert plain.code == heavy.code == 2
    assert heavy.anon_peak_bytes - plain.anon_peak_bytes > 350_000_000
    assert plain.anon_peak_bytes < PEAK_LIMIT_BYTES


# ---------------------------------------------------------------------------------------------------- loader
def test_yaml_loader_refuses_what_would_expand_and_reads_what_would_not(tmp_path: Path) -> None:
    cases = {
        "self.yaml": ("a: &a [1, *a]\n", "refers to a value that contains it"),
        "deep.yaml": ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
        "nul.yaml": ("\x00", "invalid YAML"),
        "bomb.yaml": (alias_bomb(), f"more than {MAX_YAML_VALUES} values"),
    }
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BespokeError) as info:
            load_yaml_file(tmp_path / name, what="config file", hint="fix it")
        assert needle in str(info.value) and str(tmp_path / name) in str(info.value)
        assert "\n" not in str(info.value)
    # aliases used sparingly, and merge keys, still work
    (tmp_path / "ok.yaml").write_text("base: &b {lr: 0.1, epochs: 2}\ntrain: {<<: *b, epochs: 3}\nagain: *b\n")
    assert load_yaml_file(tmp_path / "ok.yaml", what="config file", hint="fix it") == {
        "base": {"lr": 0.1, "epochs": 2}, "train": {"lr": 0.1, "epochs": 3}, "again": {"lr": 0.1, "epochs": 2}}


def test_short_repr_is_bounded_on_a_shared_structure() -> None:
    value: list = ["lol"] * 9
    for _ in range(12):  # 9 ** 13 strings if printed in full
        value = [value] * 9
    text = short_repr(value)
    assert len(text) < 200 and text.startswith("[[[")
    assert len(short_repr("x" * 10_000_000)) < 80
