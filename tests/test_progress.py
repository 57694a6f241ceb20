"""Progress display: a rich bar on a terminal, occasional plain lines in a log, nothing when switched off."""

from __future__ import annotations

import io

import pytest
from rich.progress import Progress

from bespoke.utils.progress import LineProgress, make_progress, progress_mode


def test_line_progress_prints_rarely_and_once_at_the_end() -> None:
    out = io.StringIO()
    with LineProgress(every=3600, stream=out) as prog:
        task = prog.add_task("finetune", total=4, postfix="")
        for step in range(4):
            prog.update(task, advance=1, postfix=f"loss {1 / (step + 1):.3f}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1  # nothing until the task completes, then one line
    assert lines[0].startswith("finetune: 4/4 (100%)") and lines[0].endswith("loss 0.250")


def test_line_progress_reports_every_interval_with_an_estimate() -> None:
    out = io.StringIO()
    prog = LineProgress(every=0, stream=out)
    task = prog.add_task("distill", total=10, completed=2, postfix="")
    prog.advance(task, 3)
    line = out.getvalue().strip()
    assert line.startswith("distill: 5/10 (50%)") and "elapsed" in line and "left" in line


def test_line_progress_estimates_from_the_work_done_since_a_resume() -> None:
    out = io.StringIO()
    prog = LineProgress(every=0, stream=out)
    task = prog.add_task("finetune", total=100, completed=90, postfix="")
    prog.tasks[task].start -= 30.0  # the task was added 30 s ago
    prog.advance(task, 2)  # 2 steps in 30 s, 8 to go: 2 minutes, not 30 s x 8 / 92
    assert "~2m00s left" in out.getvalue()


@pytest.mark.parametrize(("env", "tty", "mode"), [
    ({}, False, "lines"), ({"BESPOKE_PROGRESS": "0"}, True, "off"), ({"BESPOKE_PROGRESS": "1"}, False, "bar"),
    ({"RANK": "1"}, True, "off"),
])
def test_mode_follows_terminal_environment_and_rank(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                    tty: bool, mode: str) -> None:
    for key in ("BESPOKE_PROGRESS", "RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("sys.stderr.isatty", lambda: tty)
    assert progress_mode() == mode
    assert isinstance(make_progress(), LineProgress if mode == "lines" else Progress)
