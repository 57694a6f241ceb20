"""Cost accounting: CPU seconds (user + system, this process and its waited-for children)."""

from __future__ import annotations

import os


def cpu_seconds() -> float:
    """Process CPU time so far; differences of two calls give a stage's cost in CPU-seconds."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
