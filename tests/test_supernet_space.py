"""Search space, subnet configs and genomes: validation, determinism, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from bespoke.errors import BespokeError
from bespoke.supernet import SpaceOptions, SubnetConfig, build_supernet, default_space
from bespoke.supernet.genome import GenomeLayout
from bespoke.supernet.space import BlockConfig, SearchSpace
from bespoke.supernet.tiny import tiny_efficientnet
from bespoke.targets.measure import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest single-threaded (and do not fight other jobs for the cores)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def net():
    return build_supernet(tiny_efficientnet(), 32)


def test_default_space_is_anchored_at_the_pretrained_network(net) -> None:
    space = net.space
    assert space.resolutions == (24, 28, 32)
    assert space.stage_lengths == (1, 2, 3, 1)
    assert space.stages[2].blocks[0].kernels == (3, 5)  # a k5 block may shrink to 3
    assert space.stages[1].blocks[0].kernels == (3,)  # a k3 block cannot grow
    assert space.stages[0].blocks[0].expands == (1.0,)  # no expansion conv: width fixed
    assert space.stages[2].depths == (2, 3)
    largest = space.largest()
    assert largest.resolution == 32 and largest.depths == (1, 2, 3, 1)
    assert all(b.expand == 6.0 for s in largest.stages[1:] for b in s)


def test_space_options_are_strict() -> None:
    with pytest.raises(ValueError):
        SpaceOptions(kernal=(3,))  # typo
    opts = SpaceOptions(resolutions=(16, 32), expands=(2.0, 6.0), min_depth_fraction=1.0)
    space = default_space(build_supernet(tiny_efficientnet(), 32).spec, opts)
    assert space.resolutions == (16, 32)
    assert all(st.depths == (len(st.blocks),) for st in space.stages)
    with pytest.raises(BespokeError, match="largest"):
        default_space(build_supernet(tiny_efficientnet(), 32).spec, SpaceOptions(resolutions=(24, 40)))


def test_sampling_is_deterministic_by_seed(net) -> None:
    a = [net.space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [net.space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    assert [net.sample_active_subnet(rng1) for _ in range(5)] == [net.sample_active_subnet(rng2) for _ in range(5)]
    assert len({net.space.sample(np.random.default_rng(s)).key() for s in range(20)}) > 10


def test_config_json_round_trip_and_unknown_keys(net) -> None:
    cfg = net.space.sample(np.random.default_rng(1))
    assert SubnetConfig.from_dict(cfg.to_dict()) == cfg
    data = cfg.to_dict()
    with pytest.raises(BespokeError, match="exactly the keys"):
        SubnetConfig.from_dict({**data, "width": 1.0})
    bad = cfg.to_dict()
    bad["stages"][1][0]["kernal"] = 3
    with pytest.raises(BespokeError, match="kernel, expand"):
        SubnetConfig.from_dict(bad)
    with pytest.raises(BespokeError, match="integer"):
        SubnetConfig.from_dict({**data, "resolution": "32"})


@pytest.mark.parametrize("mutation, message", [
    (lambda c: SubnetConfig(40, c.stages), "resolution 40"),
    (lambda c: SubnetConfig(c.resolution, c.stages[:-1]), "stages"),
    (lambda c: SubnetConfig(c.resolution, (c.stages[0], c.stages[1], c.stages[2][:1], c.stages[3])), "depth 1"),
    (lambda c: SubnetConfig(c.resolution, (c.stages[0], (BlockConfig(5, 6.0),) * 2, *c.stages[2:])), "kernel 5"),
    (lambda c: SubnetConfig(c.resolution, (c.stages[0], (BlockConfig(3, 5.0),) * 2, *c.stages[2:])), "expand 5"),
])
def test_set_active_subnet_rejects_values_outside_the_space(net, mutation, message) -> None:
    with pytest.raises(BespokeError, match=message):
        net.set_active_subnet(mutation(net.space.largest()))
    with pytest.raises(BespokeError, match="SubnetConfig"):
        net.set_active_subnet(net.space.largest().to_dict())  # dicts must be parsed explicitly


def test_space_json_round_trip(net) -> None:
    assert SearchSpace.from_dict(net.space.to_dict()) == net.space


def test_genome_round_trip(net) -> None:
    layout = GenomeLayout(net.space)
    rng = np.random.default_rng(0)
    for _ in range(20):
        cfg = net.space.sample(rng)
        assert layout.decode(layout.encode(cfg)) == cfg
    genomes = layout.random(rng, 50)
    for g in genomes:
        net.space.check(layout.decode(g))  # every random genome is a valid subnet
