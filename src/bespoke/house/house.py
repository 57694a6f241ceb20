"""A model house on disk and in memory.

Layout of ``HOUSE/``::

    house.json                  teacher recipe + normalisation, source recipes, segments, settings (written once)
    teacher.safetensors         the teacher's weights
    index.json                  every alternative: recipe, status, provenance, metrics (atomic, see index.py)
    alternatives/<id>.safetensors   trained weights of each finished alternative
    latency/<cache_key>.json    cost tables, one per measurement setting (bespoke.cost)

An alternative is rebuilt from its JSON recipe (structure) and its safetensors file (weights); nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from torch import Tensor, nn

from bespoke.errors import BespokeError
from bespoke.export import TeacherInfo, build_arch
from bespoke.graph import Segmentation, Span, span_of
from bespoke.house.alternatives import build_alternative
from bespoke.house.index import INDEX_FILE, Entry, HouseIndex
from bespoke.house.module import count_params
from bespoke.house.sources import TEACHER, SourceSet
from bespoke.utils.atomic import save_safetensors, write_json
from bespoke.zoo import apply_state_dict

META_FILE, TEACHER_FILE, ALT_DIR, LATENCY_DIR = "house.json", "teacher.safetensors", "alternatives", "latency"
HOUSE_VERSION = 1


class SegmentMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    in_shape: list[int]
    out_shape: list[int]
    params: int


class HouseMeta(BaseModel):
    """``house.json``: everything that defines the house except the alternatives."""

    model_config = ConfigDict(extra="forbid")

    version: int = HOUSE_VERSION
    teacher: TeacherInfo
    sources: dict[str, dict[str, Any]]
    pretrained_donors: bool = True
    segments: list[SegmentMeta]
    settings: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


class House:
    """A house directory opened for reading (and for recording build results)."""

    def __init__(self, root: str | Path, meta: HouseMeta, index: HouseIndex) -> None:
        self.root = Path(root)
        self.meta = meta
        self.index = index
        self._teacher: nn.Module | None = None
        self._sources: SourceSet | None = None

    # ----------------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, root: str | Path) -> House:
        root = Path(root)
        path = root / META_FILE
        if not path.is_file():
            raise BespokeError(f"{root} is not a model house (no {META_FILE})",
                               "build one with `bespoke house build --out DIR`")
        try:
            meta = HouseMeta.model_validate(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError) as exc:
            raise BespokeError(f"{path} is not a valid house description ({str(exc).splitlines()[0]})") from None
        if meta.version != HOUSE_VERSION:
            raise BespokeError(f"{root} was written by house format {meta.version}, this is {HOUSE_VERSION}",
                               "rebuild the house")
        return cls(root, meta, HouseIndex.load(root))

    @classmethod
    def create(cls, root: str | Path, teacher: nn.Module, info: TeacherInfo, sources: dict[str, dict[str, Any]],
               seg: Segmentation, entries: list[Entry], *, pretrained_donors: bool,
               settings: dict[str, Any], data: dict[str, Any]) -> House:
        """Write a new house (teacher weights, house.json, index with every entry pending)."""
        root = Path(root)
        save_safetensors(teacher.state_dict(), root / TEACHER_FILE)
        meta = HouseMeta(
            teacher=info,
            sources=sources, pretrained_donors=pretrained_donors,
            segments=[SegmentMeta(name=seg.names[i], in_shape=list(seg.shapes[i]), out_shape=list(seg.shapes[i + 1]),
                                  params=seg.params(i)) for i in range(len(seg))],
            settings=settings, data=data)
        index = HouseIndex(entries=entries)
        index.save(root)
        write_json(root / META_FILE, meta.model_dump(mode="json"))  # last: the commit marker
        return cls(root, meta, index)

    # ---------------------------------------------------------------------------------------------- teacher
    @property
    def resolution(self) -> int:
        return self.meta.teacher.resolution

    @property
    def num_segments(self) -> int:
        return len(self.meta.segments)

    def teacher_model(self) -> nn.Module:
        """The teacher with its weights (built once, eval mode)."""
        if self._teacher is None:
            model = build_arch(self.meta.teacher.arch_config)
            apply_state_dict(model, load_file(str(self.root / TEACHER_FILE)), source=str(self.root / TEACHER_FILE))
            self._teacher = model.eval()
        return self._teacher

    def sources(self) -> SourceSet:
        """Source networks: the teacher with its weights, donors structure-only (weights come from files)."""
        if self._sources is None:
            def make(key: str) -> nn.Module:
                return self.teacher_model() if key == TEACHER else build_arch(self.meta.sources[key])

            self._sources = SourceSet(self.meta.sources, (3, self.resolution, self.resolution), make)
        return self._sources

    def teacher_segmentation(self) -> Segmentation:
        return self.sources().segmentation(TEACHER)

    def span(self, start: int, end: int) -> Span:
        return span_of(self.teacher_segmentation(), start, end)

    # ------------------------------------------------------------------------------------------ alternatives
    def entries(self, *statuses: str) -> list[Entry]:
        return self.index.with_status(*statuses) if statuses else list(self.index.entries)

    def weights_path(self, alt_id: str) -> Path:
        return self.inside(f"{ALT_DIR}/{alt_id}.safetensors", f"alternative {alt_id!r}")

    def inside(self, relative: str, what: str) -> Path:
        """``root / relative``, refused unless it resolves inside the house (an index names files to read and,
        on a resumed build, to write; symlinks included, neither may lead elsewhere)."""
        path = self.root / relative
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise BespokeError(f"{what}: {relative!r} in {self.root / INDEX_FILE} points outside the house",
                               "rebuild the house into a fresh --out")
        return path

    def load_alternative(self, alt_id: str) -> nn.Module:
        """A finished alternative rebuilt from its recipe and weights (eval mode)."""
        entry = self.index.get(alt_id)
        if entry.status != "done" or entry.file is None:
            raise BespokeError(f"alternative {alt_id} is {entry.status}, not trained",
                               "finish the house build (rerun it) first")
        module = build_alternative(entry.recipe, self.sources())
        path = self.inside(entry.file, f"alternative {alt_id!r}")
        apply_state_dict(module, load_file(str(path)), source=str(path))
        return module.eval()

    def record_done(self, entry: Entry, module: nn.Module, metrics: dict[str, float | int | None]) -> None:
        """Save a trained alternative's weights, then mark it done (weights first: the index is the marker)."""
        self.record_weights(entry, module.state_dict(), {**metrics, "params": count_params(module)})

    def record_weights(self, entry: Entry, state: dict[str, Tensor], metrics: dict[str, float | int | None]) -> None:
        """Like :meth:`record_done` from a state dict (trained elsewhere); ``metrics`` are stored as given."""
        path = self.weights_path(entry.id)
        save_safetensors(state, path, metadata={"recipe": entry.recipe.model_dump_json()})
        entry.file = str(path.relative_to(self.root))
        entry.status = "done"
        entry.metrics = dict(metrics)
        entry.error = None

    def record_dropped(self, entry: Entry, status: str, error: str, metrics: dict | None = None) -> None:
        entry.status = status  # type: ignore[assignment]
        entry.error = error
        entry.metrics = dict(metrics or {})

    def save_index(self) -> None:
        self.index.save(self.root)

    def latency_dir(self) -> Path:
        return self.root / LATENCY_DIR
