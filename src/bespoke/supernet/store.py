"""The supernet directory.

``SUPERNET/supernet.safetensors`` (elastic weights) + ``SUPERNET/supernet.json`` (:class:`SupernetMeta`: base
architecture, largest spec, search space, data, recipe, cost). ``supernet.json`` is written last: a directory
without it is an unfinished run (its ``checkpoints/last.pt`` resumes it). Caches of the selection stage live
beside them (``predictor/``, ``latency/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bespoke.errors import BespokeError
from bespoke.export import TeacherInfo
from bespoke.supernet.build import ElasticNet
from bespoke.supernet.space import SearchSpace
from bespoke.supernet.specs import NetSpec
from bespoke.utils.atomic import save_safetensors, write_json
from bespoke.zoo import load_state_dict

META_FILE = "supernet.json"
WEIGHTS_FILE = "supernet.safetensors"
FORMAT = 1


class SupernetMeta(BaseModel):
    """``supernet.json``."""

    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    teacher: TeacherInfo
    classes: list[str]
    spec: dict[str, Any]
    space: dict[str, Any]
    data: dict[str, Any]
    job: dict[str, Any]
    cost_cpu_s: dict[str, float] = Field(default_factory=dict)
    wall_s: float = 0.0
    history: list[dict[str, Any]] = Field(default_factory=list)
    eval: dict[str, Any] = Field(default_factory=dict)


def calibration_pool(job: dict[str, Any]) -> tuple[float, int] | None:
    """``(label fraction, seed)`` when a run may only use its labelled images (the labelled-only ablation)."""
    train = job.get("train", {})
    return None if train.get("semi_supervised", True) else (float(job["labels"]), int(train.get("seed", 0)))


def save_supernet(directory: str | Path, net: ElasticNet, meta: SupernetMeta) -> None:
    """Write weights, then ``supernet.json`` (the completion marker), atomically."""
    directory = Path(directory)
    save_safetensors(net.state_dict(), directory / WEIGHTS_FILE, metadata={"engine": "tofa"})
    write_json(directory / META_FILE, meta.model_dump(mode="json"))


def read_meta(directory: str | Path) -> SupernetMeta:
    """``supernet.json`` of a finished supernet directory."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise BespokeError(f"no trained supernet in {directory} ({META_FILE} missing)",
                           "run `bespoke supernet train` first (or let an interrupted run finish)")
    try:
        return SupernetMeta.model_validate_json(path.read_text())
    except ValueError as exc:
        raise BespokeError(f"{path} is damaged ({str(exc).splitlines()[0]})", "re-run the training") from None


def load_supernet(directory: str | Path) -> tuple[ElasticNet, SupernetMeta]:
    """Rebuild the trained supernet (no zoo or timm needed: the spec and space say it all)."""
    meta = read_meta(directory)
    net = ElasticNet(NetSpec.from_dict(meta.spec), SearchSpace.from_dict(meta.space))
    state = load_state_dict(Path(directory) / WEIGHTS_FILE)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BespokeError(f"{directory}: weights do not match the supernet description "
                           f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})",
                           "re-run the training")
    return net.eval(), meta
