"""Progress bars for long work (rich), quiet when not attached to a terminal unless asked."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_enabled() -> bool:
    """Bars show on a terminal; ``BESPOKE_PROGRESS=0/1`` forces them off/on."""
    flag = os.environ.get("BESPOKE_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "")
    return sys.stderr.isatty()


def make_progress() -> Progress:
    """A rich progress display with description, bar, count, elapsed and remaining time, and a live postfix."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
        disable=not progress_enabled(),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    with make_progress() as prog:
        task = prog.add_task(description, total=total if total is not None else len(items), postfix="")  # type: ignore[arg-type]
        for item in items:
            yield item
            prog.advance(task)
