"""Source networks of alternatives: the teacher and the donors, each traced and split into segments once.

A source is named by a key (``"teacher"`` or a donor's zoo name) and described by an architecture recipe
(``arch_config``, the JSON the export builders understand). A :class:`SourceSet` builds and caches each source's
:class:`~bespoke.graph.Segmentation`, with weights when building a house (the fine-tuned teacher, ImageNet
donors) or random ones when only the structure is needed (rebuilding an alternative before loading its weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.export import build_arch, zoo_arch_config
from bespoke.graph import Segmentation, segment_model
from bespoke.zoo import create_model, get_pretrained_cfg

TEACHER = "teacher"
ArchConfig = dict[str, Any]


def donor_arch_config(name: str, resolution: int) -> ArchConfig:
    """Recipe of a zoo donor at ``resolution``, with the classifier its pretrained weights have."""
    return zoo_arch_config(name, get_pretrained_cfg(name).num_classes, resolution)


class SourceSet:
    """Lazily built segmentations of the named source networks.

    Args:
        configs: source key -> architecture recipe (``{"builder": "zoo", "name": ..., ...}``).
        input_shape: image shape without batch, ``(3, R, R)``.
        make: optional source key -> module factory (weights included); the default builds the recipe with
            random weights.
    """

    def __init__(self, configs: Mapping[str, ArchConfig], input_shape: tuple[int, ...],
                 make: Callable[[str], nn.Module] | None = None) -> None:
        self.configs = {k: dict(v) for k, v in configs.items()}
        self.input_shape = tuple(input_shape)
        self._make = make
        self._cache: dict[str, Segmentation] = {}

    def segmentation(self, key: str) -> Segmentation:
        """The (cached) segmentation of source ``key``, in eval mode."""
        if key not in self._cache:
            if key not in self.configs:
                raise BespokeError(f"unknown source network {key!r}", f"known: {', '.join(self.configs)}")
            with torch.random.fork_rng():  # building a source must not move the caller's RNG
                torch.manual_seed(0)
                model = self._make(key) if self._make is not None else build_arch(self.configs[key])
            seg = segment_model(model.eval(), self.input_shape, copy_model=False)
            for part in seg.segments:
                part.eval()
            self._cache[key] = seg
        return self._cache[key]

    def keys(self) -> list[str]:
        return list(self.configs)


def build_time_sources(teacher: nn.Module, teacher_config: ArchConfig, donors: list[str], resolution: int,
                       *, pretrained_donors: bool = True) -> SourceSet:
    """Sources with real weights: the given teacher module, donors with their pretrained (ImageNet) weights."""
    configs = {TEACHER: teacher_config, **{d: donor_arch_config(d, resolution) for d in donors}}

    def make(key: str) -> nn.Module:
        if key == TEACHER:
            return teacher
        return create_model(key, pretrained=pretrained_donors, resolution=resolution)

    return SourceSet(configs, (3, resolution, resolution), make)


def structural_sources(configs: Mapping[str, ArchConfig], resolution: int) -> SourceSet:
    """Sources with random weights (only their structure matters: weights are loaded afterwards)."""
    return SourceSet(configs, (3, resolution, resolution))
