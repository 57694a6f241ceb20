"""Spans: consecutive segment ranges ``[start, end)``, the one-input/one-output sub-networks to replace."""

from __future__ import annotations

from dataclasses import dataclass

from bespoke.graph.segments import Segmentation, Shape


@dataclass(frozen=True)
class Span:
    """Segments ``start .. end-1`` of a segmentation, with the activation shapes (no batch) at both ends."""

    start: int
    end: int
    in_shape: Shape
    out_shape: Shape

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def key(self) -> str:
        return f"{self.start}-{self.end}"

    @property
    def in_channels(self) -> int:
        return self.in_shape[0]

    @property
    def out_channels(self) -> int:
        return self.out_shape[0]

    @property
    def reduction(self) -> float | None:
        """Spatial reduction (input height / output height); ``None`` when either end is not a feature map."""
        if len(self.in_shape) != 3 or len(self.out_shape) != 3:
            return None
        return self.in_shape[1] / self.out_shape[1]

    @property
    def spatial(self) -> tuple[Shape, Shape]:
        """Spatial sizes (everything after the channels) at input and output."""
        return self.in_shape[1:], self.out_shape[1:]

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape), "reduction": self.reduction}


def span_of(seg: Segmentation, start: int, end: int) -> Span:
    """The span ``[start, end)`` of ``seg``."""
    if not 0 <= start < end <= len(seg):
        raise ValueError(f"span [{start}, {end}) outside 0..{len(seg)}")
    return Span(start, end, seg.shapes[start], seg.shapes[end])


def enumerate_spans(seg: Segmentation, max_length: int, *, include_head: bool = False) -> list[Span]:
    """Every span of 1..``max_length`` segments, ordered by start then length.

    The last segment (the classifier) is left out unless ``include_head``: replacing it would change the task.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    limit = len(seg) if include_head else len(seg) - 1
    return [span_of(seg, i, j) for i in range(limit) for j in range(i + 1, min(i + max_length, limit) + 1)]
