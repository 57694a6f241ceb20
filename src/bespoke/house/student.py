"""Students: the teacher's segments with some non-overlapping spans replaced by alternatives.

A student is a plain ``nn.Module`` (a list of parts run in order) that exports to ONNX. Its architecture is
JSON (``student_arch_config``): the teacher's recipe, the recipes of the chosen alternatives and of their
source networks. ``build_student`` rebuilds it from that JSON alone (registered as the export builder
``"bespoke-block"``), so a delivered model directory loads without the house.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.export import build_arch, register_arch_builder
from bespoke.house.alternatives import build_alternative
from bespoke.house.house import House
from bespoke.house.recipe import Recipe
from bespoke.house.sources import TEACHER, SourceSet

STUDENT_BUILDER = "bespoke-block"


class Student(nn.Module):
    """Parts run one after the other: teacher segments and alternatives."""

    def __init__(self, parts: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = part(x)
        return x


def check_non_overlapping(recipes: Sequence[Recipe], num_segments: int) -> list[Recipe]:
    """``recipes`` sorted by span start; ``BespokeError`` if two overlap or one falls outside the teacher."""
    ordered = sorted(recipes, key=lambda r: r.span[0])
    end = 0
    for recipe in ordered:
        a, b = recipe.span
        if a < end or b > num_segments or a >= b:
            raise BespokeError(f"alternative {recipe.id} span [{a}, {b}) overlaps another or leaves the teacher")
        end = b
    return ordered


def _layout(recipes: Sequence[Recipe], num_segments: int) -> list[tuple[int, int, Recipe | None]]:
    """Parts in order: ``(start, end, recipe)``; ``recipe`` None is one teacher segment."""
    parts: list[tuple[int, int, Recipe | None]] = []
    pos = 0
    for recipe in check_non_overlapping(recipes, num_segments):
        parts.extend((i, i + 1, None) for i in range(pos, recipe.span[0]))
        parts.append((recipe.span[0], recipe.span[1], recipe))
        pos = recipe.span[1]
    parts.extend((i, i + 1, None) for i in range(pos, num_segments))
    return parts


def _assemble(sources: SourceSet, recipes: Sequence[Recipe], num_segments: int,
              alternatives: Mapping[str, nn.Module] | None = None) -> Student:
    teacher = sources.segmentation(TEACHER)
    if len(teacher) != num_segments:
        raise BespokeError(f"the teacher splits into {len(teacher)} segments, the recipe expects {num_segments}",
                           "the model was built with another version of bespoke or timm")
    parts: list[nn.Module] = []
    for start, _end, recipe in _layout(recipes, num_segments):
        if recipe is None:
            parts.append(copy.deepcopy(teacher.segments[start]))
        elif alternatives is not None and recipe.id in alternatives:
            parts.append(copy.deepcopy(alternatives[recipe.id]))
        else:
            parts.append(build_alternative(recipe.model_copy(deep=True), sources))
    return Student(parts)


def student_arch_config(house: House, alt_ids: Sequence[str]) -> dict[str, Any]:
    """The JSON recipe of the student using alternatives ``alt_ids`` of ``house``."""
    recipes = [house.index.get(a).recipe for a in alt_ids]
    check_non_overlapping(recipes, house.num_segments)
    used = {TEACHER} | {r.source for r in recipes}
    return {
        "builder": STUDENT_BUILDER,
        "resolution": house.resolution,
        "num_segments": house.num_segments,
        "num_classes": house.meta.teacher.num_classes,
        "sources": {k: v for k, v in house.meta.sources.items() if k in used},
        "alternatives": [r.model_dump(mode="json") for r in sorted(recipes, key=lambda r: r.span[0])],
    }


def assemble_student(house: House, alt_ids: Sequence[str],
                     alternatives: Mapping[str, nn.Module] | None = None) -> Student:
    """The student with the teacher's and the alternatives' trained weights (copies: the house is untouched).

    ``alternatives`` may hold already loaded alternative modules by id (else they are loaded from the house).
    """
    loaded = dict(alternatives or {})
    for alt_id in alt_ids:
        if alt_id not in loaded:
            loaded[alt_id] = house.load_alternative(alt_id)
    recipes = [house.index.get(a).recipe for a in alt_ids]
    return _assemble(house.sources(), recipes, house.num_segments, loaded).eval()


def build_student(arch_config: Mapping[str, Any]) -> Student:
    """An untrained student from its JSON recipe (what ``load_model_dir`` calls)."""
    try:
        recipes = [Recipe.model_validate(r) for r in arch_config["alternatives"]]
        sources = SourceSet(arch_config["sources"], (3, arch_config["resolution"], arch_config["resolution"]),
                            lambda key: build_arch(arch_config["sources"][key]))
        return _assemble(sources, recipes, int(arch_config["num_segments"]))
    except KeyError as exc:
        raise BespokeError(f"student recipe lacks key {exc}", "the card was not written by bespoke") from None


register_arch_builder(STUDENT_BUILDER, build_student)
