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
from bespoke.errors import BespokeError
from bespoke.export import ModelCard, load_model_dir
from bespoke.targets import Target
from bespoke.train import labelled_and_unlabelled

TEACHER = "teacher"
TEACHER_LABELLED = "teacher-labelled"
TEACHER_SEMI = "teacher-semi"
#: the model directory key (``OUT/models/<key>``) of each teacher kind an engine may ask for
TEACHER_KEYS: dict[str, str] = {"all": TEACHER, "labelled": TEACHER_LABELLED, "semi": TEACHER_SEMI}


@dataclass
class BenchContext:
    """State shared by the stages of one ``run_bench``.

    Engines read: ``preset``, ``engine_settings(name)``, ``splits`` (train / val / test), ``labelled`` and
    ``unlabelled`` (a split of ``splits.train``; unlabelled items keep their label only for measuring),
    ``teacher(kind)`` (a teacher's model directory: ``all`` labels, the ``labelled`` share only, or ``semi``:
    self-trained on labelled + unlabelled images), ``label_scarce_splits()``, ``targets`` with their absolute
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

    def teacher(self, kind: str = "all") -> Path:
        """The model directory of the teacher ``kind``: fine-tuned on ``all`` labels, on the ``labelled`` share
        only, or ``semi`` (self-trained from the ``labelled`` one on every training image).

        The teacher's training cost is charged to the calling engine's one-off preparation (the semi-supervised
        teacher's includes its labelled round 0: that stage uses it).
        """
        if kind not in TEACHER_KEYS:
            raise ValueError(f"teacher kind {kind!r}: use one of {', '.join(TEACHER_KEYS)}")
        if TEACHER_KEYS[kind] not in self.teacher_dirs:
            raise BespokeError(f"the {kind!r} teacher was not trained in this run",
                               "a preset's semi_teacher.enabled: false leaves no semi-supervised teacher")
        self.teachers_used.add(TEACHER_KEYS[kind])
        return self.teacher_dirs[TEACHER_KEYS[kind]]

    def load_teacher(self, kind: str = "all") -> tuple[nn.Module, ModelCard]:
        """The teacher model (eval mode) and its card."""
        return load_model_dir(self.teacher(kind))

    def all_images_data(self) -> TrainData:
        """Every training image, labels of the labelled share only (the rest read ``UNLABELLED``), and the test
        split: what a label-scarce model that also learns from unlabelled images trains on."""
        train = labelled_and_unlabelled(self.labelled, self.unlabelled)
        info = {"dataset": self.splits.name, "train": len(train), "val": len(self.splits.val),  # type: ignore[arg-type]
                "test": len(self.splits.test),  # type: ignore[arg-type]
                "labelled": len(self.labelled), "unlabelled": len(self.unlabelled),  # type: ignore[arg-type]
                "labels": f"{self.preset.data.label_fraction:.0%} of training labels + unlabelled images"}
        return TrainData(train=train, test=self.splits.test, classes=list(self.splits.classes),
                         resolution=self.resolution, info=info)

    def label_scarce_splits(self) -> DataSplits:
        """``splits`` whose training images keep only the labelled share's labels (the others read
        :data:`~bespoke.train.UNLABELLED`): what a label-scarce engine trains on, validation and test unchanged."""
        s = self.splits
        return DataSplits(s.name, s.classes, labelled_and_unlabelled(self.labelled, self.unlabelled), s.val, s.test)

    def train_data(self, labelled_only: bool = False) -> TrainData:
        """Training set (all labels, or only the labelled share) and the full test split, for a baseline."""
        train = self.labelled if labelled_only else self.splits.train
        info = {"dataset": self.splits.name, "train": len(train), "val": len(self.splits.val),  # type: ignore[arg-type]
                "test": len(self.splits.test),  # type: ignore[arg-type]
                "labels": f"{self.preset.data.label_fraction:.0%} of training labels" if labelled_only
                else "all training labels"}
        return TrainData(train=train, test=self.splits.test, classes=list(self.splits.classes),
                         resolution=self.resolution, info=info)
