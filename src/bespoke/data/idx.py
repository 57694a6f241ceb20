"""Fashion-MNIST from gzipped IDX files (the Debian ``dataset-fashion-mnist`` package), parsed with NumPy."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from bespoke.data.datasets import ArraySplits
from bespoke.errors import BespokeError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "BESPOKE_FASHION_MNIST_DIR"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_UBYTE = 0x08  # IDX element type code for unsigned bytes, the only one Fashion-MNIST uses


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes with ``ndim`` dimensions; ``BespokeError`` if corrupt."""
    hint = "the file is damaged: reinstall it (apt-get install --reinstall -y dataset-fashion-mnist)"
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise BespokeError(f"cannot decompress IDX file {path}: {exc}", hint) from exc
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BespokeError(f"IDX file {path} is truncated: {len(data)} bytes, header needs {header}", hint)
    zero, dtype_code, file_ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code != _UBYTE or file_ndim != ndim:
        raise BespokeError(
            f"IDX file {path} has magic number 0x{data[:4].hex()}, expected 0x00000{_UBYTE:x}0{ndim:x} "
            f"(unsigned bytes, {ndim} dimensions)",
            hint,
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise BespokeError(
            f"IDX file {path} holds {len(data)} bytes but its header {shape} says {expected}", hint
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def fashion_mnist_root() -> Path:
    """Where the IDX files are: ``$BESPOKE_FASHION_MNIST_DIR`` if set, else the Debian package's directory."""
    override = os.environ.get(FASHION_MNIST_ENV)
    return Path(override) if override else FASHION_MNIST_DIR


def _read_part(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise BespokeError(
            f"Fashion-MNIST {prefix} files disagree: {images.shape[0]} images but {labels.shape[0]} labels",
            "reinstall the files (apt-get install --reinstall -y dataset-fashion-mnist)",
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise BespokeError(
            f"Fashion-MNIST {prefix} labels go up to {int(labels.max())}, expected 0..9",
            "reinstall the files (apt-get install --reinstall -y dataset-fashion-mnist)",
        )
    return images[:, None], labels.astype(np.int64)


def read_fashion_mnist() -> ArraySplits:
    """Fashion-MNIST train (60k) and test (10k), 1-channel uint8 ``[N, 1, 28, 28]`` + int64 labels."""
    root = fashion_mnist_root()
    names = [f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        where = f" (from ${FASHION_MNIST_ENV})" if os.environ.get(FASHION_MNIST_ENV) else ""
        raise BespokeError(
            f"Fashion-MNIST not found: {', '.join(missing)} missing in {root}{where}",
            "install it with `apt-get install -y dataset-fashion-mnist` (or `./run install`), "
            f"or point ${FASHION_MNIST_ENV} at a directory holding the four IDX .gz files",
        )
    train_images, train_labels = _read_part(root, "train")
    test_images, test_labels = _read_part(root, "t10k")
    return ArraySplits(
        "fashion-mnist", list(FASHION_MNIST_CLASSES), train_images, train_labels, test_images, test_labels
    )
