"""Accuracy predictor: a small MLP over a one-hot architecture encoding (once-for-all's idea).

Trained once per supernet on a few hundred sampled subnets, each extracted, BN-recalibrated and measured on the
held-out (val) split; 20% of the samples are held out to report Kendall's tau and RMSE. Samples and the fitted
predictor are cached in ``SUPERNET/predictor/`` (the samples file grows as subnets are measured, so an
interrupted collection resumes, and each sample keeps its CPU-seconds, so the predictor's cost covers every
attempt).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bespoke.errors import BespokeError
from bespoke.supernet.genome import GenomeLayout
from bespoke.supernet.space import SearchSpace, SubnetConfig
from bespoke.train import cpu_seconds
from bespoke.utils.atomic import save_safetensors, write_json
from bespoke.utils.progress import make_progress
from bespoke.zoo import load_state_dict

SAMPLES_FILE, WEIGHTS_FILE, META_FILE = "samples.json", "predictor.safetensors", "predictor.json"


class ArchEncoder:
    """One-hot encoding of a subnet: per block [active] + kernel one-hot + expand one-hot, then resolution.

    The "active" bit exists only for blocks a stage may drop; one-hot groups only for choices with more than
    one value. Inactive blocks encode as all zeros. Works on genome arrays (whole populations at once).
    """

    def __init__(self, space: SearchSpace) -> None:
        self.layout = GenomeLayout(space)
        self.active_col: list[int] = []
        self.kernel_base: list[int] = []
        self.expand_base: list[int] = []
        width = 0
        for st in space.stages:
            for i, b in enumerate(st.blocks):
                self.active_col.append(width if i >= st.depths[0] else -1)
                width += int(i >= st.depths[0])
                self.kernel_base.append(width if len(b.kernels) > 1 else -1)
                width += len(b.kernels) if len(b.kernels) > 1 else 0
                self.expand_base.append(width if len(b.expands) > 1 else -1)
                width += len(b.expands) if len(b.expands) > 1 else 0
        self.res_base = width
        self.width = width + len(space.resolutions)

    def encode_genomes(self, genomes: np.ndarray) -> torch.Tensor:
        n = len(genomes)
        out = np.zeros((n, self.width), dtype=np.float32)
        rows = np.arange(n)
        active = self.layout.active(genomes).astype(np.float32)
        kernels, expands = self.layout.kernels(genomes), self.layout.expands(genomes)
        for b in range(self.layout.n_blocks):
            if self.active_col[b] >= 0:
                out[:, self.active_col[b]] = active[:, b]
            if self.kernel_base[b] >= 0:
                out[rows, self.kernel_base[b] + kernels[:, b]] = active[:, b]
            if self.expand_base[b] >= 0:
                out[rows, self.expand_base[b] + expands[:, b]] = active[:, b]
        out[rows, self.res_base + genomes[:, 0]] = 1.0
        return torch.from_numpy(out)

    def encode(self, cfgs: Sequence[SubnetConfig]) -> torch.Tensor:
        return self.encode_genomes(self.layout.encode_many(list(cfgs)))


class AccuracyPredictor(nn.Module):
    """MLP: encoding -> hidden -> hidden -> accuracy (trained on standardised targets)."""

    def __init__(self, in_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(-1) * self.y_std + self.y_mean


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists (ties handled; NaN when either list is constant)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), k=1)
    dx, dy = dx[iu], dy[iu]
    denom = np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


@dataclass
class PredictorFit:
    """A fitted predictor and how well it ranks held-out subnets."""

    model: AccuracyPredictor
    encoder: ArchEncoder
    metrics: dict[str, Any]

    @torch.no_grad()
    def predict(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        """Predicted top-1 (clipped to [0, 1]) of each config."""
        return self.model(self.encoder.encode(cfgs)).clamp(0.0, 1.0).numpy()

    @torch.no_grad()
    def predict_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """Predicted top-1 (clipped to [0, 1]) of each genome (a whole population at once)."""
        return self.model(self.encoder.encode_genomes(genomes)).clamp(0.0, 1.0).numpy()


def fit_predictor(space: SearchSpace, samples: Sequence[tuple[SubnetConfig, float]], *, seed: int = 0,
                  holdout: float = 0.2, epochs: int = 400, hidden: int = 128, lr: float = 3e-3) -> PredictorFit:
    """Train the MLP on ``1 - holdout`` of ``samples``; report Kendall tau and RMSE on the rest."""
    if len(samples) < 5:
        raise BespokeError(f"need at least 5 measured subnets to fit a predictor, got {len(samples)}",
                           "raise predictor_samples")
    encoder = ArchEncoder(space)
    x = encoder.encode([c for c, _ in samples])
    y = torch.tensor([a for _, a in samples], dtype=torch.float32)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
    n_test = max(2, round(holdout * len(samples)))
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    model = AccuracyPredictor(encoder.width, hidden)
    model.y_mean.fill_(float(y[train].mean()))
    model.y_std.fill_(max(float(y[train].std()), 1e-3))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        loss = (((model(x[train]) - y[train]) / model.y_std) ** 2).mean()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x[test])
    metrics = {"kendall_tau": round(kendall_tau(pred.tolist(), y[test].tolist()), 4),
               "rmse": round(float(((pred - y[test]) ** 2).mean().sqrt()), 5),
               "n_train": len(train), "n_test": n_test, "acc_min": round(float(y.min()), 4),
               "acc_max": round(float(y.max()), 4)}
    return PredictorFit(model, encoder, metrics)


def sample_configs(space: SearchSpace, n: int, seed: int) -> list[SubnetConfig]:
    """``n`` subnets to measure: the largest, the smallest, then uniform random ones (seeded)."""
    rng = np.random.default_rng([seed, 7919])
    cfgs = [space.largest(), space.smallest()]
    while len(cfgs) < n:
        cfgs.append(space.sample(rng))
    return cfgs[:n]


def read_samples(cache: Path) -> list[tuple[SubnetConfig, float]]:
    """The (config, accuracy) pairs stored in a samples file (empty when there is none)."""
    if not cache.is_file():
        return []
    return [(SubnetConfig.from_dict(row["config"]), float(row["accuracy"])) for row in json.loads(cache.read_text())]


def collect_samples(cfgs: Sequence[SubnetConfig], measure: Callable[[SubnetConfig], float], cache: Path
                    ) -> tuple[list[tuple[SubnetConfig, float]], float]:
    """Measured accuracy of every config; ``cache`` (JSON) keeps finished ones so a rerun continues.

    Each row records the CPU-seconds its measurement took, so an interrupted collection still reports its whole
    cost: returns the samples and the CPU-seconds earlier runs spent on the ones found in ``cache``.
    """
    done: dict[str, dict[str, Any]] = {}
    if cache.is_file():
        done = {row["key"]: row for row in json.loads(cache.read_text())}
    rows = [done[c.key()] for c in cfgs if c.key() in done]
    carried_cpu_s = sum(float(row.get("cpu_s", 0.0)) for row in rows)
    todo = [c for c in cfgs if c.key() not in done]
    with make_progress() as progress:
        task = progress.add_task("predictor samples", total=len(cfgs), completed=len(cfgs) - len(todo),
                                 postfix="")
        for cfg in todo:
            cpu0 = cpu_seconds()
            acc = measure(cfg)
            row = {"key": cfg.key(), "config": cfg.to_dict(), "accuracy": acc,
                   "cpu_s": round(cpu_seconds() - cpu0, 4)}
            done[cfg.key()] = row
            rows.append(row)
            write_json(cache, rows)  # seconds per sample against milliseconds per write: lose none on a stop
            progress.update(task, advance=1, postfix=f"acc {acc:.3f}")
    return [(c, float(done[c.key()]["accuracy"])) for c in cfgs], carried_cpu_s


def save_predictor(directory: Path, fit: PredictorFit, extra: dict[str, Any]) -> None:
    save_safetensors(fit.model.state_dict(), directory / WEIGHTS_FILE)
    write_json(directory / META_FILE, {"in_dim": fit.encoder.width, "hidden": fit.model.mlp[0].out_features,
                                       "metrics": fit.metrics, **extra})


def load_predictor(directory: Path, space: SearchSpace) -> PredictorFit | None:
    """The cached predictor of ``directory``, or ``None`` when there is none (or it fits another space)."""
    meta_path = directory / META_FILE
    if not meta_path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        return None
    meta = json.loads(meta_path.read_text())
    encoder = ArchEncoder(space)
    if meta.get("in_dim") != encoder.width:
        return None
    model = AccuracyPredictor(encoder.width, int(meta["hidden"]))
    model.load_state_dict(load_state_dict(directory / WEIGHTS_FILE))
    return PredictorFit(model.eval(), encoder, dict(meta["metrics"]))
