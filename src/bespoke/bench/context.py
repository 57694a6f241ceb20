"""What every benchmark stage (built-in or engine) gets: the preset, the data, the teachers, the budgets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from bespoke.baselines import TrainData
from bespoke.bench.preset import BenchPreset
from bespoke.data import DataSplits
from bespoke.export import ModelCard, load_model_dir
from bespoke.targets import Target

TEACHER = "teacher"
TEACHER_LABELLED = "teacher-labelled"


@dataclass
class BenchContext:
    """State shared by the stages of one ``run_bench``.

    Engines read: ``preset``, ``engine_settings(name)``, ``splits`` (train / val / test), ``labelled`` and
    ``unlabelled`` (a split of ``splits.train``; unlabelled items keep their label only for measuring),
    ``teacher(labelled_only)`` (the fine-tuned teacher's model directory), ``targets`` with their absolute
    ``budgets`` (target name -> value in the target's unit, resolved against the teacher's value on that target,
kept in ``references``), ``stage_dir(name)``, ``smoke`` (a tiny plumbing run: keep the engine tiny too).
    """

    preset: BenchPreset
    out: Path
    smoke: bool
    splits: DataSplits
    labelled: Dataset
    unlabelled: Dataset
    targets: list[Target]
    budgets: dict[str, float] = field(default_factory=dict)
    references: dict[str, float] = field(default_factory=dict)
    teacher_dirs: dict[str, Path] = field(default_factory=dict)
    teachers_used: set[str] = field(default_factory=set)
    log: Callable[[str], None] = print
    remeasure: bool = False  # time finished models again (once per run), e.g. after a timing-protocol change
    remeasured: set[str] = field(default_factory=set)

    @property
    def resolution(self) -> int:
        return self.preset.data.resolution

    def engine_settings(self, name: str) -> dict[str, Any]:
        """The settings engine stage ``name`` runs with (:meth:`BenchPreset.stage_settings`); ``{}`` if none."""
        return self.preset.stage_settings(name)

    def stage_dir(self, name: str) -> Path:
        """Where stage ``name`` keeps its work and delivered models (``OUT/engines/<name>``), created."""
        path = self.out / "engines" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def teacher(self, labelled_only: bool = False) -> Path:
        """The fine-tuned teacher's model directory (trained on all labels, or on the labelled share only).

        The teacher's fine-tuning cost is charged to the calling engine's one-off preparation.
        """
        key = TEACHER_LABELLED if labelled_only else TEACHER
        self.teachers_used.add(key)
        return self.teacher_dirs[key]

    def load_teacher(self, labelled_only: bool = False) -> tuple[nn.Module, ModelCard]:
        """The teacher model (eval mode) and its card."""
        return load_model_dir(self.teacher(labelled_only))

    def train_data(self, labelled_only: bool = False) -> TrainData:
        """Training set (all labels, or only the labelled share) and the full test split, for a baseline."""
        train = self.labelled if labelled_only else self.splits.train
        info = {"dataset": self.splits.name, "train": len(train), "val": len(self.splits.val),  # type: ignore[arg-type]
                "test": len(self.splits.test),  # type: ignore[arg-type]
                "labels": f"{self.preset.data.label_fraction:.0%} of training labels" if labelled_only
                else "all training labels"}
        return TrainData(train=train, test=self.splits.test, classes=list(self.splits.classes),
                         resolution=self.resolution, info=info)
