"""Teacher activations at cut points: per training batch (shared by a group), and cached for held-out images."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from bespoke.graph import Segmentation


@torch.no_grad()
def teacher_boundaries(seg: Segmentation, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
    """Activations at boundaries ``0..upto`` (inclusive; default all) of the teacher on ``x``."""
    acts = [x]
    for segment in seg.segments[: len(seg) if upto is None else upto]:
        acts.append(segment(acts[-1]))
    return acts


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class ActivationCache:
    """Teacher activations at every boundary for a fixed set of held-out images, plus their labels.

    ``acts[k]`` is the input of segment ``k`` for all images (``acts[-1]`` the logits). The number of images is
    capped so the cache stays under ``max_bytes``.
    """

    def __init__(self, seg: Segmentation, images: torch.Tensor, labels: torch.Tensor, *,
                 max_bytes: int = 256 * 2**20, chunk: int = 128) -> None:
        per_image = sum(4 * _numel(shape) for shape in seg.shapes)
        keep = max(1, min(len(images), max_bytes // max(per_image, 1)))
        images, labels = images[:keep], labels[:keep]
        chunks = [teacher_boundaries(seg, images[i:i + chunk]) for i in range(0, len(images), chunk)]
        self.acts: list[torch.Tensor] = [torch.cat([c[k] for c in chunks]) for k in range(len(seg) + 1)]
        self.labels = labels
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.acts)

    @property
    def teacher_accuracy(self) -> float:
        return accuracy(self.acts[-1], self.labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return (logits.argmax(1) == labels).float().mean().item()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
