"""House building on Ray: a local 2-CPU cluster builds the same house as the local executor, bit for bit, even
when the worker running one group dies mid-task (Ray reruns it; only the driver writes the house)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bespoke.distill import DistillConfig
from bespoke.errors import BespokeError
from bespoke.house import build_house
from bespoke.house.build import GroupWork
from bespoke.targets import targets_from_dicts
from bespoke.utils import executor as executor_module
from bespoke.utils.executor import LocalExecutor, RayExecutor, make_executor
from tests.test_house_helpers import house_kwargs, one_thread

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One local cluster for the module (starting one takes ~10 s); the executor uses it and leaves it running."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _die_once(marker_dir: str, fn: Callable, shared: Any, work: GroupWork) -> Any:
    """Kill the worker process the first time group 0 runs (as a lost node or an OOM kill would)."""
    marker = Path(marker_dir) / f"died-{work.number}"
    if work.number == 0 and not marker.exists():
        marker.touch()
        os._exit(1)
    return fn(shared, work)


class DyingWorkerExecutor(RayExecutor):
    """The Ray executor whose first task for group 0 loses its worker process."""

    def __init__(self, marker_dir: Path) -> None:
        super().__init__(num_cpus=1, max_retries=2)
        self.marker_dir = marker_dir

    def map_unordered(self, fn: Callable, shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        return super().map_unordered(functools.partial(_die_once, str(self.marker_dir), fn), shared, items)


def _house(out: Path, **extra: Any):
    targets = targets_from_dicts([{"name": "params", "runtime": "params", "budget": "0.8x"}])
    return build_house(**house_kwargs(out=out, distill=DistillConfig(group_size=4), targets=targets), **extra)


def test_ray_house_equals_local_house_despite_a_dead_worker(ray_cluster, tmp_path) -> None:
    with one_thread():  # Ray tasks reserve 1 CPU and run 1 torch thread: same arithmetic, same bits
        local = _house(tmp_path / "local")
    remote = _house(tmp_path / "ray", executor=DyingWorkerExecutor(tmp_path))
    assert (tmp_path / "died-0").exists(), "group 0's first worker died and its task was rerun"
    assert ray_cluster.is_initialized(), "an executor leaves a cluster it did not start running"
    assert local.index.counts() == remote.index.counts() == {"done": 8}
    a, b = (json.loads((h.root / "index.json").read_text()) for h in (local, remote))
    assert a["entries"] == b["entries"], "same recipes, statuses, files and metrics"
    measured = {"max_rss_mb"}  # the peak memory of whichever process trained
    assert {k: v for k, v in a["memory"].items() if k not in measured} == \
        {k: v for k, v in b["memory"].items() if k not in measured}
    for entry in a["entries"]:
        assert (local.root / entry["file"]).read_bytes() == (remote.root / entry["file"]).read_bytes()
    (ta,), (tb,) = (list((h.root / "latency").glob("*.json")) for h in (local, remote))
    ja, jb = json.loads(ta.read_text()), json.loads(tb.read_text())
    assert {**ja, "cost_cpu_s": 0} == {**jb, "cost_cpu_s": 0}, "latency tables are measured by the driver"
    assert not list((tmp_path / "ray").rglob(".*.tmp")), "no half-written files"


def test_errors_raised_in_a_task_reach_the_caller_as_themselves(ray_cluster) -> None:
    with RayExecutor(num_cpus=1) as ex:
        results = sorted(ex.map_unordered(divmod, 7, [2, 3]))
        assert results == [(0, (3, 1)), (1, (2, 1))]
        with pytest.raises(BespokeError, match="bad group"):
            list(ex.map_unordered(_fail, None, [1]))


def _fail(shared: Any, item: int) -> None:
    raise BespokeError("bad group", "a hint that survives the trip")


def test_executor_choice_is_validated(monkeypatch) -> None:
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(BespokeError, match="unknown executor"):
        make_executor("dask")
    monkeypatch.setattr(executor_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BespokeError, match=r"pip install 'bespoke\[ray\]'"):
        make_executor("ray", address="auto")
