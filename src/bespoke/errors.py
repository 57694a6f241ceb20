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

    def __reduce__(self) -> tuple:
        """Pickle by state, not by ``__init__`` arguments: errors cross processes (Ray tasks, torch ranks) intact."""
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class DivergenceError(BespokeError):
    """A training loop produced NaN/inf; carries where it happened."""

    def __init__(self, stage: str, step: int, value: float, what: str = "loss") -> None:
        super().__init__(
            f"{stage}: {what} became {value} at step {step}",
            "lower the learning rate or check the data; the last good checkpoint was kept",
        )
        self.stage = stage
        self.step = step
        self.value = value


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (raised by the CLI's signal handler); the CLI prints one line and exits 128+signal.

    A ``BaseException`` like ``KeyboardInterrupt``, so the ``except Exception`` that keep one broken alternative or
    engine from costing the rest let it through: an interrupted run stops, it does not record work as failed.
    """

    def __init__(self, signal_name: str, signal_number: int, during: str = "") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.signal_number = signal_number
        self.during = during

    def __str__(self) -> str:
        where = f" during {self.during}" if self.during else ""
        return (f"interrupted ({self.signal_name}){where}; finished work and the last checkpoint are kept "
                "(run the same command again to resume)")


def _rebuild(cls: type[BespokeError], args: tuple, state: dict) -> BespokeError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc
