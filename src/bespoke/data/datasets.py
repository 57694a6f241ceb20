"""Dataset containers: in-memory and lazy image-file datasets, transform wrappers, ``DataSplits``, labels.

Every dataset here yields ``(uint8 tensor [3, R, R], int label)`` until a transform wrapper turns the image
into a normalised float tensor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset

from bespoke.data.resize import resize_shorter_and_crop, resize_square
from bespoke.errors import BespokeError

ImageTransform = Callable[[torch.Tensor], torch.Tensor]

# Above this many bytes of resized pixels an in-memory set keeps its native size and resizes item by item on
# access (same pixels, computed per item) instead of holding e.g. 50k x 3 x 224 x 224 bytes (7.5 GB) in RAM.
PRERESIZE_LIMIT_BYTES = 1 << 30
# Decoded images above this many pixels are refused before decoding (PIL would only warn up to 179 MP): a 1 MB PNG
# can declare 12000 x 12000 pixels, i.e. gigabytes and a minute of decoding. Decoding costs about 10 bytes a pixel
# at its peak, so this bounds one image to ~170 MB; a photo PNG this large is a 20+ MB file, and JPEGs are decoded
# at a reduced scale (draft) first, so only the size after that counts.
MAX_IMAGE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class DataSplits:
    """The three splits of one data set. Items are ``(uint8 [3, R, R], int)``; labels index ``classes``."""

    name: str
    classes: list[str]
    train: Dataset
    val: Dataset
    test: Dataset

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


@dataclass(frozen=True)
class ArraySplits:
    """A data set as read from disk into memory: uint8 ``[N, C, H, W]`` images (C = 1 or 3) + int64 labels."""

    name: str
    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


class TensorImageDataset(Dataset):
    """Images held in memory as uint8 ``[N, C, H, W]`` (C = 1 or 3), served as uint8 ``[3, R, R]``.

    Grayscale is stored with one channel and expanded to three per item. Images are resized to ``R x R`` once,
    here, unless the resized set would exceed ``PRERESIZE_LIMIT_BYTES``; then each item is resized on access.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, resolution: int) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 [N, 1|3, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        n, c = images.shape[:2]
        self.resolution = resolution
        self.lazy_resize = n * c * resolution * resolution > PRERESIZE_LIMIT_BYTES
        self.images = images if self.lazy_resize else resize_square(images, resolution)
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.lazy_resize:
            image = resize_square(image, self.resolution)
        # Always a copy, so in-place transforms can never write into the shared store.
        image = image.repeat(3, 1, 1) if image.shape[0] == 1 else image.clone()
        return image, int(self.labels[index])


class ImageFileDataset(Dataset):
    """Image files decoded lazily with PIL (any mode/size -> RGB), shorter side resized to R, center-cropped.

    An unreadable or corrupt file raises ``BespokeError`` naming it when the item is accessed.
    """

    def __init__(self, paths: Sequence[Path], labels: torch.Tensor, resolution: int) -> None:
        if labels.shape != (len(paths),):
            raise ValueError(f"{len(paths)} paths but labels of shape {tuple(labels.shape)}")
        self.paths = list(paths)
        self.labels = labels.to(torch.int64)
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = decode_image(self.paths[index], self.resolution)
        return resize_shorter_and_crop(image, self.resolution), int(self.labels[index])


def decode_image(path: Path, resolution: int) -> torch.Tensor:
    """Decode one image file to uint8 ``[3, H, W]`` (JPEGs at the smallest scale >= ``resolution``).

    16-bit images are scaled to 8 bits (PIL alone would clip them to white), float images in [0, 1] or [0, 255]
    are scaled likewise; any other range is an error rather than a silently black or white image. An image over
    ``MAX_IMAGE_PIXELS`` (after the JPEG draft scale) is refused from its header, before any pixel is decoded.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns from 89 MP on; those images are over MAX_IMAGE_PIXELS, refused below with one error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as im:
            im.draft("RGB", (resolution, resolution))
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BespokeError(f"image {path} is {width} x {height} pixels, more than the "
                                   f"{MAX_IMAGE_PIXELS / 1e6:.1f}-megapixel limit", _TOO_LARGE_HINT)
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            rgb = _wide_to_8bit(im, path) if im.mode.startswith(("I", "F")) else im.convert("RGB")
    except Image.DecompressionBombError:
        declared = 2 * (Image.MAX_IMAGE_PIXELS or 0) // 10**6  # PIL's own refusal, at twice its warning size
        raise BespokeError(f"image {path} declares more than {declared} megapixels, over the "
                           f"{MAX_IMAGE_PIXELS / 1e6:.1f}-megapixel limit", _TOO_LARGE_HINT) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BespokeError(
            f"cannot read image {path}: {exc}", "delete or replace the corrupt file, then run again"
        ) from exc
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


_TOO_LARGE_HINT = "shrink the image or remove it: images are resized to the training resolution anyway"


def _wide_to_8bit(im: Image.Image, path: Path) -> Image.Image:
    """An integer (``I``, ``I;16*``) or float (``F``) grayscale image as 8-bit RGB, scaled by its nominal range."""
    values = np.asarray(im).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise BespokeError(f"image {path} holds NaN or infinite pixel values", "re-export it as 8-bit PNG or JPEG")
    scale = None
    if im.mode == "F" and low >= 0 and high <= 1:
        scale = 255.0
    elif im.mode in ("F", "I") and low >= 0 and high <= 255:  # "I" is 32-bit: values up to 255 are 8-bit ones
        scale = 1.0
    elif im.mode != "F" and low >= 0 and high <= 65535:  # 16-bit: full range maps to 0..255
        scale = 1 / 257
    if scale is None:
        raise BespokeError(f"image {path} ({im.mode}) has pixel values {low:g}..{high:g}, outside 0..1, 0..255 "
                           "and 0..65535", "re-export it as 8-bit PNG or JPEG")
    gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


class TransformedDataset(Dataset):
    """``ds`` with ``transform`` applied to each image: yields ``(transform(image), label, ...)``."""

    def __init__(self, dataset: Dataset, transform: ImageTransform) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image, label, *rest = self.dataset[index]  # anything after the label (e.g. soft targets) passes through
        return (self.transform(image), label, *rest)


class TwoViewDataset(Dataset):
    """Two augmented views of each image for semi-supervised training: yields ``(weak, strong, label)``.

    On unlabelled data the label is only for measuring pseudo-label quality; never train on it.
    """

    def __init__(self, dataset: Dataset, weak: ImageTransform, strong: ImageTransform) -> None:
        self.dataset = dataset
        self.weak = weak
        self.strong = strong

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, label = self.dataset[index]
        return self.weak(image), self.strong(image), label


def dataset_labels(ds: Dataset) -> torch.Tensor:
    """All labels of ``ds`` as an int64 tensor, without decoding images where possible.

    Fast for this package's datasets, ``Subset``/``ConcatDataset`` of them, the transform wrappers and
    datasets with a ``targets`` attribute (torchvision); any other dataset is iterated (slow: decodes all).
    """
    labels = getattr(ds, "labels", None)
    if isinstance(labels, torch.Tensor):
        return labels.clone()
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[torch.as_tensor(list(ds.indices), dtype=torch.int64)]
    if isinstance(ds, ConcatDataset):
        parts = [dataset_labels(d) for d in ds.datasets]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
    if isinstance(ds, (TransformedDataset, TwoViewDataset)):
        return dataset_labels(ds.dataset)
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.int64)
    return torch.tensor([int(ds[i][-1]) for i in range(len(ds))], dtype=torch.int64)  # type: ignore[arg-type]
