"""One bespoke run per output folder: an advisory lock held while a job writes the folder.

Two runs writing one ``--out`` at once would interleave checkpoints and markers, so every job that writes an output
folder (fine-tune, house build, search, supernet train/select, bench, export, device parts) holds
``OUT/.bespoke.lock`` with ``fcntl.flock`` for as long as it writes; a second run is refused at once with the
holder's pid. The kernel drops the lock when its holder dies, however it dies, so a killed run never blocks the
rerun that resumes it. The file is removed when the lock is released (only by its holder, so a waiting run
re-checks that the file it locked is still the one in the folder), and a folder this lock created is removed again
if the job left it empty, e.g. after refusing a bad option.

Locks are re-entrant within a process: a job that calls another job on the same folder (``demo`` -> ``bench``,
``finetune`` -> ``save_model_dir``) holds it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from bespoke.errors import BespokeError
from bespoke.utils.atomic import write_error

LOCK_FILE = ".bespoke.lock"
_held: dict[Path, int] = {}  # folders this process holds -> nesting depth (the OS lock itself is per open file)
P = ParamSpec("P")
R = TypeVar("R")


def locks_output(param: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a job writing the folder given as its argument ``param``: the call holds :func:`output_lock`."""
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with output_lock(bound.arguments[param]):
                return fn(*args, **kwargs)

        return locked

    return decorate


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``directory``'s lock (creating the folder) for the block; yield the folder.

    Raises:
        BespokeError: another live process holds it, or the folder cannot be created or written.
    """
    directory = Path(directory)
    key = directory.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield directory
        finally:
            _held[key] -= 1
        return
    created = _first_missing(key)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a file of that name: opening the lock below says "Not a directory"
    except OSError as exc:
        raise write_error(directory, exc) from exc
    fd = _acquire(directory)
    _held[key] = 1
    try:
        yield directory
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            (directory / LOCK_FILE).unlink()  # while still locked: a waiting run then sees a new file
        os.close(fd)
        if created is not None:
            _remove_empty(key, created)


def _acquire(directory: Path) -> int:
    path = directory / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise write_error(directory, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise BespokeError(f"{directory} is in use by another bespoke run (pid {holder})",
                               "wait for it to finish or choose another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed the file between our open and our lock: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        path.unlink(missing_ok=True)
        os.close(fd)
        raise write_error(directory, exc) from exc
    return fd


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None: it exists)."""
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def _remove_empty(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents up to ``stop`` while they are empty (folders this lock created)."""
    while True:
        try:
            path.rmdir()
        except OSError:
            return
        if path == stop:
            return
        path = path.parent
