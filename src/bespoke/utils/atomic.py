"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename.

A reader (or a resumed job) therefore sees either the old complete file or the new complete file, never half of one.
A process killed mid-write (SIGKILL, power loss) leaves its hidden temporary ``.<name>.<pid>-<random>.tmp``; the next
write of the same file removes such leftovers of dead processes, so a resumed job ends with no stray files. A write
that fails (disk full, read-only folder, a file where a folder should be) raises one ``BespokeError`` naming the
file, with the temporary file removed and the previous version of the file untouched. SIGINT and SIGTERM wait
until a write is complete: the CLI turns them into an exception, which must not surface inside a library's
writer (``torch.save`` would report it as a corrupt zip) or between the rename and its bookkeeping.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import signal
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from bespoke.errors import BespokeError

_TEMP_TAIL = re.compile(r"(?P<pid>\d+)-[a-z0-9_]+\.tmp")
_DEFERRED = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, on error it is removed.

    Raises:
        BespokeError: the file could not be written (any ``OSError``: no space left, permissions, ...).
    """
    with _signals_deferred():
        with _atomic_path(Path(path)) as tmp:
            yield tmp


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Block SIGINT/SIGTERM in this thread for the block; one that arrived meanwhile is delivered at its end."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    tmp_path = _temp_beside(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise


def _temp_beside(path: Path) -> Path:
    """A new empty temporary file in ``path``'s folder (created if missing), after removing dead writers' ones."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from exc
    return Path(tmp)


def replace_files(files: Mapping[str | os.PathLike[str], bytes], *, marker: str | os.PathLike[str] | None = None
                  ) -> None:
    """Replace several files together, so that a failed write leaves every one of them as it was.

    All contents are first written and flushed to temporary files beside their paths; any error there (disk full,
    read-only folder) removes the temporary files and touches no path. Only then are they renamed over their paths,
    in the order given. ``marker`` (a completion marker, usually the last of ``files``) is removed just before the
    renames, so that a process killed between two renames leaves an incomplete folder, never old and new files
    under the old marker.

    Raises:
        BespokeError: a file could not be written.
    """
    with _signals_deferred():
        _replace_files(files, marker)


def _replace_files(files: Mapping[str | os.PathLike[str], bytes], marker: str | os.PathLike[str] | None) -> None:
    staged: list[tuple[Path, Path]] = []
    current: Path | None = None
    try:
        for path, data in files.items():
            current = Path(path)
            tmp = _temp_beside(current)
            staged.append((tmp, current))
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if marker is not None:
            current = Path(marker)
            current.unlink(missing_ok=True)
        for tmp, path in staged:
            current = path
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and current is not None:
            raise write_error(current, exc) from exc
        raise


def write_error(path: Path, exc: OSError) -> BespokeError:
    """The one-line error for a failed write of ``path``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        hint = "free some space (or write elsewhere), then run the same command again: finished work is kept"
    else:
        hint = "check that the output folder is a writable directory"
    return BespokeError(f"cannot write {path}: {reason}", hint)


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files of ``path`` left by writers that died (no process of that id on this machine).

    Two processes writing one file at once is unsupported anyway; a live writer's temporary file is kept.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _TEMP_TAIL.fullmatch(entry.name[len(prefix):])
        if match and not _alive(int(match.group("pid"))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process's own writes clean up after themselves
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike[str],
                     metadata: dict[str, str] | None = None) -> None:
    """Atomically save a flat tensor dict as safetensors (tensors made contiguous, shared storage broken)."""
    write_bytes(path, safetensors_bytes(state, metadata))


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A flat tensor dict serialised as safetensors (tensors made contiguous, shared storage broken)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return st_save(flat, metadata=metadata)


def torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Atomically ``torch.save`` a checkpoint made only of tensors and plain containers.

    Such a file loads back with ``torch.load(weights_only=True)``: no pickled code can run. Serialised in memory
    first: torch's zip writer turns a write error on a full disk into an opaque ``RuntimeError``; written here, it
    is an ``OSError`` and one clear message.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
