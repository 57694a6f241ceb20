"""Where independent units of work run: in this process (``local``) or as Ray tasks on a cluster (``ray``).

An executor maps ``fn(shared, item)`` over items and yields ``(position, result)`` as each finishes. ``shared`` is
the large read-only payload every item needs (weights, data); Ray stores it once in its object store. Results come
back to the caller, which alone writes files, so a crash never leaves half-written shared state. On Ray a task
whose worker process dies is rerun (``max_retries``); an exception raised by ``fn`` is not retried and reaches the
caller as itself. Ray is imported only when the ``ray`` executor is opened.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import torch

from bespoke.errors import BespokeError

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")
EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs ``fn(shared, item)`` for every item; a context manager (opening may connect to a cluster)."""

    name: str

    def __enter__(self) -> Executor: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def map_unordered(self, fn: Callable[[S, T], R], shared: S, items: Sequence[T]) -> Iterator[tuple[int, R]]: ...


class LocalExecutor:
    """Items run one after another in this process, in order."""

    name = "local"

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def map_unordered(self, fn: Callable[[S, T], R], shared: S, items: Sequence[T]) -> Iterator[tuple[int, R]]:
        for position, item in enumerate(items):
            yield position, fn(shared, item)


def _run_task(fn: Callable[[Any, Any], Any], shared: Any, item: Any, threads: int) -> Any:
    """Body of every Ray task: use as many torch threads as CPUs the task reserved, then run ``fn``."""
    torch.set_num_threads(threads)
    return fn(shared, item)


class RayExecutor:
    """Items run as Ray tasks, each reserving ``num_cpus`` CPUs (and ``num_gpus`` GPUs).

    Args:
        address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); ``None`` starts a local
            one on this machine. A Ray session already open in this process is used as it is.
        max_retries: reruns of a task whose worker process died (node lost, out-of-memory kill, ``kill -9``).
        num_cpus_local: CPUs of the local cluster started when ``address`` is ``None`` (default: all).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int = 1, num_gpus: float = 0.0,
                 max_retries: int = 3, num_cpus_local: int | None = None) -> None:
        if num_cpus < 1 or num_gpus < 0 or max_retries < 0:
            raise BespokeError(f"invalid Ray task resources: num_cpus={num_cpus}, num_gpus={num_gpus}, "
                               f"max_retries={max_retries}", "use num_cpus >= 1, num_gpus >= 0, max_retries >= 0")
        if importlib.util.find_spec("ray") is None:
            raise _missing_ray()
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.max_retries, self.num_cpus_local = max_retries, num_cpus_local
        self._ray: Any = None
        self._owns_session = False

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise _missing_ray() from None
        if not ray.is_initialized():
            # "local": a fresh cluster on this machine, never one a `ray start` left behind
            kwargs: dict[str, Any] = {"address": self.address or "local", "include_dashboard": False,
                                      "log_to_driver": True}
            if self.address is None and self.num_cpus_local is not None:
                kwargs["num_cpus"] = self.num_cpus_local
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BespokeError(f"cannot connect to the Ray cluster at {self.address!r} ({exc})",
                                   "start one with `ray start --head`, or pass --ray-address host:6379") from None
            self._owns_session = True
        self._ray = ray
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._owns_session and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._owns_session = None, False

    def map_unordered(self, fn: Callable[[S, T], R], shared: S, items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if self._ray is None:
            raise RuntimeError("open the executor first: `with RayExecutor(...) as ex:`")
        ray = self._ray
        if not items:
            return
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
                          retry_exceptions=False)(_run_task)
        shared_ref = ray.put(shared)
        pending = {task.remote(fn, shared_ref, item, self.num_cpus): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    position = pending.pop(ref)
                    yield position, self._result(ref)
        finally:  # the caller stopped early (error, interrupt): do not leave tasks running for nobody
            for ref in pending:
                ray.cancel(ref, force=True)

    def _result(self, ref: Any) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # fn raised: re-raise the original exception
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise cause from None
        except ray.exceptions.RayError as exc:  # worker or node lost more often than max_retries
            raise BespokeError(f"a Ray task failed after {self.max_retries} retries ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})",
                               "rerun the same command: finished work is kept") from None


def _missing_ray() -> BespokeError:
    return BespokeError("the ray executor needs Ray, which is not installed",
                        "pip install 'bespoke[ray]' (on every node), or use --executor local")


def make_executor(name: str, *, address: str | None = None, num_cpus: int = 1, num_gpus: float = 0.0,
                  max_retries: int = 3) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); Ray options are ignored by ``local``."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)
    raise BespokeError(f"unknown executor {name!r}", f"use one of {', '.join(EXECUTORS)}")
