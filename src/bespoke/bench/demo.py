"""``bespoke demo``: the main job, i.e. the benchmark run with the packaged ``demo`` preset and a few overrides.

A pretrained teacher is fine-tuned, both engines deliver a verified model for each of three targets, and
``report`` writes ``results.md`` + ``pareto.png``. Flags scale it up; anything else: copy ``presets/demo.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bespoke.bench.engines import engine_stages
from bespoke.bench.preset import BenchPreset, deep_merge, read_preset_doc, validate_preset
from bespoke.bench.run import BenchResults, run_bench
from bespoke.errors import BespokeError
from bespoke.targets import load_targets
from bespoke.utils.seed import Seed


class DemoConfig(BaseModel):
    """What the demo's flags change; ``None`` keeps the preset's value."""

    model_config = ConfigDict(extra="forbid")

    teacher: str | None = Field(None, description="zoo model to start from (preset: efficientnet_lite0)")
    data: str | None = Field(None, description="fashion-mnist | ImageFolder dir | CIFAR dir")
    resolution: int | None = Field(None, ge=16, le=1024)
    train_images: int | None = Field(None, ge=10, description="training images (preset: 3000)")
    test_images: int | None = Field(None, ge=10, description="test images (preset: 2000)")
    epochs: int | None = Field(None, ge=1, description="teacher fine-tune epochs (preset: 1)")
    labels: float | None = Field(None, gt=0, le=1, description="labelled share TOFA's supervised term sees")
    targets: Path | None = Field(None, description="targets YAML replacing the preset's three targets")
    engines: list[str] | None = Field(None, description="engine stages to run (default: the preset's, both engines)")
    smoke: bool = Field(False, description="tiny plumbing run (about a minute)")
    out: Path = Path("runs/demo")
    seed: Seed | None = None


def demo_preset(cfg: DemoConfig, preset: str | Path = "demo") -> BenchPreset:
    """The ``demo`` preset with ``cfg``'s overrides applied and validated."""
    doc, path = read_preset_doc(preset)
    if cfg.smoke:
        doc = deep_merge(doc, doc.get("smoke", {}))
    data = {"spec": cfg.data, "resolution": cfg.resolution, "train_images": cfg.train_images,
            "test_images": cfg.test_images, "label_fraction": cfg.labels, "seed": cfg.seed}
    overlay: dict[str, Any] = {"data": {k: v for k, v in data.items() if v is not None}}
    if cfg.teacher is not None:
        overlay["teacher"] = {"model": cfg.teacher}
    recipe = {"epochs": cfg.epochs, "seed": cfg.seed}
    overlay["recipe"] = {k: v for k, v in recipe.items() if v is not None}
    if cfg.targets is not None:
        overlay["targets"] = [t.model_dump(mode="json", exclude_none=True) for t in load_targets(cfg.targets)]
    return validate_preset(deep_merge(doc, overlay), path, " (with the demo's flags)")


def run_demo(cfg: DemoConfig, *, log: Callable[[str], None] = print) -> BenchResults:
    """Run (or resume) the main job into ``cfg.out``; returns the benchmark results (report paths in ``files``)."""
    registered = engine_stages()
    preset = demo_preset(cfg)
    names = cfg.engines if cfg.engines is not None else preset.engines
    unknown = sorted(set(names) - set(registered))
    if unknown:
        raise BespokeError(f"unknown engine(s) {', '.join(unknown)}", f"known: {', '.join(registered)}")
    return run_bench(preset, cfg.out, smoke=cfg.smoke, engines={n: registered[n] for n in names}, log=log)
