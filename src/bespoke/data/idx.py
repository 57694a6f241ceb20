"""Fashion-MNIST from gzipped IDX files (the Debian ``dataset-fashion-mnist`` package), parsed with NumPy."""

from __future__ import annotations

import gzip
import math
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


#: Fashion-MNIST's largest file holds 47 MB and 60k items; a header asking for more is a damaged or hostile file,
#: refused before its body is decompressed (3 MB of gzip can inflate to 3 GB)
MAX_IDX_BYTES = 1 << 26
MAX_IDX_ITEMS = 1_000_000
_HINT = "the file is damaged: reinstall it (apt-get install --reinstall -y dataset-fashion-mnist)"


def read_idx(path: Path, ndim: int, *, count: int | None = None) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes with ``ndim`` dimensions; ``BespokeError`` if corrupt.

    The header is read first and bounds everything after it: at most the bytes its dimensions call for are
    decompressed (plus one, to catch trailing data), and dimensions over ``MAX_IDX_BYTES`` / ``MAX_IDX_ITEMS`` or a
    first dimension other than ``count`` (the matching labels file's length) are refused before the body is read.
    """
    try:
        with gzip.open(path, "rb") as f:
            shape = _read_header(f, path, ndim)
            size = math.prod(shape)
            if size > MAX_IDX_BYTES or shape[0] > MAX_IDX_ITEMS:
                raise BespokeError(f"IDX file {path} declares shape {shape} ({size} bytes), more than Fashion-MNIST "
                                   f"holds (at most {MAX_IDX_ITEMS} items, {MAX_IDX_BYTES >> 20} MiB)", _HINT)
            if count is not None and shape[0] != count:
                raise BespokeError(f"IDX file {path} declares {shape[0]} images but its labels file holds {count}",
                                   "reinstall the files (apt-get install --reinstall -y dataset-fashion-mnist)")
            data = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise BespokeError(f"cannot decompress IDX file {path}: {exc}", _HINT) from exc
    if len(data) != size:
        header = 4 + 4 * ndim
        held = f"more than {header + size}" if len(data) > size else str(header + len(data))
        raise BespokeError(f"IDX file {path} holds {held} bytes but its header {shape} says {header + size}", _HINT)
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _read_header(f: gzip.GzipFile, path: Path, ndim: int) -> tuple[int, ...]:
    """The dimensions in an IDX header (magic number checked), read from the open stream ``f``."""
    header = 4 + 4 * ndim
    data = f.read(header)
    if len(data) < header:
        raise BespokeError(f"IDX file {path} is truncated: {len(data)} bytes, header needs {header}", _HINT)
    zero, dtype_code, file_ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code != _UBYTE or file_ndim != ndim:
        raise BespokeError(
            f"IDX file {path} has magic number 0x{data[:4].hex()}, expected 0x00000{_UBYTE:x}0{ndim:x} "
            f"(unsigned bytes, {ndim} dimensions)",
            _HINT,
        )
    return tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def fashion_mnist_root() -> Path:
    """Where the IDX files are: ``$BESPOKE_FASHION_MNIST_DIR`` if set, else the Debian package's directory."""
    override = os.environ.get(FASHION_MNIST_ENV)
    return Path(override) if override else FASHION_MNIST_DIR


def _read_part(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz", ndim=3, count=labels.shape[0])
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
