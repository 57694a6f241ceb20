"""The one exception type users see: a message naming the problem and a hint saying what to do."""

from __future__ import annotations


class BespokeError(Exception):
    """A user-facing error. The CLI prints ``error: <message> (<hint>)`` on one line and exits with code 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DivergenceError(BespokeError):
    """A training loop produced NaN/inf; carries where it happened."""

    def __init__(self, stage: str, step: int, value: float) -> None:
        super().__init__(
            f"{stage}: loss became {value} at step {step}",
            "lower the learning rate or check the data; the last good checkpoint was kept",
        )
        self.stage = stage
        self.step = step
        self.value = value
