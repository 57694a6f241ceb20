"""Alternative recipes: the JSON that rebuilds an alternative's architecture (weights live in safetensors).

A recipe names the teacher span it replaces, where its body comes from (a donor's or the teacher's own segment
range), how it was compressed (pruned channel indices per group, ranks per conv) and its adapters. Unknown keys
are errors: a typo must not silently build another network.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["donor", "prune", "lowrank", "skip"]


class AdapterSpec(BaseModel):
    """A channel projection: 1x1 conv on feature maps, linear on vectors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_channels: int = Field(ge=1)
    out_channels: int = Field(ge=1)


class PruneStep(BaseModel):
    """One Torch-Pruning group, found from its root layer, with the channel indices removed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: str
    pruned: list[int]


class Recipe(BaseModel):
    """How to rebuild one alternative (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Kind
    span: tuple[int, int] = Field(description="teacher segments [start, end) this alternative replaces")
    in_shape: list[int]
    out_shape: list[int]
    source: str = Field(description="'teacher' or a donor key")
    source_span: tuple[int, int] | None = Field(None, description="segments [a, b) of the source used as body")
    in_adapter: AdapterSpec | None = None
    out_adapter: AdapterSpec | None = None
    ratio: float | None = Field(None, description="prune: fraction of internal channels removed")
    prune: list[PruneStep] | None = Field(None, description="prune: groups and removed indices, in order")
    rank_fraction: float | None = None
    ranks: dict[str, int] | None = Field(None, description="lowrank: rank per decomposed conv (body path)")
    seed: int = 0

    @property
    def label(self) -> str:
        """Short human-readable description for logs and reports."""
        where = f"[{self.span[0]},{self.span[1]})"
        if self.kind == "donor":
            a, b = self.source_span or (0, 0)
            return f"{self.id} {where} <- {self.source}[{a},{b})"
        if self.kind == "prune":
            return f"{self.id} {where} pruned {self.ratio:.0%}"
        if self.kind == "lowrank":
            return f"{self.id} {where} low-rank {self.rank_fraction:.0%}"
        return f"{self.id} {where} skip" + (" +proj" if self.in_adapter or self.out_adapter else "")
