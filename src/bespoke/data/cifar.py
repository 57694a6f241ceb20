"""CIFAR-10/100 in the "python version" layout, read with an unpickler that can build arrays and nothing else.

CIFAR-10: ``data_batch_1..5``, ``test_batch``, ``batches.meta``. CIFAR-100: ``train``, ``test``, ``meta``
(fine labels). Each file is a pickled dict: a uint8 NumPy array ``data`` ``[N, 3072]`` + a list of labels.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from bespoke.data.datasets import ArraySplits
from bespoke.errors import BespokeError

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# The only globals a CIFAR pickle needs: rebuilding an ndarray and its dtype. Nothing that can run code.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_HINT = "re-extract the CIFAR archive (python version) into this directory"


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays; refuses every other global (so no code can run)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def load_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle as a dict with ``str`` keys; ``BespokeError`` if unreadable or unsafe."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # a damaged or hostile pickle can fail in many ways
        raise BespokeError(f"cannot read CIFAR file {path}: {exc}", _HINT) from exc
    if not isinstance(obj, dict):
        raise BespokeError(f"CIFAR file {path} holds a {type(obj).__name__}, expected a dict", _HINT)
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _names(meta: dict[str, Any], key: str, path: Path) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list) or not names:
        raise BespokeError(f"CIFAR meta file {path} has no {key!r} list", _HINT)
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    entry = load_pickle(path)
    data, labels = entry.get("data"), entry.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise BespokeError(f"CIFAR file {path}: 'data' is {what}, expected uint8 [N, 3072]", _HINT)
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise BespokeError(f"CIFAR file {path}: {label_key!r} is not a list of integers", _HINT) from exc
    if y.shape != (data.shape[0],):
        raise BespokeError(
            f"CIFAR file {path}: {data.shape[0]} images but {label_key!r} has shape {y.shape}", _HINT
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise BespokeError(
            f"CIFAR file {path}: labels range {y.min()}..{y.max()}, outside 0..{num_classes - 1}", _HINT
        )
    return data.reshape(-1, 3, 32, 32), y


def _cifar10_batches(root: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := re.fullmatch(r"data_batch_(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def cifar_kind(root: Path) -> str | None:
    """``"cifar10"`` or ``"cifar100"`` if ``root`` holds that python-format layout, else ``None``."""
    if (root / "batches.meta").is_file() and (root / "test_batch").is_file() and _cifar10_batches(root):
        return "cifar10"
    if all((root / name).is_file() for name in ("meta", "train", "test")):
        return "cifar100"
    return None


def read_cifar(root: Path) -> ArraySplits:
    """Read a CIFAR-10/100 python-format directory (detected by the files present) into memory."""
    kind = cifar_kind(root)
    if kind == "cifar10":
        classes = _names(load_pickle(root / "batches.meta"), "label_names", root / "batches.meta")
        train = [_batch(p, "labels", len(classes)) for p in _cifar10_batches(root)]
        test = [_batch(root / "test_batch", "labels", len(classes))]
    elif kind == "cifar100":
        classes = _names(load_pickle(root / "meta"), "fine_label_names", root / "meta")
        train = [_batch(root / "train", "fine_labels", len(classes))]
        test = [_batch(root / "test", "fine_labels", len(classes))]
    else:
        raise BespokeError(
            f"{root} is not a CIFAR python-format directory",
            "expected data_batch_1..5 + test_batch + batches.meta (CIFAR-10) "
            "or train + test + meta (CIFAR-100)",
        )
    return ArraySplits(
        kind,
        classes,
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        np.concatenate([x for x, _ in test]),
        np.concatenate([y for _, y in test]),
    )
