"""Progress of long work: a rich bar on a terminal, a plain line now and then in a log file.

``nohup bespoke bench ... > bench.log`` must still say how far a 25-minute fine-tune has got, so when stderr is not
a terminal each task prints one line every ``BESPOKE_PROGRESS_EVERY`` seconds (default 60) and one when it ends.
``BESPOKE_PROGRESS=0`` silences both, ``=1`` forces the bar.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TextIO, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


class ProgressDisplay(Protocol):
    """What long loops call: the part of ``rich.progress.Progress`` bespoke uses."""

    def __enter__(self) -> ProgressDisplay: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields: Any) -> TaskID: ...

    def update(self, task_id: TaskID, *, advance: float | None = None, **fields: Any) -> None: ...

    def advance(self, task_id: TaskID, advance: float = 1) -> None: ...


def progress_mode() -> str:
    """``bar`` on a terminal, ``lines`` otherwise; ``BESPOKE_PROGRESS=0/1`` forces ``off``/``bar``; ``off`` on
    every torchrun rank but 0 (rank 0 reports for all)."""
    if os.environ.get("RANK", "0") != "0":
        return "off"
    flag = os.environ.get("BESPOKE_PROGRESS")
    if flag is not None:
        return "off" if flag in ("0", "false", "") else "bar"
    return "bar" if sys.stderr.isatty() else "lines"


def progress_enabled() -> bool:
    """Whether a rich bar is drawn (a terminal, or ``BESPOKE_PROGRESS=1``)."""
    return progress_mode() == "bar"


@dataclass
class _LineTask:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    first: float = 0.0  # completed when the task was added (a resumed job starts part-way)
    start: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    done: bool = False


class LineProgress:
    """Progress as occasional plain lines (``desc: 120/564 (21%) 3m10s elapsed, ~11m50s left, loss 0.512``)."""

    def __init__(self, every: float | None = None, stream: TextIO | None = None) -> None:
        self.every = every if every is not None else float(os.environ.get("BESPOKE_PROGRESS_EVERY", "60"))
        self.stream = stream
        self.tasks: dict[int, _LineTask] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields: Any) -> TaskID:
        task_id = TaskID(len(self.tasks))
        self.tasks[task_id] = _LineTask(description, total, completed, dict(fields), first=completed)
        return task_id

    def update(self, task_id: TaskID, *, advance: float | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        task.completed += advance or 0
        task.fields.update(fields)
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total and not task.done
        if finished or now - task.last >= self.every:
            task.last, task.done = now, task.done or finished
            print(self._line(task, now), file=self.stream or sys.stderr, flush=True)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    @staticmethod
    def _line(task: _LineTask, now: float) -> str:
        elapsed = now - task.start
        parts = [f"{task.description}: {task.completed:g}"]
        if task.total:
            parts[0] += f"/{task.total:g} ({task.completed / task.total:.0%})"
        parts.append(f"{_duration(elapsed)} elapsed")
        done_here = task.completed - task.first
        if task.total and done_here > 0 and task.completed < task.total:
            parts.append(f"~{_duration(elapsed / done_here * (task.total - task.completed))} left")
        postfix = str(task.fields.get("postfix", "") or "")
        return ", ".join(parts + ([postfix] if postfix else []))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def make_progress() -> ProgressDisplay:
    """A rich bar (description, bar, count, elapsed, remaining, live postfix) on a terminal, lines in a log."""
    mode = progress_mode()
    if mode == "lines":
        return LineProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
        disable=mode == "off",
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress display."""
    with make_progress() as prog:
        task = prog.add_task(description, total=total if total is not None else len(items), postfix="")  # type: ignore[arg-type]
        for item in items:
            yield item
            prog.advance(task)
