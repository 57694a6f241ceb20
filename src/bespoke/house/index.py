"""The house index: one JSON file listing every planned alternative, its status, provenance and metrics.

Written atomically after every change, so a killed build leaves either the previous or the new index; a
rerun trains only the alternatives still ``pending``. Statuses: ``pending`` (planned), ``done`` (trained,
weights in ``file``), ``diverged`` (loss became NaN/inf; dropped, kept here with the step and value), ``failed``
(could not be built; dropped, with the error).
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bespoke.errors import BespokeError
from bespoke.house.recipe import Recipe
from bespoke.utils.atomic import write_json

Status = Literal["pending", "done", "diverged", "failed"]
INDEX_FILE = "index.json"
INDEX_VERSION = 1
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # no separator, never '.' or '..'


class Entry(BaseModel):
    """One alternative in the index."""

    model_config = ConfigDict(extra="forbid")

    id: str
    status: Status = "pending"
    recipe: Recipe
    file: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    error: str | None = None

    @field_validator("id")
    @classmethod
    def _plain_id(cls, value: str) -> str:
        """Ids name files (``alternatives/<id>.safetensors``): a crafted ``../x`` must not reach outside the house."""
        if not PLAIN_NAME.fullmatch(value):
            raise ValueError(f"must be a plain name (letters, digits, '_', '.', '-'), got {value!r:.80}")
        return value

    @field_validator("file")
    @classmethod
    def _relative_file(cls, value: str | None) -> str | None:
        """A relative path below the house, made of plain names (no absolute path, no ``..``)."""
        if value is None:
            return value
        parts = PurePosixPath(value).parts
        if not parts or "\\" in value or not all(PLAIN_NAME.fullmatch(part) for part in parts):
            raise ValueError(f"must be a path inside the house made of plain names, got {value!r:.80}")
        return value


class HouseIndex(BaseModel):
    """All alternatives of a house, in plan order, plus bookkeeping of the build."""

    model_config = ConfigDict(extra="forbid")

    version: int = INDEX_VERSION
    entries: list[Entry] = Field(default_factory=list)
    memory: dict[str, Any] = Field(default_factory=dict)
    cost_cpu_s: dict[str, float] = Field(default_factory=dict)

    def get(self, alt_id: str) -> Entry:
        for entry in self.entries:
            if entry.id == alt_id:
                return entry
        raise BespokeError(f"no alternative {alt_id!r} in the house index")

    def with_status(self, *statuses: Status) -> list[Entry]:
        return [e for e in self.entries if e.status in statuses]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.entries:
            out[entry.status] = out.get(entry.status, 0) + 1
        return out

    def save(self, root: str | Path) -> None:
        write_json(Path(root) / INDEX_FILE, self.model_dump(mode="json"))

    @classmethod
    def load(cls, root: str | Path) -> HouseIndex:
        path = Path(root) / INDEX_FILE
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError:
            raise BespokeError(f"no house index at {path}", "build a house first (bespoke house build)") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
            raise BespokeError(f"{path} is not a valid house index ({where}: {message})",
                               "rebuild the house into a fresh --out") from None
        except (json.JSONDecodeError, ValueError) as exc:
            raise BespokeError(f"{path} is not a valid house index ({str(exc).splitlines()[0]})",
                               "rebuild the house into a fresh --out") from None
