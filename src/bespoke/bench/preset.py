"""Benchmark presets: one YAML file (package data ``bespoke/presets/<name>.yaml``) with a ``smoke:`` overlay.

The ``smoke`` mapping is deep-merged over the rest (mappings merge key by key, anything else is replaced)
when ``--smoke`` is given. Both the full and the smoke preset are validated: unknown keys are errors.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bespoke.baselines import PruneSettings
from bespoke.errors import BespokeError
from bespoke.quantize import PTQSearch
from bespoke.targets import MAX_TARGETS, Target
from bespoke.targets.spec import MAX_RUNS, MAX_THREADS
from bespoke.train import FinetuneConfig, SemiSupervisedConfig
from bespoke.utils.seed import Seed
from bespoke.utils.yaml_io import load_yaml_file

_Strict = ConfigDict(extra="forbid")
PRESET_HINT = "fix the preset; see src/bespoke/presets/fashion-mnist.yaml"
_ZOO_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")

#: the engine stages a preset can run (``engines:``), each reading its own section (``-`` written ``_``): the two
#: engines, the block engine in label-scarce mode (KD from the semi-supervised teacher on every image, labels of
#: the labelled share only), TOFA's labelled-only ablation and its sweep of extra targets (both laid over
#: ``tofa:``), and per-target extraction + fine-tuning (the supernet engine's selection without supernet training)
_BLOCK_KEYS = frozenset({"teacher", "house", "search", "retrain", "qat", "ptq", "int8_agreement"})
ENGINE_KEYS: dict[str, frozenset[str]] = {
    "bespoke": _BLOCK_KEYS,
    "bespoke-label-scarce": _BLOCK_KEYS,
    "tofa": frozenset({"teacher", "space", "train", "select"}),
    "tofa-labelled-only": frozenset({"teacher", "space", "train", "select"}),
    "tofa-sweep": frozenset({"targets", "range"}),
    "extract-finetune": frozenset({"teacher", "space", "select", "finetune"}),
}
#: which teacher each engine stage distils from when its section does not say: ``all`` labels, the ``labelled``
#: share only, or ``semi`` (self-trained on labelled + unlabelled images, see ``semi_teacher:``)
ENGINE_TEACHER: dict[str, str] = {"bespoke": "all", "bespoke-label-scarce": "semi", "tofa": "labelled",
                                  "tofa-labelled-only": "labelled", "extract-finetune": "labelled"}
TEACHER_KINDS = ("all", "labelled", "semi")
DEFAULT_ENGINES = ("bespoke", "tofa")


def section_name(stage: str) -> str:
    """The preset section an engine stage reads (``tofa-labelled-only`` -> ``tofa_labelled_only``)."""
    return stage.replace("-", "_")


class DataSection(BaseModel):
    """Which data, at which resolution, how many images, and how many of the training labels are kept."""

    model_config = _Strict

    spec: str = Field("fashion-mnist", description="load_dataset spec: fashion-mnist | ImageFolder | CIFAR dir")
    resolution: int = Field(64, ge=16, le=1024)
    train_images: int = Field(12_000, ge=1, description="training images (validation images come on top)")
    val_images: int = Field(1_200, ge=0, description="validation images carved from the training pool")
    test_images: int | None = Field(None, ge=1, description="test images (None: the full test split)")
    label_fraction: float = Field(0.1, gt=0, le=1, description="labelled share for the label-scarce runs")
    seed: Seed = 0

    def load_kwargs(self) -> dict[str, Any]:
        """``load_dataset`` arguments giving exactly ``train_images`` train and ``val_images`` val images."""
        pool = self.train_images + self.val_images
        return {"resolution": self.resolution, "seed": self.seed, "train_limit": pool,
                "val_fraction": self.val_images / pool, "test_limit": self.test_images}


class ModelSpec(BaseModel):
    """A zoo model and overrides of the shared fine-tuning recipe for it."""

    model_config = _Strict

    model: str
    train: dict[str, Any] = Field(default_factory=dict, description="keys of FinetuneConfig overriding recipe")

    @field_validator("model")
    @classmethod
    def _zoo_name(cls, value: str) -> str:
        # a donor's model directory is named after it (models/donor-<model>)
        if _ZOO_NAME.fullmatch(value) is None:
            shown = f"{value[:24]!r}... ({len(value)} characters)" if len(value) > 32 else repr(value)
            raise ValueError(f"{shown} is not a zoo model name: up to 128 letters, digits, '_', '.', '-' or ':'")
        return value


class PrunedSection(BaseModel):
    """The pruned-teacher + KD baseline."""

    model_config = _Strict

    enabled: bool = Field(True, description="run this baseline")
    kd_weight: float = Field(0.7, gt=0, le=1)
    kd_temperature: float = Field(4.0, gt=0)
    train: dict[str, Any] = Field(default_factory=dict, description="keys of FinetuneConfig overriding recipe")
    search: PruneSettings = Field(default_factory=PruneSettings)


class SemiTeacherSection(BaseModel):
    """The label-scarce runs' teacher, self-trained from the labelled-share teacher on every training image
    (``bespoke.baselines.self_trained_teacher``), and the donors distilled from it (``distilled_from``)."""

    model_config = _Strict

    enabled: bool = Field(True, description="train it (label-scarce runs, and any engine with teacher: semi)")
    rounds: SemiSupervisedConfig = Field(default_factory=SemiSupervisedConfig, description="self-training "
                                         "rounds over the shared recipe (bespoke.train.SemiSupervisedConfig)")
    donors: bool = Field(True, description="also distil every donor from it on every image (each starting from "
                         "its labelled-share fine-tune, one round of the same recipe)")


class PTQSection(BaseModel):
    """Post-training quantization of the teacher, every donor and the pruned teacher for each int8 target: the
    baselines an engine's int8 model must beat (``bespoke.quantize.quantize_to``; nothing runs without an int8
    target)."""

    model_config = _Strict

    enabled: bool = Field(True, description="run these baselines")
    calibration: int = Field(256, ge=1, le=100_000, description="training images the ranges are calibrated on")
    selection: int = Field(1000, ge=1, le=100_000, description="validation images the setting is chosen on")
    agreement: float = Field(0.9, ge=0, le=1, description="top-1 agreement with the fp32 model to deliver")
    search: PTQSearch = Field(default_factory=PTQSearch)


class MeasureSection(BaseModel):
    """How every delivered model's ``model.onnx`` is timed (ONNX Runtime, CPU, batch 1)."""

    model_config = _Strict

    threads: list[Annotated[int, Field(ge=1, le=MAX_THREADS, strict=True)]] = Field(
        default_factory=lambda: [1, 2], min_length=1)
    warmup: int = Field(10, ge=0, le=MAX_RUNS, strict=True)
    repeats: int = Field(100, ge=1, le=MAX_RUNS, strict=True)

    @field_validator("threads")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(t < 1 for t in value) or len(set(value)) != len(value):
            raise ValueError("threads must be distinct integers >= 1")
        return value


class SweepSection(BaseModel):
    """Extra targets for the cost of K: ``targets`` relative budgets spread evenly over ``range`` (x teacher),
    on the settings (runtime, threads, batch, timing) of the preset's first target."""

    model_config = _Strict

    targets: int = Field(20, ge=1, le=MAX_TARGETS)
    range: tuple[float, float] = Field((0.35, 0.9), description="lowest and highest budget factor")

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("range must be 0 < low <= high")
        return value

    def factors(self) -> list[float]:
        """The budget factors, from the highest down (``range``'s middle for one target)."""
        low, high = self.range
        if self.targets == 1:
            return [round((low + high) / 2, 4)]
        return [round(high - i * (high - low) / (self.targets - 1), 4) for i in range(self.targets)]


class BenchPreset(BaseModel):
    """A whole benchmark: data, recipe, teacher, donors, baseline, targets, measurement, engine settings."""

    model_config = _Strict

    name: str
    description: str = ""
    data: DataSection = Field(default_factory=DataSection)
    recipe: FinetuneConfig = Field(default_factory=FinetuneConfig, description="shared fine-tuning recipe")
    teacher: ModelSpec
    donors: list[ModelSpec] = Field(default_factory=list)
    label_scarce: bool = Field(True, description="also train every baseline on the labelled share only")
    pruned: PrunedSection = Field(default_factory=PrunedSection)
    ptq: PTQSection = Field(default_factory=PTQSection)
    semi_teacher: SemiTeacherSection = Field(default_factory=SemiTeacherSection)
    targets: list[Target] = Field(min_length=1, max_length=MAX_TARGETS,
                                  description="budget targets (relative budgets: x teacher)")
    measure: MeasureSection = Field(default_factory=MeasureSection)
    bespoke: dict[str, Any] = Field(default_factory=dict, description="passed through to the block engine")
    bespoke_label_scarce: dict[str, Any] = Field(default_factory=dict, description="over bespoke: the block "
                                                 "engine in label-scarce mode (teacher: semi by default)")
    tofa: dict[str, Any] = Field(default_factory=dict, description="passed through to the supernet engine")
    tofa_labelled_only: dict[str, Any] = Field(default_factory=dict, description="over tofa: for its ablation "
                                               "trained on the labelled share only (semi_supervised false)")
    tofa_sweep: SweepSection = Field(default_factory=SweepSection, description="tofa's extra targets")
    extract_finetune: dict[str, Any] = Field(default_factory=dict, description="per-target extraction from the "
                                             "untrained supernet + fine-tune (finetune: overrides of recipe)")
    engines: list[str] = Field(default_factory=lambda: list(DEFAULT_ENGINES), description="engine stages run, "
                               "in this order")
    smoke: dict[str, Any] = Field(default_factory=dict, description="overlay for --smoke (tiny run)")

    @model_validator(mode="after")
    def _check(self) -> BenchPreset:
        for spec in [self.teacher, *self.donors]:
            self.train_config(spec)  # a typo in an override fails now, not hours into the run
        self.pruned_config()
        for engine, allowed in ENGINE_KEYS.items():
            section, name = getattr(self, section_name(engine)), section_name(engine)
            unknown = sorted(set(dict(section)) - allowed)
            if unknown:
                raise ValueError(f"{name}: unknown key(s) {', '.join(unknown)}; "
                                 f"allowed: {', '.join(sorted(allowed))}")
            if dict(section).get("teacher", "all") not in TEACHER_KINDS:
                raise ValueError(f"{name}.teacher must be one of {', '.join(map(repr, TEACHER_KINDS))}")
            if (engine in self.engines and self.engine_teacher(engine) == "semi"
                    and not self.semi_teacher.enabled):
                raise ValueError(f"{name}.teacher is 'semi' but semi_teacher.enabled is false")
        unknown = sorted(set(self.engines) - set(ENGINE_KEYS))
        if unknown or len(set(self.engines)) != len(self.engines):
            raise ValueError(f"engines: {', '.join(unknown) or 'a name listed twice'}; known: "
                             f"{', '.join(ENGINE_KEYS)}")
        self.extract_config()
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate target names in {names}")
        return self

    def engine_teacher(self, engine: str) -> str:
        """``all``, ``labelled`` or ``semi``: the teacher engine stage ``engine`` distils from."""
        return str(self.stage_settings(engine).get("teacher", ENGINE_TEACHER.get(engine, "all")))

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """The settings engine stage ``stage`` runs with: its own section; TOFA's labelled-only ablation is its
        section over ``tofa:`` with ``semi_supervised: false``, its sweep carries ``tofa:`` along."""
        own = dict(getattr(self, section_name(stage), None) or {})
        if stage == "tofa-labelled-only":
            return deep_merge(deep_merge(self.tofa, own), {"train": {"semi_supervised": False}})
        if stage == "bespoke-label-scarce":
            return deep_merge({k: v for k, v in self.bespoke.items() if k != "teacher"}, own)
        if stage == "tofa-sweep":
            return {**self.tofa_sweep.model_dump(mode="json"), "teacher": self.engine_teacher("tofa"),
                    "tofa": dict(self.tofa)}
        return own

    def extract_config(self) -> FinetuneConfig:
        """The fine-tuning recipe of extraction + fine-tune: the shared ``recipe`` with its ``finetune`` keys."""
        return FinetuneConfig.model_validate({**self.recipe.model_dump(), **self.extract_finetune.get("finetune", {})})

    def train_config(self, spec: ModelSpec) -> FinetuneConfig:
        """The recipe for ``spec``: the shared ``recipe`` with its own overrides."""
        return FinetuneConfig.model_validate({**self.recipe.model_dump(), **spec.train})

    def wants_semi_teacher(self) -> bool:
        """Whether the run trains the semi-supervised teacher: label-scarce runs, or an engine distilling from it."""
        if not self.semi_teacher.enabled:
            return False
        return self.label_scarce or any(self.engine_teacher(e) == "semi" for e in self.engines)

    def pruned_config(self) -> FinetuneConfig:
        """The KD retraining recipe of the pruned baseline."""
        return FinetuneConfig.model_validate({**self.recipe.model_dump(), **self.pruned.train,
                                              "kd_weight": self.pruned.kd_weight,
                                              "kd_temperature": self.pruned.kd_temperature})


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: nested mappings merge key by key, other values (lists too) are replaced."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_path(preset: str | Path) -> Path:
    """A preset name (``fashion-mnist``) resolved in the package's presets, or a path to a YAML file."""
    candidate = Path(preset)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise BespokeError(f"preset file not found: {candidate}", "give a preset name or a YAML path")
        return candidate
    packaged = Path(str(resources.files("bespoke") / "presets" / f"{preset}.yaml"))
    if not packaged.is_file():
        raise BespokeError(f"unknown preset {preset!r}", f"known: {', '.join(list_presets())}, or a YAML path")
    return packaged


def list_presets() -> list[str]:
    """Names of the benchmark presets shipped with the package (YAML files with a ``teacher:`` or ``base:`` key)."""
    root = Path(str(resources.files("bespoke") / "presets"))
    names = []
    for path in sorted(root.glob("*.yaml")):
        doc = load_yaml_file(path, what="preset", hint=PRESET_HINT)
        if isinstance(doc, dict) and ("teacher" in doc or "base" in doc):
            names.append(path.stem)
    return names


def read_preset_doc(preset: str | Path, _seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Path]:
    """A preset's YAML mapping with its ``base:`` chain resolved: ``base: fashion-mnist`` (a preset name, or a YAML
    path relative to this file) is read first and this file laid over it (:func:`deep_merge`: mappings key by key,
    lists replaced), so a variant states only what differs."""
    nested_file = bool(_seen) and str(preset).endswith((".yaml", ".yml"))
    path = preset_path(_seen[-1].parent / preset if nested_file else preset)
    if path.resolve() in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path.resolve()))
        raise BespokeError(f"preset base cycle: {chain}", "a preset cannot be its own base")
    doc = load_yaml_file(path, what="preset", hint=PRESET_HINT)
    if not isinstance(doc, dict):
        raise BespokeError(f"{path} must hold a mapping", PRESET_HINT)
    base = doc.pop("base", None)
    if base is None:
        return doc, path
    if not isinstance(base, str):
        raise BespokeError(f"{path}: base must be a preset name or a YAML path, got {base!r}", PRESET_HINT)
    under, _ = read_preset_doc(base, (*_seen, path.resolve()))
    return deep_merge(under, doc), path


def load_preset(preset: str | Path, *, smoke: bool = False) -> BenchPreset:
    """Read and validate a preset; with ``smoke`` its ``smoke:`` overlay is applied (and validated too)."""
    doc, path = read_preset_doc(preset)
    full = validate_preset(doc, path, "")
    if not smoke:
        return full
    overlay = dict(full.smoke)
    if "smoke" in overlay:
        raise BespokeError(f"{path}: 'smoke' cannot contain 'smoke'")
    return validate_preset(deep_merge(doc, overlay), path, " (with its smoke overlay)")


def validate_preset(doc: dict[str, Any], path: Path, what: str) -> BenchPreset:
    try:
        return BenchPreset.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "preset"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise BespokeError(f"{path}{what}: {where}: {err['msg']}{more}", "fix the preset; unknown keys are errors"
                           ) from None
