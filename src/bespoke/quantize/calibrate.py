"""Images for quantization: seeded subsets of a split, preprocessed as the model directory's card says."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader
from torch.utils.data import Dataset

from bespoke.data import build_transform
from bespoke.errors import BespokeError
from bespoke.targets.onnx_io import INPUT_NAME


def sample_images(ds: Dataset, n: int | None, *, seed: int, mean: Sequence[float], std: Sequence[float],
                  what: str) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``ds`` drawn without replacement by ``seed`` (all of them for ``None`` or more than it
    holds), normalised by ``mean``/``std`` as float32 ``[N, 3, R, R]``, and their labels.

    Raises:
        BespokeError: ``ds`` holds no image (``what`` names it in the message).
    """
    total = len(ds)  # type: ignore[arg-type]
    if total == 0:
        raise BespokeError(f"{what}: no images", "point --data at a data set with images in that split")
    if n is not None and n < 1:
        raise BespokeError(f"{what}: asked for {n} images", "use at least 1")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = sorted(order[: min(n or total, total)])
    transform = build_transform("eval", mean, std)
    images, labels = [], []
    for index in chosen:
        image, label = ds[index]
        images.append(transform(image).numpy())
        labels.append(int(label))
    return np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64)


class ImageReader(CalibrationDataReader):
    """onnxruntime's calibration reader over preprocessed images, one image per call (batch 1, as deployed)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self._it: Iterator[dict[str, np.ndarray]] = self._items()

    def _items(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self.images)):
            yield {INPUT_NAME: self.images[i:i + 1]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._items()
