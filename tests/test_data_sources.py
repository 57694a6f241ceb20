"""bespoke.data sources: Fashion-MNIST IDX, CIFAR python format, ImageFolder (synthetic files in tmp_path)."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bespoke.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    class_counts,
    dataset_labels,
    datasets,
    load_dataset,
)
from bespoke.data.cifar import load_pickle
from bespoke.data.idx import FASHION_MNIST_DIR
from bespoke.errors import BespokeError

# ---------------------------------------------------------------- Fashion-MNIST (IDX)


def write_idx(path: Path, array: np.ndarray, magic: bytes | None = None) -> None:
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = (magic or bytes([0, 0, 8, arr.ndim])) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def make_idx_dir(root: Path, n_train: int = 50, n_test: int = 20, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, size, size)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


@pytest.fixture
def idx_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_idx_dir(tmp_path / "fmnist")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root))
    return root


def test_idx_loads_resized_rgb_uint8(idx_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    splits = load_dataset("fashion-mnist", resolution=12, val_fraction=0.2)
    assert capsys.readouterr().out == ""  # nothing reported on stdout
    assert splits.name == "fashion-mnist"
    assert splits.classes == FASHION_MNIST_CLASSES and splits.num_classes == 10
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 20)
    image, label = splits.train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 12)
    assert isinstance(label, int)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])  # gray expanded
    assert class_counts(splits.val, 10).tolist() == [1] * 10  # stratified carve


def test_idx_native_resolution_keeps_pixels(idx_dir: Path) -> None:
    splits = load_dataset("fashion-mnist", resolution=8, val_fraction=0.0)
    with gzip.open(idx_dir / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 8, 8)
    assert len(splits.val) == 0
    assert torch.equal(splits.train[3][0][0], torch.from_numpy(raw[3].copy()))


def test_lazy_resize_matches_eager(idx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eager = load_dataset("fashion-mnist", resolution=20)
    monkeypatch.setattr(datasets, "PRERESIZE_LIMIT_BYTES", 0)
    lazy = load_dataset("fashion-mnist", resolution=20)
    assert lazy.train.lazy_resize and not eager.train.lazy_resize
    assert lazy.train.images.shape[-1] == 8  # native size kept in memory
    for i in range(0, len(eager.train), 7):
        assert torch.equal(eager.train[i][0], lazy.train[i][0])


def test_idx_truncated_gzip_is_an_error(idx_dir: Path) -> None:
    path = idx_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(BespokeError, match="train-images"):
        load_dataset("fashion-mnist", resolution=8)


def test_idx_short_payload_is_an_error(idx_dir: Path) -> None:
    path = idx_dir / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path) as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-7])
    with pytest.raises(BespokeError, match="header"):
        load_dataset("fashion-mnist", resolution=8)


def test_idx_bad_magic_is_an_error(idx_dir: Path) -> None:
    write_idx(idx_dir / "train-labels-idx1-ubyte.gz", np.zeros(50), magic=bytes([0, 0, 9, 1]))
    with pytest.raises(BespokeError, match="magic"):
        load_dataset("fashion-mnist", resolution=8)


def test_idx_label_out_of_range_is_an_error(idx_dir: Path) -> None:
    write_idx(idx_dir / "train-labels-idx1-ubyte.gz", np.full(50, 10))
    with pytest.raises(BespokeError, match="labels"):
        load_dataset("fashion-mnist", resolution=8)


def test_idx_missing_files_hint_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(BespokeError, match="not found") as info:
        load_dataset("fashion-mnist", resolution=8)
    assert "apt-get install -y dataset-fashion-mnist" in (info.value.hint or "")


def test_limits_are_stratified_and_seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(make_idx_dir(tmp_path, n_train=200, n_test=100)))
    a = load_dataset("fashion-mnist", resolution=8, seed=3, train_limit=60, test_limit=30)
    b = load_dataset("fashion-mnist", resolution=8, seed=3, train_limit=60, test_limit=30)
    c = load_dataset("fashion-mnist", resolution=8, seed=4, train_limit=60, test_limit=30)
    assert len(a.train) + len(a.val) == 60 and len(a.test) == 30
    assert class_counts(a.test, 10).tolist() == [3] * 10
    assert (class_counts(a.train, 10) + class_counts(a.val, 10)).tolist() == [6] * 10
    stack = lambda ds: torch.stack([ds[i][0] for i in range(len(ds))])  # noqa: E731
    assert torch.equal(stack(a.train), stack(b.train)) and torch.equal(stack(a.test), stack(b.test))
    assert not torch.equal(stack(a.train), stack(c.train))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolution": 0}, "resolution"),
        ({"resolution": 8, "val_fraction": 1.0}, "val_fraction"),
        ({"resolution": 8, "train_limit": 0}, "train_limit"),
        ({"resolution": 8, "test_limit": -3}, "test_limit"),
    ],
)
def test_bad_arguments_are_errors(idx_dir: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(BespokeError, match=match):
        load_dataset("fashion-mnist", **kwargs)


def test_unknown_spec_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BespokeError, match="unknown data set"):
        load_dataset(str(tmp_path / "nope"), resolution=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BespokeError, match="neither"):
        load_dataset(str(tmp_path / "empty"), resolution=8)


# ---------------------------------------------------------------- CIFAR (python format)


def dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=4))


def make_cifar10(root: Path, per_batch: int = 20, labels_offset: int = 0) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"class{i}".encode() for i in range(10)]
    dump(root / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(i % 10) + labels_offset for i in range(per_batch)]
        dump(root / name, {b"batch_label": b"x", b"data": data, b"labels": labels, b"filenames": []})
    return root


def test_cifar10_loads_exact_pixels(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path / "cifar-10-batches-py")
    splits = load_dataset(str(root), resolution=32, val_fraction=0.25)
    assert splits.name == "cifar10" and splits.classes[:2] == ["class0", "class1"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    raw = pickle.loads((root / "test_batch").read_bytes())
    image, label = splits.test[5]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert torch.equal(image, torch.from_numpy(raw[b"data"][5].reshape(3, 32, 32)))
    assert label == raw[b"labels"][5]
    assert load_dataset(str(root), resolution=16).train[0][0].shape == (3, 16, 16)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    dump(root / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["c"]})
    for name, n in (("train", 200), ("test", 100)):
        data = np.zeros((n, 3072), np.uint8)
        dump(
            root / name, {"data": data, "fine_labels": [i % 100 for i in range(n)], "coarse_labels": [0] * n}
        )
    splits = load_dataset(str(root), resolution=8, val_fraction=0.5)
    assert splits.name == "cifar100" and splits.num_classes == 100
    assert dataset_labels(splits.val).sort().values.tolist() == list(range(100))


def test_cifar_label_out_of_range_is_an_error(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path / "c", labels_offset=1)  # labels 1..10 with 10 classes
    with pytest.raises(BespokeError, match="labels range"):
        load_dataset(str(root), resolution=32)


# {'data': np.array([1, 2], uint8), 'labels': [0, 1]} as Python 2 pickles it (the real CIFAR files' format):
# protocol 2, byte strings as SHORT_BINSTRING, globals numpy.core.multiarray._reconstruct, ndarray, dtype.
PY2_PICKLE = (
    b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00"
    b"\x85U\x01b\x87Rq\x04(K\x01K\x02\x85cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNN"
    b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x02\x01\x02tbU\x06labels]q\x07(K\x00K\x01eu."
)


def test_cifar_reads_python2_pickles(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(PY2_PICKLE)
    entry = load_pickle(path)
    assert entry["labels"] == [0, 1]
    assert entry["data"].dtype == np.uint8 and entry["data"].tolist() == [1, 2]


class _Hostile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.target),))


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path / "c")
    pwned = tmp_path / "pwned"
    dump(root / "test_batch", {b"data": _Hostile(pwned), b"labels": []})
    with pytest.raises(BespokeError, match="not allowed"):
        load_dataset(str(root), resolution=32)
    assert not pwned.exists()


# ---------------------------------------------------------------- ImageFolder


def save_image(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (value, 255 - value, value // 2))
    if mode == "P":
        image = image.quantize(4)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)


def make_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "emu"), per_class: int = 5) -> Path:
    modes = ("RGB", "L", "RGBA", "P", "RGB")
    sizes = ((20, 12), (9, 9), (13, 30), (16, 16), (40, 25))
    for split, n in (("train", per_class), ("test", 2)):
        for c, name in enumerate(classes):
            for i in range(n):
                ext = "jpg" if (i == 4 and modes[i] == "RGB") else "png"
                save_image(root / split / name / f"{i}.{ext}", sizes[i], modes[i], 40 * c + i)
    return root


def test_image_folder_loads_mixed_modes_and_sizes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    (root / "train" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    splits = load_dataset(str(root), resolution=10, val_fraction=0.2)
    assert splits.name == "pets" and splits.classes == ["cat", "dog", "emu"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 3, 6)
    assert class_counts(splits.val, 3).tolist() == [1, 1, 1]
    for ds in (splits.train, splits.val, splits.test):
        for i in range(len(ds)):
            image, label = ds[i]
            assert image.dtype == torch.uint8 and image.shape == (3, 10, 10)
            assert 0 <= label < 3


def test_image_folder_uses_its_own_val(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    for c in ("cat", "dog", "emu"):
        save_image(root / "val" / c / "v.png", (11, 11), "RGB", 7)
    splits = load_dataset(str(root), resolution=8, val_fraction=0.5)
    assert (len(splits.train), len(splits.val)) == (15, 3)


def test_image_folder_split_is_seeded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", per_class=5)
    val_paths = lambda seed: load_dataset(str(root), resolution=8, seed=seed, val_fraction=0.4).val.paths  # noqa: E731
    assert val_paths(0) == val_paths(0)
    assert any(val_paths(0) != val_paths(s) for s in range(1, 5))


def test_image_folder_class_mismatch_names_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    (root / "test" / "emu").rename(root / "test" / "yak")
    with pytest.raises(BespokeError, match="missing emu; extra yak"):
        load_dataset(str(root), resolution=8)


def test_image_folder_non_image_names_file(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    (root / "train" / "dog" / "notes.txt").write_text("hi")
    with pytest.raises(BespokeError, match=r"notes\.txt"):
        load_dataset(str(root), resolution=8)


@pytest.mark.parametrize("broken", ["missing_test", "empty_class", "loose_file"])
def test_image_folder_bad_layout_is_an_error(tmp_path: Path, broken: str) -> None:
    root = make_folder(tmp_path / "pets")
    if broken == "missing_test":
        for p in sorted((root / "test").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "test").rmdir()
    elif broken == "empty_class":
        for p in (root / "train" / "cat").iterdir():
            p.unlink()
    else:
        (root / "train" / "loose.png").write_bytes(b"")
    with pytest.raises(BespokeError):
        load_dataset(str(root), resolution=8)


def test_image_folder_corrupt_image_on_access(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    bad = root / "test" / "cat" / "0.png"
    bad.write_bytes(b"\x89PNG not really")
    splits = load_dataset(str(root), resolution=8)  # validation is cheap: nothing decoded yet
    with pytest.raises(BespokeError, match=r"cat/0\.png"):
        splits.test[0]


# ---------------------------------------------------------------- the real data set


@pytest.mark.integration
@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    splits = load_dataset("fashion-mnist", resolution=32, train_limit=600)
    assert (
        splits.num_classes == 10 and len(splits.train) + len(splits.val) == 600 and len(splits.test) == 10000
    )
    image, _ = splits.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and image.max() > 0
    counts = class_counts(splits.train, 10)
    assert counts.min() >= 50 and counts.max() <= 58
    assert class_counts(splits.test, 10).tolist() == [1000] * 10
