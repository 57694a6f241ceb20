"""Subnets as integer vectors (genomes), so the search, the predictor and the cost tables work on whole
populations with array operations instead of Python loops over configs.

Layout of one genome: ``[resolution index, depth index per stage, kernel index per block, expand index per block]``
over *all* block positions; genes of blocks beyond a stage's depth are carried along (and mutate freely) but do
not count. ``decode``/``encode`` convert to and from :class:`SubnetConfig`.
"""

from __future__ import annotations

import numpy as np

from bespoke.supernet.space import BlockConfig, SearchSpace, SubnetConfig


class GenomeLayout:
    """Index arithmetic of the genomes of one search space."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.blocks = [b for st in space.stages for b in st.blocks]
        self.n_stages, self.n_blocks = len(space.stages), len(self.blocks)
        self.depth_at, self.kernel_at, self.expand_at = 1, 1 + self.n_stages, 1 + self.n_stages + self.n_blocks
        self.sizes = np.array([len(space.resolutions), *(len(st.depths) for st in space.stages),
                               *(len(b.kernels) for b in self.blocks), *(len(b.expands) for b in self.blocks)])
        self.block_stage = np.array([s for s, st in enumerate(space.stages) for _ in st.blocks])
        self.block_pos = np.array([i for st in space.stages for i in range(len(st.blocks))])
        max_depths = max(len(st.depths) for st in space.stages)
        self.depth_values = np.array([[*st.depths, *([st.depths[-1]] * (max_depths - len(st.depths)))]
                                      for st in space.stages])

    @property
    def width(self) -> int:
        return len(self.sizes)

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` uniformly random genomes."""
        return (rng.random((n, self.width)) * self.sizes).astype(np.int64)

    def depths(self, genomes: np.ndarray) -> np.ndarray:
        """Depth of every stage, ``[n, stages]``."""
        idx = genomes[:, self.depth_at:self.kernel_at]
        return self.depth_values[np.arange(self.n_stages)[None, :], idx]

    def active(self, genomes: np.ndarray) -> np.ndarray:
        """Whether each block position is in use, ``[n, blocks]`` bool."""
        return self.block_pos[None, :] < self.depths(genomes)[:, self.block_stage]

    def kernels(self, genomes: np.ndarray) -> np.ndarray:
        return genomes[:, self.kernel_at:self.expand_at]

    def expands(self, genomes: np.ndarray) -> np.ndarray:
        return genomes[:, self.expand_at:]

    def decode(self, genome: np.ndarray) -> SubnetConfig:
        sp = self.space
        stages, b = [], 0
        for s, st in enumerate(sp.stages):
            depth = st.depths[int(genome[self.depth_at + s])]
            stages.append(tuple(BlockConfig(st.blocks[i].kernels[int(genome[self.kernel_at + b + i])],
                                            st.blocks[i].expands[int(genome[self.expand_at + b + i])])
                                for i in range(depth)))
            b += len(st.blocks)
        return SubnetConfig(sp.resolutions[int(genome[0])], tuple(stages))

    def encode(self, cfg: SubnetConfig) -> np.ndarray:
        """The genome of ``cfg`` (checked against the space; unused block genes set to 0)."""
        sp = self.space
        cfg = sp.check(cfg)
        g = np.zeros(self.width, dtype=np.int64)
        g[0] = sp.resolutions.index(cfg.resolution)
        b = 0
        for s, (st, blocks) in enumerate(zip(sp.stages, cfg.stages, strict=True)):
            g[self.depth_at + s] = st.depths.index(len(blocks))
            for i, bc in enumerate(blocks):
                g[self.kernel_at + b + i] = st.blocks[i].kernels.index(bc.kernel)
                g[self.expand_at + b + i] = st.blocks[i].expands.index(bc.expand)
            b += len(st.blocks)
        return g

    def encode_many(self, cfgs: list[SubnetConfig]) -> np.ndarray:
        return np.stack([self.encode(c) for c in cfgs]) if cfgs else np.zeros((0, self.width), dtype=np.int64)
